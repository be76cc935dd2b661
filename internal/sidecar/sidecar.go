// Package sidecar assembles one workload's proxy from configuration
// snapshots: its outbound listeners (the app's connections to services), its
// inbound listeners (peers' connections to the app) and its admin port. A
// new snapshot opens and closes listeners as needed and never cuts an open
// connection.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/config"
	"github.com/wsmesh/wsmesh/internal/h1"
	"github.com/wsmesh/wsmesh/internal/h2tunnel"
	"github.com/wsmesh/wsmesh/internal/httpproxy"
	"github.com/wsmesh/wsmesh/internal/inbound"
	"github.com/wsmesh/wsmesh/internal/metrics"
	"github.com/wsmesh/wsmesh/internal/outbound"
)

// Source supplies configuration snapshots.
type Source interface {
	Current() *config.Snapshot
	Subscribe() <-chan *config.Snapshot
}

// Options configures a Sidecar.
type Options struct {
	Source   Source
	Workload string // name (or namespace/name) of the workload this sidecar serves
	// AdminAddr is the admin listener ("127.0.0.1:15000"); "" disables it.
	AdminAddr string
	Access    *accesslog.Logger // nil: no access log
	Logger    *slog.Logger
	Metrics   *metrics.Metrics // nil: a new registry
	// ObserveWebSocket turns on the passive frame observer (default on
	// through cmd; off means bytes are relayed with splice where possible).
	ObserveWebSocket bool
	// WebSocketIdleTimeout: 0 never cuts an open WebSocket.
	WebSocketIdleTimeout time.Duration
	// WebSocketParkAfter is httpproxy.Config.ParkAfter.
	WebSocketParkAfter time.Duration
	// HeaderReadTimeout and IdleTimeout for HTTP requests (0: defaults).
	HeaderReadTimeout time.Duration
	IdleTimeout       time.Duration
	Limits            h1.Limits
	// DrainGrace is how long open WebSockets may go on after a drain
	// starts before they are closed with 1001 (Going Away). Requests in
	// flight finish meanwhile; the drain ends early once nothing is open.
	DrainGrace time.Duration
	// Intercept adds the transparent listeners of Kubernetes mode: the
	// app's outbound connections redirected by iptables (wsmesh
	// init-iptables) arrive on OutboundPort, peers' inbound ones on
	// InboundPort, and each is routed by its original destination.
	Intercept                 bool
	OutboundPort, InboundPort int
	// MaxConcurrentStreams bounds the streams of one inbound HTTP/2
	// connection (0: 1000).
	MaxConcurrentStreams int
	// MaxConnections bounds the downstream HTTP/1.1 connections served at
	// once across all listeners (0: unlimited); beyond it: 503, flag OM.
	MaxConnections int
	// H2Strict answers 503 (as Envoy does) instead of falling back to an
	// HTTP/1.1 upgrade when a peer does not allow extended CONNECT.
	H2Strict bool
}

// Sidecar is one workload's proxy.
type Sidecar struct {
	opts     Options
	log      *slog.Logger
	tracker  *httpproxy.Tracker
	metrics  *metrics.Metrics
	h2       *h2tunnel.Pool
	out      *outbound.Outbound
	in       *inbound.Inbound
	snap     atomic.Pointer[config.Snapshot]
	workload atomic.Pointer[config.Workload]

	mu        sync.Mutex
	listeners map[string]*runningListener
	wg        sync.WaitGroup

	ready     chan struct{}
	draining  atomic.Bool
	drainer   *httpproxy.Drainer
	drainReq  chan struct{}
	drainOne  sync.Once
	adminLn   net.Listener
	stopAdmin func()
}

type runningListener struct {
	l      config.Listener
	side   string
	ln     net.Listener
	cancel context.CancelFunc
}

