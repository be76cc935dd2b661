// Package testutil holds helpers shared by wsmesh's tests.
package testutil

import (
	"net"
	"sync"
	"testing"
)

var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{}
)

// FreePort returns a loopback TCP port that nothing listens on. The kernel
// may hand a released port out again, so FreePort never returns the same
// port twice in one test binary: two listeners of a test cannot collide.
func FreePort(t testing.TB) int {
	t.Helper()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		handedOutMu.Lock()
		seen := handedOut[port]
		handedOut[port] = true
		handedOutMu.Unlock()
		if !seen {
			return port
		}
	}
}
