package httpproxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/testutil"
)

// TestUpstreamKeepAliveIsTheTargets checks that an upstream connection
// sends TCP keepalive probes only as its Target asks (tcp.tcpKeepalive).
func TestUpstreamKeepAliveIsTheTargets(t *testing.T) {
	addr := testutil.Acceptor(t)
	p := New(Config{})

	c, err := p.dialOne(context.Background(), addr, &Target{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if on, _ := testutil.KeepAlive(t, c); on {
		t.Error("target without keepalive: SO_KEEPALIVE is set")
	}

	ka := net.KeepAliveConfig{Enable: true, Idle: 7 * time.Second, Interval: -1, Count: -1}
	c2, err := p.dialOne(context.Background(), addr, &Target{KeepAlive: ka})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if on, idle := testutil.KeepAlive(t, c2); !on || idle != 7*time.Second {
		t.Errorf("target with 7s keepalive: on %v, idle %v", on, idle)
	}
}
