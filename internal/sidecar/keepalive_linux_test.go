package sidecar

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/testutil"
)

// TestAcceptedConnsHaveNoKeepAlive checks that the sidecar's listeners do
// not turn on TCP keepalive for the connections they accept (as Envoy).
func TestAcceptedConnsHaveNoKeepAlive(t *testing.T) {
	ln, err := listenWithRetry("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if on, _ := testutil.KeepAlive(t, c); on {
		t.Error("an accepted connection has SO_KEEPALIVE set")
	}
}

// keepaliveRule is the guide's DestinationRule with tcp.tcpKeepalive.
const keepaliveRule = `apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: websockets-server}
spec:
  host: websockets-server
  trafficPolicy:
    connectionPool:
      tcp:
        tcpKeepalive: {time: 3600s, interval: 60s}
      http:
        h2UpgradePolicy: %s
`

// TestDestinationRuleKeepAlive checks, from the kernel's socket table, that
// tcp.tcpKeepalive turns on keepalive for the client sidecar's connection
// to the server sidecar, over HTTP/1.1 and over HTTP/2, and for no other
// connection of the path.
func TestDestinationRuleKeepAlive(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name, policy := "http1", "DO_NOT_UPGRADE"
		if h2 {
			name, policy = "http2", "UPGRADE"
		}
		t.Run(name, func(t *testing.T) {
			m := startMesh(t, meshOpts{h2: h2, allowConnect: h2, rule: fmt.Sprintf(keepaliveRule, policy)})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := m.dial(t, ctx)
			defer c.CloseNow()
			echoOnce(t, ctx, c, "hello")

			inbound := fmt.Sprintf("127.0.0.1:%d", m.inPort)
			egress := fmt.Sprintf("127.0.0.1:%d", m.egress)
			// A socket with bytes in flight shows its retransmission timer
			// instead of the keepalive one: look again until it settles.
			deadline := time.Now().Add(5 * time.Second)
			for {
				var toPeer, others int
				var unsettled []string
				for _, s := range establishedSockets(t) {
					switch {
					case s.remote == inbound:
						toPeer++
						if s.timer != 2 {
							unsettled = append(unsettled, fmt.Sprintf("client sidecar %s -> server sidecar: timer %d, want 2 (keepalive)", s.local, s.timer))
						}
					case s.remote == m.app || s.local == inbound || s.local == egress:
						others++
						if s.timer == 2 {
							t.Fatalf("%s -> %s: keepalive is on; only the rule's upstream connection should have it", s.local, s.remote)
						}
					}
				}
				if toPeer == 0 || others < 3 {
					t.Fatalf("found %d connections to the server sidecar and %d others of the path; want 1+ and 3+", toPeer, others)
				}
				if len(unsettled) == 0 {
					return
				}
				if time.Now().After(deadline) {
					t.Fatal(strings.Join(unsettled, "; "))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

type tcpSocket struct {
	local, remote string
	timer         int // /proc/net/tcp's timer_active: 2 is the keepalive timer
}

// establishedSockets reads the IPv4 TCP connections of this network
// namespace from /proc/net/tcp.
func establishedSockets(t *testing.T) []tcpSocket {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	var out []tcpSocket
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 6 || f[3] != "01" { // 01: ESTABLISHED
			continue
		}
		timer, err := strconv.ParseInt(strings.SplitN(f[5], ":", 2)[0], 16, 32)
		if err != nil {
			t.Fatalf("/proc/net/tcp: %q: %v", line, err)
		}
		out = append(out, tcpSocket{local: procAddr(t, f[1]), remote: procAddr(t, f[2]), timer: int(timer)})
	}
	return out
}

// procAddr turns /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080".
func procAddr(t *testing.T, s string) string {
	t.Helper()
	ip, port, ok := strings.Cut(s, ":")
	a, err1 := strconv.ParseUint(ip, 16, 32)
	p, err2 := strconv.ParseUint(port, 16, 16)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("/proc/net/tcp address %q", s)
	}
	return fmt.Sprintf("%d.%d.%d.%d:%d", byte(a), byte(a>>8), byte(a>>16), byte(a>>24), p)
}
