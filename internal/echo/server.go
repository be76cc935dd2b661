package echo

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/wsmesh/wsmesh/internal/sockio"
)

// DefaultMaxMessageSize is the largest message, in bytes after
// decompression, that a Server echoes when Config.MaxMessageSize is zero.
const DefaultMaxMessageSize = 16 << 20

// HealthPath is the path answered with 200 for liveness and readiness
// probes. Every other path is the WebSocket endpoint.
const HealthPath = "/healthz"

// Config configures a Server. The zero value is usable.
type Config struct {
	// Subprotocols are the WebSocket subprotocols the server supports. The
	// first subprotocol in the client's Sec-WebSocket-Protocol list that is
	// also in this list is selected; when there is none the connection
	// proceeds without a subprotocol.
	Subprotocols []string

	// MaxMessageSize is the largest message the server reads. A larger
	// message closes the connection with 1009 (Message Too Big). Zero means
	// DefaultMaxMessageSize; a negative value means no limit.
	MaxMessageSize int64

	// DisableCompression turns off permessage-deflate negotiation. When it
	// is false the extension is accepted whenever a client offers it.
	DisableCompression bool

	// Logger receives one line per connection event, naming its cause. Nil
	// means a text logger writing to standard error.
	Logger *slog.Logger
}

// Server is the echo server. Create it with New, then call Serve for each
// listener (or mount it as an http.Handler) and Shutdown to stop it.
type Server struct {
	cfg     Config
	log     *slog.Logger
	httpSrv *http.Server

	// connCtx is the parent of every connection's context; Shutdown cancels
	// it when its own context expires, which tears down connections that did
	// not finish the close handshake in time.
	connCtx   context.Context
	forceStop context.CancelFunc

	mu      sync.Mutex
	closing bool
	conns   map[*echoConn]struct{}
	wg      sync.WaitGroup // one count per WebSocket handler and per going-away close
}

// New returns a Server configured by cfg.
func New(cfg Config) *Server {
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	cfg.Subprotocols = append([]string(nil), cfg.Subprotocols...)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	s := &Server{
		cfg:   cfg,
		log:   logger,
		conns: make(map[*echoConn]struct{}),
	}
	s.connCtx, s.forceStop = context.WithCancel(context.Background())
	s.httpSrv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s
}

// Serve accepts HTTP/1.1 connections on l until Shutdown is called. It may
// be called for several listeners at once. Like net/http, it always returns
// a non-nil error, http.ErrServerClosed after Shutdown. TCP connections
// are read and written with raw system calls (sockio.Listener), which
// keeps the runtime's monitor thread asleep under load.
func (s *Server) Serve(l net.Listener) error {
	return s.httpSrv.Serve(sockio.Listener{Listener: l})
}

// ServeHTTP routes a request: HealthPath to the health check, every other
// path to the WebSocket echo endpoint.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == HealthPath {
		s.serveHealth(w, r)
		return
	}
	s.serveWebSocket(w, r)
}

// Shutdown stops accepting connections, sends every open WebSocket a close
// frame with 1001 (Going Away) and waits for the close handshakes and for
// every connection goroutine to finish. If ctx ends first, the remaining
// connections are closed without a handshake, Shutdown waits for their
// goroutines to return and then returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	open := make([]*echoConn, 0, len(s.conns))
	for c := range s.conns {
		open = append(open, c)
	}
	s.mu.Unlock()

	// Close listeners and idle keep-alive connections; wait for plain HTTP
	// requests in flight. Upgraded connections are ours to close.
	err := s.httpSrv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(errors.New("echo: waiting for HTTP requests"), err)
	}

	if len(open) > 0 {
		s.log.Info("shutting down: closing WebSocket connections with 1001 (going away)", "connections", len(open))
	}
	s.wg.Add(len(open))
	for _, c := range open {
		go c.goAway()
	}

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("shutdown deadline passed: dropping connections without a close handshake", "cause", ctx.Err())
		s.forceStop()
		<-done
		if err == nil {
			err = ctx.Err()
		}
	}
	s.forceStop()
	return err
}

// begin counts a WebSocket handler in the wait group Shutdown waits on. It
// reports false, counting nothing, once Shutdown has begun; otherwise the
// caller must call s.wg.Done when the handler returns.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	return true
}

// track registers an upgraded connection so that Shutdown can close it. It
// reports false, registering nothing, once Shutdown has begun.
func (s *Server) track(c *echoConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// untrack removes c once its echo loop is done.
func (s *Server) untrack(c *echoConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// shuttingDown reports whether Shutdown has begun.
func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}