// New checks that the workload exists in the current snapshot and returns
// a Sidecar ready to Run.
func New(opts Options) (*Sidecar, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	snap := opts.Source.Current()
	w, err := snap.Workload(opts.Workload)
	if err != nil {
		return nil, err
	}
	s := &Sidecar{
		opts:      opts,
		log:       opts.Logger.With("workload", w.Name),
		tracker:   httpproxy.NewTracker(),
		metrics:   opts.Metrics,
		listeners: make(map[string]*runningListener),
		ready:     make(chan struct{}),
		drainer:   httpproxy.NewDrainer(),
		drainReq:  make(chan struct{}),
	}
	if s.metrics == nil {
		s.metrics = metrics.New()
	}
	if s.opts.OutboundPort == 0 {
		s.opts.OutboundPort = 15001
	}
	if s.opts.InboundPort == 0 {
		s.opts.InboundPort = 15006
	}
	s.snap.Store(snap)
	s.workload.Store(w)
	s.h2 = h2tunnel.NewPool(h2tunnel.PoolConfig{})
	pcfg := httpproxy.Config{
		Access:               opts.Access,
		Logger:               s.log,
		Limits:               opts.Limits,
		HeaderReadTimeout:    opts.HeaderReadTimeout,
		IdleTimeout:          opts.IdleTimeout,
		WebSocketIdleTimeout: opts.WebSocketIdleTimeout,
		ParkAfter:            opts.WebSocketParkAfter,
		ObserveWebSocket:     opts.ObserveWebSocket,
		H2:                   s.h2,
		H2Strict:             opts.H2Strict,
		Tracker:              s.tracker,
		OnRecord:             s.onRecord,
		OnFallback:           s.metrics.H2ExtendedConnectFallback,
		OnWebSocketOpen:      s.metrics.WebSocketOpened,
		Drainer:              s.drainer,
		Limiter:              &httpproxy.Limiter{Max: int64(opts.MaxConnections)},
	}
	s.out = outbound.New(outbound.Config{Snapshot: s.snap.Load, Workload: s.workload.Load, Proxy: pcfg, Logger: s.log.With("side", "outbound")})
	s.in = inbound.New(inbound.Config{Snapshot: s.snap.Load, Workload: s.workload.Load, Proxy: pcfg, Logger: s.log.With("side", "inbound"),
		DrainTimeout: opts.DrainGrace + 10*time.Second, MaxConcurrentStreams: uint32(opts.MaxConcurrentStreams)})
	return s, nil
}

// Ready is closed once every listener of the first snapshot is bound.
func (s *Sidecar) Ready() <-chan struct{} { return s.ready }

// Tracker returns the open-connection registry.
func (s *Sidecar) Tracker() *httpproxy.Tracker { return s.tracker }

// Pool returns the sidecar's outbound HTTP/2 connection pool.
func (s *Sidecar) Pool() *h2tunnel.Pool { return s.h2 }

// Run binds the listeners and serves until ctx ends, applying each new
// snapshot from the source. It returns after every listener and connection
// handler has stopped.
func (s *Sidecar) Run(ctx context.Context) error {
	connCtx, cancelConns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelConns()
	if err := s.apply(ctx, connCtx, s.snap.Load(), true); err != nil {
		s.stopAll()
		s.wg.Wait()
		return err
	}
	adminDone := make(chan struct{})
	if s.opts.AdminAddr != "" {
		if err := s.startAdmin(ctx, adminDone); err != nil {
			s.stopAll()
			s.wg.Wait()
			return err
		}
	} else {
		s.stopAdmin = func() {}
		close(adminDone)
	}
	close(s.ready)
	updates := s.opts.Source.Subscribe()
	for {
		select {
		case <-ctx.Done():
			s.drain()
			cancelConns()
			s.wg.Wait()
			s.h2.Close()
			s.stopAdmin()
			<-adminDone
			return nil
		case <-s.drainReq:
			s.drain()
			cancelConns()
			s.wg.Wait()
			s.h2.Close()
			s.stopAdmin()
			<-adminDone
			return nil
		case snap, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			if err := s.apply(ctx, connCtx, snap, false); err != nil {
				s.log.Error("configuration not applied; previous listeners stay", "version", snap.Version, "cause", err)
			}
		}
	}
}

