package h2tunnel

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/testutil"
)

// TestDefaultDialKeepAlive checks that the pool's default dialer sends no
// TCP keepalive probes unless the request's context asks for them.
func TestDefaultDialKeepAlive(t *testing.T) {
	addr := testutil.Acceptor(t)
	p := NewPool(PoolConfig{})
	defer p.Close()

	c, err := p.cfg.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if on, _ := testutil.KeepAlive(t, c); on {
		t.Error("no keepalive asked for, but SO_KEEPALIVE is set")
	}

	ka := net.KeepAliveConfig{Enable: true, Idle: 42 * time.Second, Interval: -1, Count: -1}
	c2, err := p.cfg.Dial(WithDialKeepAlive(context.Background(), ka), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if on, idle := testutil.KeepAlive(t, c2); !on || idle != 42*time.Second {
		t.Errorf("keepalive asked for with 42s idle: on %v, idle %v", on, idle)
	}
}
