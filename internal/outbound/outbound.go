// Package outbound is the sidecar side that takes the local app's
// connections: it detects the protocol, routes each HTTP request or
// WebSocket by listener port and Host/:authority to a service cluster, picks
// an endpoint, and forwards over HTTP/1.1 or, where the DestinationRule says
// UPGRADE, as a stream on a pooled HTTP/2 connection to the peer sidecar.
package outbound

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/balancer"
	"github.com/wsmesh/wsmesh/internal/config"
	"github.com/wsmesh/wsmesh/internal/detect"
	"github.com/wsmesh/wsmesh/internal/h1"
	"github.com/wsmesh/wsmesh/internal/httpproxy"
	"github.com/wsmesh/wsmesh/internal/listener"
	"github.com/wsmesh/wsmesh/internal/relay"
)

// Config configures the outbound side of one sidecar.
type Config struct {
	// Snapshot returns the configuration in force; it is called per request
	// so a reload applies to new requests without touching open ones.
	Snapshot func() *config.Snapshot
	// Workload returns the identity of the app this sidecar serves.
	Workload func() *config.Workload
	// Proxy is the engine settings; its Router is set per listener.
	Proxy  httpproxy.Config
	Logger *slog.Logger
	// DetectTimeout is how long to wait for a client's first bytes.
	// Default 5s, and never longer than Proxy.HeaderReadTimeout.
	DetectTimeout time.Duration
}

// Outbound serves the app's outbound listeners.
type Outbound struct {
	cfg Config
	lb  *balancer.Balancer
}

// New returns an Outbound.
func New(cfg Config) *Outbound {
	cfg.Logger, cfg.DetectTimeout = cfg.Proxy.SideDefaults(cfg.Logger, cfg.DetectTimeout)
	cfg.Proxy.Reporter = "source"
	return &Outbound{cfg: cfg, lb: balancer.New()}
}

// Serve accepts the app's connections on ln for listener l until ctx ends,
// then waits for the connections' handlers; open connections end when
// connCtx does.
func (o *Outbound) Serve(ctx, connCtx context.Context, ln net.Listener, l config.Listener) error {
	r := &router{o: o, port: l.Port}
	pcfg := o.cfg.Proxy
	pcfg.Router = r
	proxy := httpproxy.New(pcfg)
	defer proxy.Close()
	return listener.Serve(ctx, connCtx, ln, func(cctx context.Context, c net.Conn) {
		br := bufio.NewReaderSize(c, 4096)
		proto, err := detect.Detect(c, br, o.cfg.DetectTimeout)
		if err != nil {
			c.Close()
			return
		}
		switch {
		case proto == detect.HTTP1, l.Protocol.IsHTTP() && br.Buffered() == 0:
			// (A client silent past detection on an HTTP port is held to
			// HTTP's own idle and header timeouts.)
			proxy.ServeH1(cctx, c, br)
		default:
			o.serveTCP(cctx, c, br, l, proto, proxy)
		}
	}, o.cfg.Logger)
}

// serveTCP relays a connection that is not HTTP/1.1 to the one service
// that exposes the listener's port, as opaque bytes. proxy is the
// listener's HTTP engine, which answers bytes that are no HTTP request on an
// HTTP port.
func (o *Outbound) serveTCP(ctx context.Context, c net.Conn, br *bufio.Reader, l config.Listener, proto detect.Protocol, proxy *httpproxy.Proxy) {
	cl, err := o.cfg.Snapshot().RouteFrom(o.cfg.Workload(), l.Port, "")
	if (l.Protocol.IsHTTP() || (err == nil && cl.Protocol.IsHTTP())) && proto == detect.Opaque && br.Buffered() > 0 {
		// Bytes that are no HTTP request on an HTTP port: say so, as an
		// HTTP server would, rather than close without a word.
		proxy.RejectConn(c, &httpproxy.LocalReply{Status: 400, Flag: accesslog.DownstreamProtocolError, Details: "http1.codec_error",
			Body: "not an HTTP/1.1 request on an HTTP port"})
		c.Close()
		return
	}
	if err != nil || (cl.Protocol.IsHTTP() && proto != detect.TLS) {
		rec := o.tcpRecord(c)
		rec.ResponseFlags = accesslog.NoRouteFound.String()
		rec.ConnectionTerminationDetails = fmt.Sprintf("no TCP route for %s on port %d", proto, l.Port)
		o.cfg.Logger.Debug("no TCP route", "port", l.Port, "protocol", proto.String(), "cause", err)
		c.Close()
		o.finishTCP(rec)
		return
	}
	o.relayTCP(ctx, c, br, cl.Name, endpointAddrs(cl), cl.Policy)
}

