package intercept

import "errors"

// ErrNoOriginalDst means the kernel has no original destination for a
// connection: it was not tracked by netfilter (no nat rule saw it).
var ErrNoOriginalDst = errors.New("original destination: connection not tracked by netfilter")
