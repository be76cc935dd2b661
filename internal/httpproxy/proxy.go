// Package httpproxy is the HTTP exchange engine that both sides of a sidecar
// share: it reads HTTP/1.1 requests from a downstream connection (or takes
// HTTP/2 streams from the inbound HTTP/2 server), asks a Router where each
// goes, forwards it over HTTP/1.1 or as a stream on a pooled HTTP/2
// connection, relays WebSocket upgrades as byte streams, and writes exactly
// one access-log record per request or WebSocket when it ends.
package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/h1"
	"github.com/wsmesh/wsmesh/internal/h2tunnel"
)

// Target is where a Router sends one request.
type Target struct {
	RouteName      string   // route_name in the access log
	Cluster        string   // upstream_cluster, e.g. "outbound|8080||websockets-server.default.svc.cluster.local"
	Service        string   // destination service host, for metrics
	Endpoints      []string // upstream addresses in the order to try them
	ConnectTimeout time.Duration
	// KeepAlive is the TCP keepalive of connections dialed for this target
	// (the outbound side's: a DestinationRule's tcp.tcpKeepalive, or Go's
	// default); the zero value, for the local app, sends no probes.
	KeepAlive net.KeepAliveConfig
	// H2 carries the request as a stream on a pooled HTTP/2 connection
	// (h2UpgradePolicy UPGRADE); WebSockets use RFC 8441 extended CONNECT.
	H2 bool
	// Done is called once the request or WebSocket has ended (for example to
	// release a least-request counter). May be nil.
	Done func()
}

// Router picks the Target of a request. It returns a *LocalReply error when
// the request cannot be routed (no route, no healthy upstream, ...).
type Router interface {
	Route(req *h1.Request, local net.Addr) (*Target, error)
}

// LocalReply is an answer the proxy gives itself instead of the upstream.
type LocalReply struct {
	Status  int
	Flag    accesslog.Flags
	Details string // response_code_details
	Body    string
}

func (e *LocalReply) Error() string { return e.Details }

// Config configures a Proxy.
type Config struct {
	// Reporter is "source" for the outbound side and "destination" for the
	// inbound side (Istio's reporter metric label).
	Reporter string
	Router   Router
	Access   *accesslog.Logger // nil: no access log
	// OnRecord, when set, is called with each finished record (metrics).
	OnRecord func(rec *accesslog.Record, t *Target)
	Logger   *slog.Logger
	Limits   h1.Limits
	// HeaderReadTimeout bounds the time from the first byte of a request
	// head to its end (slow clients). Default 10s.
	HeaderReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request in
	// flight after this long. Default 1h, as Envoy's HTTP connection manager.
	IdleTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an upstream response head
	// of a plain request. 0 means none (Istio's default route timeout).
	ResponseHeaderTimeout time.Duration
	// WebSocketIdleTimeout closes a WebSocket with no bytes either way
	// for this long. 0 (the default) never cuts an open WebSocket.
	WebSocketIdleTimeout time.Duration
	// ParkAfter is how long a quiet WebSocket keeps goroutines waiting
	// for its bytes before it parks and holds none (relay.Options); 0 is
	// relay.DefaultParkAfter, negative never parks.
	ParkAfter time.Duration
	// ObserveWebSocket enables the passive frame observer.
	ObserveWebSocket bool
	// H2 is the HTTP/2 connection pool used for Targets with H2 set.
	H2 *h2tunnel.Pool
	// H2Strict answers 503 instead of falling back to an HTTP/1.1 upgrade
	// when a peer does not allow extended CONNECT (Envoy's behaviour).
	H2Strict bool
	// OnWebSocketOpen, when set, is called when a WebSocket's relay starts;
	// its record reaches OnRecord when it ends.
	OnWebSocketOpen func()
	// OnFallback, when set, is called each time a WebSocket to addr falls
	// back to HTTP/1.1 because the peer did not allow extended CONNECT.
	OnFallback func(addr string)
	// Limiter bounds concurrent downstream connections. May be nil.
	Limiter *Limiter
	// Drainer winds the proxy down on shutdown. May be nil.
	Drainer *Drainer
	// Tracker lists open connections for the admin port. May be nil.
	Tracker *Tracker
	// Dial opens upstream TCP connections. Default: a net.Dialer with the
	// target's KeepAlive. When set, it is used as is.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Proxy forwards HTTP requests and WebSockets. It is safe for concurrent use.
type Proxy struct {
	cfg     Config
	pool    *h1Pool
	fallbk  sync.Map // endpoint address -> time the peer was seen without extended CONNECT
	closing chan struct{}
	once    sync.Once
	relays  sync.WaitGroup // WebSocket relays under way
}

// New returns a Proxy.
func New(cfg Config) *Proxy {
	if cfg.HeaderReadTimeout <= 0 {
		cfg.HeaderReadTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Proxy{cfg: cfg, pool: newH1Pool(64, 90*time.Second), closing: make(chan struct{})}
}

// Close waits for the WebSocket relays under way to end (the caller ends
// them: a drain, or the connections' context), then releases idle
// upstream connections.
func (p *Proxy) Close() {
	p.relays.Wait()
	p.once.Do(func() { close(p.closing) })
	p.pool.closeAll()
}

var bufioPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

func getReader(c net.Conn) *bufio.Reader {
	br := bufioPool.Get().(*bufio.Reader)
	br.Reset(c)
	return br
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	bufioPool.Put(br)
}

// headBufs holds buffers for the HTTP/1.1 heads the proxy writes.
var headBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

// writeHead writes head, as appendHead formats it, to w in one Write from
// a pooled buffer (w must not keep the slice: a net.Conn does not).
func writeHead[T any](w io.Writer, appendHead func([]byte, T) []byte, head T) (int, error) {
	bp := headBufs.Get().(*[]byte)
	b := appendHead((*bp)[:0], head)
	n, err := w.Write(b)
	if cap(b) <= 16<<10 { // an outsize head's buffer is not kept
		*bp = b[:0]
		headBufs.Put(bp)
	}
	return n, err
}

// errClosed is returned when a connection ended between requests.
var errClosed = errors.New("connection closed")

// finish completes a record and hands it to the access log and OnRecord.
func (p *Proxy) finish(rec *accesslog.Record, t *Target) {
	rec.Duration = time.Since(rec.StartTime)
	if rec.ResponseFlags == "" {
		rec.ResponseFlags = "-"
	}
	if p.cfg.Access != nil {
		p.cfg.Access.Log(rec)
	}
	if p.cfg.OnRecord != nil {
		p.cfg.OnRecord(rec, t)
	}
}
