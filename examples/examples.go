// Package examples ships the example configurations of wsmesh (the guide's
// manifests plus the local-mode WorkloadEntry and Sidecar documents) inside
// the binary, so `wsmesh demo` runs from anywhere.
package examples

import "embed"

// FS holds http1/ and http2/.
//
//go:embed http1/*.yaml http2/*.yaml
var FS embed.FS