// apply makes the running listeners match snap. At start a bind failure is
// fatal; on reload it is logged and the rest applies.
func (s *Sidecar) apply(ctx, connCtx context.Context, snap *config.Snapshot, initial bool) error {
	w, err := snap.Workload(s.opts.Workload)
	if err != nil {
		return fmt.Errorf("workload %q: %w", s.opts.Workload, err)
	}
	outs, ins := snap.Listeners(w)
	want := make(map[string]runningListener)
	for _, l := range outs {
		want[listenerKey("outbound", l)] = runningListener{l: l, side: "outbound"}
	}
	for _, l := range ins {
		want[listenerKey("inbound", l)] = runningListener{l: l, side: "inbound"}
	}
	if s.opts.Intercept {
		// Istio's virtual listeners: every redirected connection arrives
		// here, on all addresses, and is routed by its original destination.
		out := config.Listener{Name: "virtualOutbound", Bind: "", Port: s.opts.OutboundPort}
		in := config.Listener{Name: "virtualInbound", Bind: "", Port: s.opts.InboundPort}
		want[listenerKey("outbound-transparent", out)] = runningListener{l: out, side: "outbound-transparent"}
		want[listenerKey("inbound-transparent", in)] = runningListener{l: in, side: "inbound-transparent"}
	}
	s.snap.Store(snap)
	s.workload.Store(w)
	if !initial {
		s.closeOrphans(snap)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for key, rl := range s.listeners {
		if _, ok := want[key]; !ok {
			s.log.Info("listener removed; open connections continue", "side", rl.side, "address", rl.ln.Addr().String())
			rl.cancel()
			delete(s.listeners, key)
		}
	}
	var errs []error
	for key, rl := range want {
		if _, ok := s.listeners[key]; ok {
			continue
		}
		addr := net.JoinHostPort(bindOf(rl.l), fmt.Sprint(rl.l.Port))
		ln, err := listenWithRetry(addr, initial, strings.HasPrefix(rl.side, "inbound"))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s listener %s: %w", rl.side, addr, err))
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		run := &runningListener{l: rl.l, side: rl.side, ln: ln, cancel: cancel}
		s.listeners[key] = run
		s.log.Info("listening", "side", rl.side, "address", ln.Addr().String(), "protocol", string(rl.l.Protocol), "app", rl.l.DefaultEndpoint)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			var err error
			switch run.side {
			case "outbound":
				err = s.out.Serve(lctx, connCtx, ln, run.l)
			case "inbound":
				err = s.in.Serve(lctx, connCtx, ln, run.l)
			case "outbound-transparent":
				err = s.out.ServeTransparent(lctx, connCtx, ln)
			case "inbound-transparent":
				err = s.in.ServeTransparent(lctx, connCtx, ln)
			}
			if err != nil {
				s.log.Error("listener stopped", "address", ln.Addr().String(), "cause", err)
			}
		}()
	}
	return errors.Join(errs...)
}

// listenWithRetry binds addr; on reload a port just released by a replaced
// listener may take a moment to free. remote: the listener takes
// connections from other hosts (an inbound one), whose accepted
// connections get Go's TCP keepalive (probes after 15 s idle, every 15 s,
// 9 of them), so that a relay from a host that vanished without a FIN
// ends; an outbound listener's connections come from the local app, whose
// end the kernel reports itself, and get none.
func listenWithRetry(addr string, initial, remote bool) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	if remote {
		lc.KeepAlive = 0
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	for i := 0; err != nil && !initial && i < 20; i++ {
		time.Sleep(50 * time.Millisecond)
		ln, err = lc.Listen(context.Background(), "tcp", addr)
	}
	return ln, err
}

func bindOf(l config.Listener) string {
	if l.Bind == "" && (l.Name == "virtualOutbound" || l.Name == "virtualInbound") {
		return "" // all addresses, IPv4 and IPv6
	}
	if l.Bind == "" {
		return "0.0.0.0"
	}
	return l.Bind
}

func listenerKey(side string, l config.Listener) string {
	return fmt.Sprintf("%s|%s|%d|%s|%s", side, bindOf(l), l.Port, l.Protocol, l.DefaultEndpoint)
}

func (s *Sidecar) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, rl := range s.listeners {
		rl.cancel()
		delete(s.listeners, k)
	}
}

// ListenerAddrs returns the bound address of each running listener keyed by
// "outbound:PORT" or "inbound:PORT" (the configured port).
func (s *Sidecar) ListenerAddrs() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.listeners))
	for _, rl := range s.listeners {
		out[fmt.Sprintf("%s:%d", rl.side, rl.l.Port)] = rl.ln.Addr().String()
	}
	return out
}