func (o *Outbound) tcpRecord(c net.Conn) *accesslog.Record {
	return &accesslog.Record{
		StartTime: time.Now(), DownstreamLocalAddress: c.LocalAddr().String(), DownstreamRemoteAddress: c.RemoteAddr().String(),
		UpstreamServiceTime: -1,
	}
}

func (o *Outbound) finishTCP(rec *accesslog.Record) {
	rec.Duration = time.Since(rec.StartTime)
	if rec.ResponseFlags == "" {
		rec.ResponseFlags = "-"
	}
	if o.cfg.Proxy.Access != nil {
		o.cfg.Proxy.Access.Log(rec)
	}
	if o.cfg.Proxy.OnRecord != nil {
		o.cfg.Proxy.OnRecord(rec, nil)
	}
}

// relayTCP connects to the first endpoint that accepts and relays bytes
// both ways, writing one access-log line at the end.
func (o *Outbound) relayTCP(ctx context.Context, c net.Conn, br *bufio.Reader, cluster string, endpoints []string, policy config.TrafficPolicy) {
	defer c.Close()
	rec := o.tcpRecord(c)
	rec.UpstreamCluster = cluster
	eps, done := o.lb.Order(cluster, policy.LoadBalancer, endpoints)
	defer done()
	timeout := policy.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	var up net.Conn
	var err error
	for _, addr := range eps {
		d := net.Dialer{Timeout: timeout, KeepAlive: -1, KeepAliveConfig: policy.TCPKeepalive.KeepAliveConfig()}
		if up, err = d.DialContext(ctx, "tcp", addr); err == nil {
			rec.UpstreamHost = addr
			break
		}
		rec.UpstreamTransportFailureReason = err.Error()
	}
	if up == nil {
		if len(eps) == 0 {
			rec.ResponseFlags = accesslog.NoHealthyUpstream.String()
		} else {
			rec.ResponseFlags = accesslog.UpstreamConnectionFailure.String()
		}
		o.finishTCP(rec)
		return
	}
	rec.UpstreamLocalAddress = up.LocalAddr().String()
	pre := make([]byte, br.Buffered())
	_, _ = br.Read(pre)
	res := relay.Relay(ctx, c, up, relay.Prefetched{Down: pre}, relay.Options{IdleTimeout: policy.IdleTimeout})
	rec.BytesReceived, rec.BytesSent = res.BytesDownToUp, res.BytesUpToDown
	if res.Err != nil {
		rec.ConnectionTerminationDetails = res.Err.Error()
	}
	o.finishTCP(rec)
}

func endpointAddrs(cl *config.Cluster) []string {
	out := make([]string, len(cl.Endpoints))
	for i, e := range cl.Endpoints {
		out[i] = e.Address
	}
	return out
}

// router routes outbound requests of one listener port.
type router struct {
	o    *Outbound
	port int
}

func (r *router) Route(req *h1.Request, _ net.Addr) (*httpproxy.Target, error) {
	snap := r.o.cfg.Snapshot()
	authority := req.Headers.Get("Host")
	cl, err := snap.RouteFrom(r.o.cfg.Workload(), r.port, authority)
	if err != nil {
		if errors.Is(err, config.ErrNoRoute) {
			return nil, &httpproxy.LocalReply{Status: 404, Flag: accesslog.NoRouteFound, Details: "route_not_found", Body: err.Error()}
		}
		return nil, &httpproxy.LocalReply{Status: 503, Flag: accesslog.NoClusterFound, Details: "cluster_not_found", Body: err.Error()}
	}
	return r.o.target(cl), nil
}

