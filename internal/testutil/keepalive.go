//go:build linux

package testutil

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// KeepAlive reports whether c's socket sends TCP keepalive probes
// (SO_KEEPALIVE) and, when it does, its idle time before the first one
// (TCP_KEEPIDLE). c must be, or wrap, a TCP socket.
func KeepAlive(t testing.TB, c net.Conn) (on bool, idle time.Duration) {
	t.Helper()
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatalf("KeepAlive: %T has no socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ka, secs int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		if ka, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); gerr == nil {
			secs, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("KeepAlive: getsockopt: %v", gerr)
	}
	return ka != 0, time.Duration(secs) * time.Second
}