// allowConnect reports whether this workload's inbound side accepts RFC 8441
// extended CONNECT, and which configuration decided it.
func allowConnect(snap *config.Snapshot, w *config.Workload) map[string]any {
	ok, source := snap.AllowConnect(w)
	return map[string]any{"allowed": ok, "source": source}
}

// onRecord updates Istio's standard metrics from a finished record.
func (s *Sidecar) onRecord(rec *accesslog.Record, t *httpproxy.Target) {
	w := s.workload.Load()
	reporter := metrics.ReporterSource
	labels := metrics.Labels{}
	if rec.UpstreamCluster != "" && strings.HasPrefix(rec.UpstreamCluster, "inbound|") {
		reporter = metrics.ReporterDestination
		labels.DestinationWorkload, labels.DestinationWorkloadNamespace = w.Name, w.Namespace
		labels.DestinationService = rec.Authority
	} else {
		labels.SourceWorkload, labels.SourceWorkloadNamespace = w.Name, w.Namespace
		if t != nil {
			labels.DestinationService = t.Service
			if name, ns, ok := strings.Cut(t.Service, "."); ok {
				labels.DestinationServiceName = name
				labels.DestinationServiceNamespace, _, _ = strings.Cut(ns, ".")
			}
		}
	}
	if rec.Method == "" && rec.WebSocket == nil {
		labels.RequestProtocol = "tcp"
	}
	if rec.WebSocket != nil {
		s.metrics.WebSocketClosed()
	}
	s.metrics.Observe(rec, reporter, labels)
}

// Drain asks Run to drain and return (as SIGTERM does).
func (s *Sidecar) Drain() { s.drainOne.Do(func() { close(s.drainReq) }) }

// drain winds the sidecar down without cutting what can finish: readiness
// turns false, listeners stop accepting, keep-alive connections close after
// their request in flight and HTTP/2 peers get GOAWAY; WebSockets get the
// grace period, then close 1001 (Going Away) to both peers; whatever is
// still open after that is cut by the caller.
func (s *Sidecar) drain() {
	start := time.Now()
	s.draining.Store(true)
	s.stopAll()
	s.drainer.StopKeepAlive()
	open := s.tracker.Len()
	s.log.Info("draining", "open_connections", open, "grace", s.opts.DrainGrace.String())
	waitEmpty := func(d time.Duration) {
		deadline := time.Now().Add(d)
		for s.tracker.Len() > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitEmpty(s.opts.DrainGrace)
	if n := s.tracker.Len(); n > 0 {
		s.log.Info("grace period over: closing WebSockets with 1001 (going away)", "open_connections", n)
		s.tracker.GoAwayAll("sidecar shutting down")
		waitEmpty(6 * time.Second)
	}
	s.log.Info("drained", "took", time.Since(start).Round(time.Millisecond).String(), "left_open", s.tracker.Len())
}

// closeOrphans closes, with 1001, the outbound WebSockets whose cluster or
// endpoint the new snapshot no longer has. Everything else stays open.
func (s *Sidecar) closeOrphans(snap *config.Snapshot) {
	endpoints := make(map[string]map[string]bool)
	for _, cl := range snap.Clusters() {
		eps := make(map[string]bool, len(cl.Endpoints))
		for _, e := range cl.Endpoints {
			eps[e.Address] = true
		}
		endpoints[cl.Name] = eps
	}
	s.tracker.Each(func(t *httpproxy.Tracked) {
		if t.Reporter != metrics.ReporterSource || t.Cluster() == "" {
			return
		}
		eps, ok := endpoints[t.Cluster()]
		switch {
		case !ok:
			s.log.Info("closing WebSocket: its service is gone from the configuration", "cluster", t.Cluster(), "id", t.ID)
			t.GoAway("route removed by configuration change")
		case !eps[t.Upstream()]:
			s.log.Info("closing WebSocket: its endpoint is gone from the configuration", "cluster", t.Cluster(), "endpoint", t.Upstream(), "id", t.ID)
			t.GoAway("endpoint removed by configuration change")
		}
	})
}