// target is where requests to cluster cl go now.
func (o *Outbound) target(cl *config.Cluster) *httpproxy.Target {
	eps, done := o.lb.Order(cl.Name, cl.Policy.LoadBalancer, endpointAddrs(cl))
	return &httpproxy.Target{
		RouteName:      "default",
		Cluster:        cl.Name,
		Service:        cl.Host,
		Endpoints:      eps,
		ConnectTimeout: cl.Policy.ConnectTimeout,
		KeepAlive:      cl.Policy.TCPKeepalive.KeepAliveConfig(),
		H2:             cl.Policy.H2Upgrade, // resolved by config: the mesh default for HTTP ports, a DestinationRule's UPGRADE for any
		Done:           done,
	}
}

// ServeTransparent accepts the app's connections that iptables redirected
// to ln (see package intercept). Each is routed by its original
// destination: a Service's cluster IP and port (HTTP is then proxied per
// request, anything else relayed to the service's endpoints), or, when no
// service has that address, passed through unchanged to the original
// destination ("PassthroughCluster", as Istio calls it).
func (o *Outbound) ServeTransparent(ctx, connCtx context.Context, ln net.Listener) error {
	pcfg := o.cfg.Proxy
	pcfg.Router = &transparentRouter{o: o}
	proxy := httpproxy.New(pcfg)
	defer proxy.Close()
	return listener.Serve(ctx, connCtx, ln, func(cctx context.Context, c net.Conn) {
		oc, br, proto, ok := listener.Intercepted(c, o.cfg.DetectTimeout, o.cfg.Logger.With("side", "outbound"))
		if !ok {
			return
		}
		dst := oc.Original.(*net.TCPAddr).AddrPort()
		cl, cerr := o.cfg.Snapshot().ClusterForAddress(dst.Addr(), int(dst.Port()))
		switch {
		case proto == detect.HTTP1 && (cerr != nil || cl.Protocol.IsHTTP() || cl.Protocol == config.ProtocolAuto):
			// HTTP is routed per request: by address, else by Host name,
			// else passed through to the original destination.
			proxy.ServeH1(cctx, oc, br)
		case cerr == nil:
			o.relayTCP(cctx, oc, br, cl.Name, endpointAddrs(cl), cl.Policy)
		default:
			o.relayTCP(cctx, oc, br, "PassthroughCluster", []string{dst.String()}, config.TrafficPolicy{})
		}
	}, o.cfg.Logger)
}

// transparentRouter routes by the original destination (the request's
// local address): a service's cluster IP and port.
type transparentRouter struct{ o *Outbound }

func (r *transparentRouter) Route(req *h1.Request, local net.Addr) (*httpproxy.Target, error) {
	ta, ok := local.(*net.TCPAddr)
	if !ok {
		return nil, &httpproxy.LocalReply{Status: 404, Flag: accesslog.NoRouteFound, Details: "route_not_found", Body: "no original destination"}
	}
	dst := ta.AddrPort()
	snap := r.o.cfg.Snapshot()
	cl, err := snap.ClusterForAddress(dst.Addr().Unmap(), int(dst.Port()))
	if err != nil {
		// An address no service has (no cluster IP in the configuration):
		// the Host names the service, as Envoy's HTTP routes match it.
		host := req.Headers.Get("Host")
		if h, _, serr := net.SplitHostPort(host); serr == nil {
			host = h
		}
		if host != "" && net.ParseIP(host) == nil {
			cl, err = snap.RouteFrom(r.o.cfg.Workload(), int(dst.Port()), req.Headers.Get("Host"))
		}
	}
	if err != nil {
		// Istio's outboundTrafficPolicy ALLOW_ANY: on to where the app
		// was going.
		return &httpproxy.Target{RouteName: "allow_any", Cluster: "PassthroughCluster", Endpoints: []string{dst.String()}}, nil
	}
	t := r.o.target(cl)
	if len(t.Endpoints) == 0 {
		// No endpoints known here: let the original destination (a
		// cluster IP that kube-proxy translates) pick the pod, as Envoy's
		// ORIGINAL_DST does.
		t.Done()
		t.Endpoints, t.Done = []string{dst.String()}, nil
	}
	return t, nil
}
