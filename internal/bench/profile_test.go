package bench

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/discovery"
	"github.com/wsmesh/wsmesh/internal/echo"
	"github.com/wsmesh/wsmesh/internal/sidecar"
)

// TestProfileSidecars runs both sidecars of bench/configs/$WSMESH_PROFILE
// (wsmesh-2hop-h1 or wsmesh-2hop-h2) with the echo server and the load
// generator in this process, so that go test -cpuprofile or -memprofile
// profiles the sidecar, which has no pprof endpoint:
//
//	WSMESH_PROFILE=wsmesh-2hop-h2 WSMESH_PROFILE_MODE=throughput \
//	  go test -run TestProfileSidecars -cpuprofile cpu.out ./internal/bench/
//	go tool pprof -top -focus 'relay|httpproxy|h2tunnel|wsobserve' cpu.out
//
// The ports are those of compare.sh: do not run both at once.
func TestProfileSidecars(t *testing.T) {
	dir := os.Getenv("WSMESH_PROFILE")
	if dir == "" {
		t.Skip("set WSMESH_PROFILE=wsmesh-2hop-h1 or wsmesh-2hop-h2 to profile the sidecars")
	}
	mode := os.Getenv("WSMESH_PROFILE_MODE")
	if mode == "" {
		mode = ModeThroughput
	}
	port := map[string]string{"wsmesh-2hop-h1": "21200", "wsmesh-2hop-h2": "21300"}[dir]
	if port == "" {
		t.Fatalf("unknown configuration %q", dir)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	es := echo.New(echo.Config{Logger: logger, DisableCompression: true})
	ln, err := net.Listen("tcp", "127.0.0.1:21000")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = es.Serve(ln) }()
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_ = es.Shutdown(sctx)
	}()

	src, err := discovery.NewFileSource([]string{filepath.Join("..", "..", "bench", "configs", dir)}, logger)
	if err != nil {
		t.Fatal(err)
	}
	access, err := os.Create(filepath.Join(t.TempDir(), "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer access.Close()
	done := make(chan error, 2)
	for _, w := range []string{"websockets-server", "websockets-client"} {
		sc, err := sidecar.New(sidecar.Options{Source: src, Workload: w, Logger: logger,
			Access: accesslog.New(access), ObserveWebSocket: true})
		if err != nil {
			t.Fatal(err)
		}
		go func() { done <- sc.Run(ctx) }()
		<-sc.Ready()
	}
	svc := "websockets-server.default.svc.cluster.local:" + port
	tg, err := ParseTarget("ws://"+svc+"/", map[string]string{svc: "127.0.0.1:" + port})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Mode: mode, Target: tg, Duration: 5 * time.Second, Warmup: time.Second}
	if mode == ModeIdle {
		cfg.Conns = 2000
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = WriteText(os.Stderr, res)
	runtime.GC()
	cancel()
	<-done
	<-done
}
