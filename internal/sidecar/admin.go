package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// startAdmin serves the admin port: /ready, /config_dump, /connections,
// /stats (HTTP/2 pool and listener state as JSON) and /stats/prometheus.
func (s *Sidecar) startAdmin(ctx context.Context, done chan<- struct{}) error {
	ln, err := net.Listen("tcp", s.opts.AdminAddr)
	if err != nil {
		return err
	}
	s.adminLn = ln
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.ready:
		default:
			http.Error(w, "NOT READY: listeners not bound yet", http.StatusServiceUnavailable)
			return
		}
		if s.draining.Load() {
			http.Error(w, "DRAINING", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("LIVE\n"))
	})
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		snap := s.snap.Load()
		w0 := s.workload.Load()
		outs, ins := snap.Listeners(w0)
		writeJSON(w, map[string]any{
			"version":       snap.Version,
			"workload":      w0,
			"listeners":     map[string]any{"outbound": outs, "inbound": ins, "bound": s.ListenerAddrs()},
			"allow_connect": allowConnect(snap, w0),
			"config":        snap.Dump(),
			"warnings":      snap.Warnings,
		})
	})
	mux.HandleFunc("GET /connections", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"connections": s.tracker.Snapshot()})
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{
			"open_connections": s.tracker.Len(),
			"h2_pool":          s.h2.Stats(),
			"listeners":        s.ListenerAddrs(),
		})
	})
	mux.Handle("GET /stats/prometheus", s.metrics.Handler())
	// Go's profiler, for CPU and memory questions (the admin port binds
	// loopback by default).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		s.Drain()
		_, _ = w.Write([]byte("draining: readiness is now false; the sidecar exits when drained\n"))
	})
	mux.HandleFunc("POST /healthcheck/fail", func(w http.ResponseWriter, r *http.Request) {
		s.Drain()
		_, _ = w.Write([]byte("OK\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(done)
		err := srv.Serve(ln)
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin server stopped", "cause", err)
		}
	}()
	s.stopAdmin = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	s.log.Info("admin listening", "address", ln.Addr().String())
	return nil
}

// AdminAddr returns the bound admin address, or "".
func (s *Sidecar) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
