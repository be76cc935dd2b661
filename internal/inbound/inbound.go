// Package inbound is the sidecar side that takes connections from peer
// sidecars (and other clients) and hands them to the local app: it detects
// HTTP/1.1 or the HTTP/2 preface on the same port, accepts RFC 8441
// extended CONNECT only where an EnvoyFilter allows it, and converts each
// tunnelled WebSocket back to an HTTP/1.1 Upgrade for the app.
package inbound

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/wsmesh/wsmesh/internal/config"
	"github.com/wsmesh/wsmesh/internal/detect"
	"github.com/wsmesh/wsmesh/internal/h1"
	"github.com/wsmesh/wsmesh/internal/httpproxy"
	"github.com/wsmesh/wsmesh/internal/listener"
	"github.com/wsmesh/wsmesh/internal/relay"
)

// Config configures the inbound side of one sidecar.
type Config struct {
	Snapshot func() *config.Snapshot
	Workload func() *config.Workload
	Proxy    httpproxy.Config
	Logger   *slog.Logger
	// DetectTimeout is how long to wait for a client's first bytes.
	// Default 5s, and never longer than Proxy.HeaderReadTimeout.
	DetectTimeout time.Duration
	// ConnectTimeout bounds connecting to the local app. Default 10s.
	ConnectTimeout time.Duration
	// MaxConcurrentStreams is advertised to HTTP/2 peers and enforced per
	// connection (REFUSED_STREAM beyond); 0 means h2tunnel's default.
	MaxConcurrentStreams uint32
	// DrainTimeout bounds how long an HTTP/2 connection that was sent
	// GOAWAY waits for its open streams. Default 1 minute.
	DrainTimeout time.Duration
}

// Inbound serves the workload's inbound listeners.
type Inbound struct {
	cfg Config
}

// New returns an Inbound.
func New(cfg Config) *Inbound {
	cfg.Logger, cfg.DetectTimeout = cfg.Proxy.SideDefaults(cfg.Logger, cfg.DetectTimeout)
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = time.Minute
	}
	cfg.Proxy.Reporter = "destination"
	return &Inbound{cfg: cfg}
}

// Serve accepts peers' connections on ln for inbound listener l until ctx
// ends, then waits for the connections' handlers; open connections end when
// connCtx does.
func (in *Inbound) Serve(ctx, connCtx context.Context, ln net.Listener, l config.Listener) error {
	r := &router{in: in, l: l}
	pcfg := in.cfg.Proxy
	pcfg.Router = r
	proxy := httpproxy.New(pcfg)
	defer proxy.Close()
	h2 := in.newH2Server(proxy, r)
	defer h2.close()
	// Cutting the connections (the end of a drain) ends HTTP/2 ones too.
	stopH2 := context.AfterFunc(connCtx, h2.close)
	defer stopH2()
	return listener.Serve(ctx, connCtx, ln, func(cctx context.Context, c net.Conn) {
		br := bufio.NewReaderSize(c, 4096)
		proto, err := detect.Detect(c, br, in.cfg.DetectTimeout)
		if err != nil {
			c.Close()
			return
		}
		switch proto {
		case detect.HTTP1:
			proxy.ServeH1(cctx, c, br)
		case detect.HTTP2:
			h2.serve(cctx, c, br)
		default:
			in.serveTCP(cctx, c, br, r)
		}
	}, in.cfg.Logger)
}

// serveTCP hands opaque bytes to the app unchanged.
func (in *Inbound) serveTCP(ctx context.Context, c net.Conn, br *bufio.Reader, r *router) {
	in.relayToApp(ctx, c, br, r.target().Endpoints[0])
}

func (in *Inbound) relayToApp(ctx context.Context, c net.Conn, br *bufio.Reader, app string) {
	defer c.Close()
	// The app is local: the kernel reports its end itself, no keepalive.
	d := net.Dialer{Timeout: in.cfg.ConnectTimeout, KeepAlive: -1}
	up, err := d.DialContext(ctx, "tcp", app)
	if err != nil {
		in.cfg.Logger.Warn("inbound TCP: local app unreachable", "app", app, "cause", err)
		return
	}
	pre := make([]byte, br.Buffered())
	_, _ = br.Read(pre)
	relay.Relay(ctx, c, up, relay.Prefetched{Down: pre}, relay.Options{})
}

// router sends every inbound request to the local app.
type router struct {
	in *Inbound
	l  config.Listener
}

func (r *router) target() *httpproxy.Target {
	app := r.l.DefaultEndpoint
	if addr, _, ok := r.in.cfg.Snapshot().InboundTarget(r.in.cfg.Workload(), r.l.Port); ok {
		app = addr // the configuration in force, with 0.0.0.0 resolved to the workload's address
	}
	port := 0
	if _, p, err := net.SplitHostPort(app); err == nil {
		port, _ = strconv.Atoi(p)
	}
	return &httpproxy.Target{
		RouteName:      "default",
		Cluster:        fmt.Sprintf("inbound|%d||", port),
		Endpoints:      []string{app},
		ConnectTimeout: r.in.cfg.ConnectTimeout,
	}
}

func (r *router) Route(*h1.Request, net.Addr) (*httpproxy.Target, error) { return r.target(), nil }

// ServeTransparent accepts peers' connections that iptables redirected to
// ln (see package intercept) and hands each to the local app on the port it
// was addressed to: the ingress defaultEndpoint a Sidecar declares for that
// port, else 127.0.0.1:PORT ("inbound|PORT||", as Istio names it).
func (in *Inbound) ServeTransparent(ctx, connCtx context.Context, ln net.Listener) error {
	r := &transparentRouter{in: in}
	pcfg := in.cfg.Proxy
	pcfg.Router = r
	proxy := httpproxy.New(pcfg)
	defer proxy.Close()
	h2 := in.newH2Server(proxy, nil)
	defer h2.close()
	stopH2 := context.AfterFunc(connCtx, h2.close)
	defer stopH2()
	return listener.Serve(ctx, connCtx, ln, func(cctx context.Context, c net.Conn) {
		oc, br, proto, ok := listener.Intercepted(c, in.cfg.DetectTimeout, in.cfg.Logger.With("side", "inbound"))
		if !ok {
			return
		}
		switch proto {
		case detect.HTTP1:
			proxy.ServeH1(cctx, oc, br)
		case detect.HTTP2:
			h2.serve(cctx, oc, br)
		default:
			in.relayToApp(cctx, oc, br, r.target(oc.LocalAddr()).Endpoints[0])
		}
	}, in.cfg.Logger)
}

// transparentRouter sends a request to the app port it was addressed to.
type transparentRouter struct{ in *Inbound }

func (r *transparentRouter) target(local net.Addr) *httpproxy.Target {
	port := 0
	if ta, ok := local.(*net.TCPAddr); ok {
		port = ta.Port
	}
	app := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if addr, _, ok := r.in.cfg.Snapshot().InboundTarget(r.in.cfg.Workload(), port); ok {
		app = addr
	}
	return &httpproxy.Target{
		RouteName:      "default",
		Cluster:        fmt.Sprintf("inbound|%d||", port),
		Endpoints:      []string{app},
		ConnectTimeout: r.in.cfg.ConnectTimeout,
	}
}

func (r *transparentRouter) Route(_ *h1.Request, local net.Addr) (*httpproxy.Target, error) {
	return r.target(local), nil
}
