package inbound

import (
	"bufio"
	"context"
	"net"

	"github.com/wsmesh/wsmesh/internal/h2tunnel"
	"github.com/wsmesh/wsmesh/internal/httpproxy"
)

// h2Servers holds the HTTP/2 server of a listener in its two forms: one
// that advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and one that does not.
// Each new connection takes the form the configuration in force asks for
// (an EnvoyFilter with http2_protocol_options.allow_connect: true selecting
// this workload), so a change applies to new connections and never to open
// ones.
type h2Servers struct {
	in           *Inbound
	allow, plain *h2tunnel.Server
}

func (in *Inbound) newH2Server(proxy *httpproxy.Proxy, _ *router) *h2Servers {
	newServer := func(allow bool) *h2tunnel.Server {
		var srv *h2tunnel.Server
		srv = h2tunnel.NewServer(h2tunnel.ServerConfig{
			AllowConnect:         allow,
			Logger:               in.cfg.Logger,
			DrainTimeout:         in.cfg.DrainTimeout,
			MaxConcurrentStreams: in.cfg.MaxConcurrentStreams,
			Handler: func(st *h2tunnel.ServerStream) {
				// Not the stream's own context: it ends as soon as both
				// directions are done, which is how a relay ends normally,
				// not a cancellation. The stream's end reaches the relay
				// through its reads and writes.
				proxy.ServeH2Stream(context.Background(), st)
			},
		})
		return srv
	}
	return &h2Servers{in: in, allow: newServer(true), plain: newServer(false)}
}

func (h *h2Servers) serve(ctx context.Context, c net.Conn, br *bufio.Reader) {
	allowed, source := h.in.cfg.Snapshot().AllowConnect(h.in.cfg.Workload())
	srv := h.plain
	if allowed {
		srv = h.allow
	}
	h.in.cfg.Logger.Debug("HTTP/2 connection", "peer", c.RemoteAddr().String(), "allow_connect", allowed, "by", source)
	// GOAWAY goes out when the sidecar drains or the connection's context ends.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(h.in.cfg.Proxy.Drainer.Context(), cancel)
	defer stop()
	if err := srv.ServeConnBuffered(sctx, c, br); err != nil {
		h.in.cfg.Logger.Debug("HTTP/2 connection ended", "peer", c.RemoteAddr().String(), "cause", err)
	}
}

// drain sends GOAWAY on every HTTP/2 connection.
func (h *h2Servers) drain() {
	h.allow.Drain()
	h.plain.Drain()
}

func (h *h2Servers) close() {
	_ = h.allow.Close()
	_ = h.plain.Close()
}
