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

// TestAcceptedConnsKeepAlive checks that an inbound listener, which takes
// connections from other hosts, turns on TCP keepalive for them, and that
// an outbound one, which takes the local app's, does not.
func TestAcceptedConnsKeepAlive(t *testing.T) {
	for _, remote := range []bool{false, true} {
		ln, err := listenWithRetry("127.0.0.1:0", true, remote)
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
		if on, idle := testutil.KeepAlive(t, c); on != remote || remote && idle != 15*time.Second {
			t.Errorf("remote %v: keepalive %v after %v; want %v (15s)", remote, on, idle, remote)
		}
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

// TestDestinationRuleKeepAlive checks, from the kernel's socket table, the
// TCP keepalive of every connection on the guide's path, over HTTP/1.1 and
// HTTP/2: the client sidecar's connection to the server sidecar probes as
// the rule's tcp.tcpKeepalive says (after an hour), the server sidecar's
// end of it as Go's default (after 15 s), and neither sidecar's
// connection with its local app probes at all.
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
				var seen int
				var unsettled []string
				for _, s := range establishedSockets(t) {
					var want string // "" none, "hour", "15s"
					switch {
					case s.remote == inbound:
						want = "hour"
					case s.local == inbound:
						want = "15s"
					case s.remote == m.app || s.local == egress:
					default:
						continue
					}
					seen++
					got := ""
					if s.timer == 2 { // the keepalive timer
						got = "15s"
						if s.expires > 1000*time.Second {
							got = "hour"
						}
					}
					if got != want {
						unsettled = append(unsettled, fmt.Sprintf("%s -> %s: keepalive %q (timer %d, %v), want %q", s.local, s.remote, got, s.timer, s.expires, want))
					}
				}
				if seen < 4 {
					t.Fatalf("found %d connections of the path, want 4 or more", seen)
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
	timer         int           // /proc/net/tcp's timer_active: 2 is the keepalive timer
	expires       time.Duration // until the timer fires
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
		// "tr:tm->when": the timer, and its expiry in clock ticks (USER_HZ, 100 a second).
		tr, when, _ := strings.Cut(f[5], ":")
		timer, err1 := strconv.ParseInt(tr, 16, 32)
		ticks, err2 := strconv.ParseInt(when, 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("/proc/net/tcp: %q", line)
		}
		out = append(out, tcpSocket{local: procAddr(t, f[1]), remote: procAddr(t, f[2]), timer: int(timer), expires: time.Duration(ticks) * 10 * time.Millisecond})
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
