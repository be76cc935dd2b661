// Package demo plays the guide on one machine: it starts the echo server
// (the guide's websockets-server app), the server's sidecar and the client's
// sidecar from an example configuration, runs the client's hello/world
// exchange through both sidecars, prints the transcript and both sidecars'
// access-log lines, and stops everything.
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/wsmesh/wsmesh/examples"
	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/config"
	"github.com/wsmesh/wsmesh/internal/discovery"
	"github.com/wsmesh/wsmesh/internal/echo"
	"github.com/wsmesh/wsmesh/internal/sidecar"
	"github.com/wsmesh/wsmesh/internal/wsclient"
)

// Options configures a demo run.
type Options struct {
	// H2 plays the guide's HTTP/2 section (examples/http2).
	H2 bool
	// NoAllowConnect drops the EnvoyFilter from the HTTP/2 example, to show
	// what happens when the server's sidecar does not allow extended CONNECT.
	NoAllowConnect bool
	// Strict makes the client sidecar answer 503 in that case (as Envoy
	// does) instead of falling back to HTTP/1.1.
	Strict bool
	// ConfigDir replaces the shipped example configuration.
	ConfigDir string
	// Keep leaves everything running until ctx ends.
	Keep bool
	// Messages are sent by the client; default hello, world.
	Messages []string
	// Out receives the transcript; Log receives the components' own logs
	// (nil: discarded).
	Out, Log io.Writer
	// ClientAdmin and ServerAdmin are the sidecars' admin addresses.
	ClientAdmin, ServerAdmin string
}

const (
	serverWorkload = "websockets-server"
	clientWorkload = "websockets-client"
	serviceHost    = "websockets-server.default.svc.cluster.local"
)

// Run plays the demo. It returns an error naming the cause when any step
// fails (a port in use, a configuration error, a missing echo).
func Run(ctx context.Context, o Options) error {
	if len(o.Messages) == 0 {
		o.Messages = []string{"hello", "world"}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.ClientAdmin == "" {
		o.ClientAdmin = "127.0.0.1:15000"
	}
	if o.ServerAdmin == "" {
		o.ServerAdmin = "127.0.0.1:15001"
	}
	out := o.Out
	logger := slog.New(slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelInfo}))

	dir, cleanup, err := configDir(o)
	if err != nil {
		return err
	}
	defer cleanup()
	src, err := discovery.NewFileSource([]string{dir}, logger)
	if err != nil {
		return err
	}
	snap := src.Current()
	for _, w := range snap.Warnings {
		logger.Warn("configuration", "warning", w)
	}
	srvW, err := snap.Workload(serverWorkload)
	if err != nil {
		return err
	}
	cliW, err := snap.Workload(clientWorkload)
	if err != nil {
		return err
	}
	_, srvIn := snap.Listeners(srvW)
	cliOut, _ := snap.Listeners(cliW)
	if len(srvIn) == 0 || len(cliOut) == 0 {
		return errors.New("the configuration needs an ingress listener for websockets-server and an egress listener for websockets-client (Sidecar resources)")
	}
	appAddr := srvIn[0].DefaultEndpoint
	egress := net.JoinHostPort(cliOut[0].Bind, fmt.Sprint(cliOut[0].Port))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	// The guide's websockets-server app.
	appLn, err := net.Listen("tcp", appAddr)
	if err != nil {
		return fmt.Errorf("echo server: %w (another program uses the port; pass --config with other ports)", err)
	}
	es := echo.New(echo.Config{Logger: logger.With("component", "echo")})
	wg.Add(1)
	go func() { defer wg.Done(); _ = es.Serve(appLn) }()
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_ = es.Shutdown(sctx)
	}()

	wg.Add(1)
	go func() { defer wg.Done(); _ = src.Run(ctx) }()
	srvLog, cliLog := &lines{}, &lines{}
	start := func(workload, admin string, log *lines) (*sidecar.Sidecar, <-chan error, error) {
		sc, err := sidecar.New(sidecar.Options{
			Source: src, Workload: workload, AdminAddr: admin,
			Access: accesslog.New(log), Logger: logger.With("sidecar", workload),
			ObserveWebSocket: true, H2Strict: o.Strict,
		})
		if err != nil {
			return nil, nil, err
		}
		done := make(chan error, 1)
		wg.Add(1)
		go func() { defer wg.Done(); done <- sc.Run(ctx) }()
		select {
		case <-sc.Ready():
			return sc, done, nil
		case err := <-done:
			return nil, nil, fmt.Errorf("%s sidecar: %w", workload, err)
		}
	}
	srvSC, srvDone, err := start(serverWorkload, o.ServerAdmin, srvLog)
	if err != nil {
		return err
	}
	cliSC, cliDone, err := start(clientWorkload, o.ClientAdmin, cliLog)
	if err != nil {
		return err
	}

	mode := "HTTP/1.1"
	if o.H2 {
		mode = "HTTP/2 (RFC 8441 extended CONNECT)"
	}
	fmt.Fprintf(out, "wsmesh demo: the guide's WebSocket exchange through two sidecars, %s between them\n", mode)
	fmt.Fprintf(out, "configuration: %s\n", o.describeConfig())
	fmt.Fprintf(out, "  echo server (app of %s)   %s\n", serverWorkload, appAddr)
	fmt.Fprintf(out, "  server sidecar            inbound %s -> %s, admin %s\n", srvSC.ListenerAddrs()[fmt.Sprintf("inbound:%d", srvIn[0].Port)], appAddr, srvSC.AdminAddr())
	fmt.Fprintf(out, "  client sidecar            outbound %s, admin %s\n", egress, cliSC.AdminAddr())
	allowed, by := snap.AllowConnect(srvW)
	if o.H2 {
		if allowed {
			fmt.Fprintf(out, "  server sidecar allows extended CONNECT (%s)\n", by)
		} else if o.Strict {
			fmt.Fprintf(out, "  server sidecar does NOT allow extended CONNECT; strict mode: the client sidecar answers 503, as Envoy does\n")
		} else {
			fmt.Fprintf(out, "  server sidecar does NOT allow extended CONNECT; the client sidecar falls back to an HTTP/1.1 upgrade for that endpoint\n")
		}
	}
	url := "ws://" + serviceHost + ":" + fmt.Sprint(cliOut[0].Port)
	fmt.Fprintf(out, "\n$ wsmesh client %s\n", url)

	tr := newTranscript(out, o.Messages)
	err = wsclient.Run(ctx, wsclient.Options{
		URL:       url,
		ConnectTo: map[string]string{serviceHost + ":" + fmt.Sprint(cliOut[0].Port): egress},
		Wait:      5 * time.Second,
	}, tr, tr)
	var cerr *wsclient.ConnectError
	switch {
	case errors.As(err, &cerr) && o.Strict:
		fmt.Fprintln(out, err)
		fmt.Fprintln(out, "(expected in strict mode: the server sidecar does not allow extended CONNECT, so the client sidecar answers 503 with flag UR, as Envoy does; without --strict it falls back to an HTTP/1.1 upgrade)")
	case err != nil:
		return err
	}
	// Each sidecar writes its line when the connection has closed on its side.
	deadline := time.Now().Add(5 * time.Second)
	for cliLog.count() < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err == nil { // nothing reaches the server sidecar when the client was refused
		for srvLog.count() < 1 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	fmt.Fprintf(out, "\nclient sidecar access log (istio-proxy of %s):\n", clientWorkload)
	cliLog.print(out)
	fmt.Fprintf(out, "server sidecar access log (istio-proxy of %s):\n", serverWorkload)
	srvLog.print(out)

	if o.Keep {
		fmt.Fprintf(out, "\nStill running (Ctrl-C to stop). Connect through the client sidecar with either:\n")
		fmt.Fprintf(out, "  wsmesh client ws://%s/\n", egress)
		fmt.Fprintf(out, "  /usr/bin/python3 -m websockets ws://%s/\n", egress)
		fmt.Fprintf(out, "Admin: http://%s/connections, http://%s/config_dump, http://%s/stats/prometheus\n", cliSC.AdminAddr(), srvSC.AdminAddr(), cliSC.AdminAddr())
		var fw sync.WaitGroup
		fw.Add(2)
		go func() { defer fw.Done(); cliLog.follow(ctx, out, "client sidecar: ") }()
		go func() { defer fw.Done(); srvLog.follow(ctx, out, "server sidecar: ") }()
		<-ctx.Done()
		fw.Wait()
		fmt.Fprintln(out, "\nstopping: the sidecars drain (open WebSockets get close 1001)")
		// The sidecars drain on ctx's end; print what they log meanwhile.
		<-cliDone
		<-srvDone
		for _, l := range []struct {
			name string
			log  *lines
		}{{"client sidecar: ", cliLog}, {"server sidecar: ", srvLog}} {
			if s := l.log.take(); s != "" {
				for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
					fmt.Fprintln(out, l.name+line)
				}
			}
		}
	}
	cancel()
	return nil
}

func (o Options) describeConfig() string {
	if o.ConfigDir != "" {
		return o.ConfigDir
	}
	if o.H2 {
		s := "examples/http2 (the guide's Services, UPGRADE DestinationRule"
		if !o.NoAllowConnect {
			s += " and EnvoyFilter h2-upgrade-wss"
		}
		return s + ", plus local-mode WorkloadEntry and Sidecar documents)"
	}
	return "examples/http1 (the guide's Services and DO_NOT_UPGRADE DestinationRule, plus local-mode WorkloadEntry and Sidecar documents)"
}

// configDir returns the directory to load: the user's, or the shipped
// example copied into a temporary directory.
func configDir(o Options) (string, func(), error) {
	if o.ConfigDir != "" {
		if _, err := config.Load(o.ConfigDir); err != nil {
			return "", nil, err
		}
		return o.ConfigDir, func() {}, nil
	}
	sub := "http1"
	if o.H2 {
		sub = "http2"
	}
	tmp, err := os.MkdirTemp("", "wsmesh-demo-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	files, err := fs.Glob(examples.FS, sub+"/*.yaml")
	if err != nil {
		cleanup()
		return "", nil, err
	}
	for _, f := range files {
		if o.NoAllowConnect && strings.HasSuffix(f, "envoyfilter.yaml") {
			continue
		}
		b, err := examples.FS.ReadFile(f)
		if err != nil {
			cleanup()
			return "", nil, err
		}
		if err := os.WriteFile(filepath.Join(tmp, filepath.Base(f)), b, 0o644); err != nil {
			cleanup()
			return "", nil, err
		}
	}
	return tmp, cleanup, nil
}

// lines collects access-log lines.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
	n   int
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n += bytes.Count(p, []byte("\n"))
	return l.buf.Write(p)
}

func (l *lines) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

func (l *lines) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.buf.String()
	l.buf.Reset()
	return s
}

func (l *lines) print(out io.Writer) {
	s := l.take()
	if s == "" {
		fmt.Fprintln(out, "  (none: no connection reached this sidecar)")
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		fmt.Fprintln(out, checkJSON(line))
	}
}

func (l *lines) follow(ctx context.Context, out io.Writer, prefix string) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s := l.take(); s != "" {
				for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
					fmt.Fprintln(out, prefix+line)
				}
			}
		}
	}
}

// checkJSON keeps the line as the sidecar wrote it (one JSON object), only
// checking that it is JSON.
func checkJSON(line string) string {
	if !json.Valid([]byte(line)) {
		return line + "   (not JSON!)"
	}
	return line
}

// transcript feeds the client one message at a time and prints "> msg"
// before each, waiting for the echo ("< msg") of the previous one, so the
// output reads like the guide's interactive session.
type transcript struct {
	out    io.Writer
	msgs   []string
	mu     sync.Mutex
	echoed chan struct{}
	buf    []byte
	sent   int
}

func newTranscript(out io.Writer, msgs []string) *transcript {
	return &transcript{out: out, msgs: msgs, echoed: make(chan struct{}, len(msgs)+1)}
}

func (t *transcript) Read(p []byte) (int, error) {
	if t.sent > 0 {
		select {
		case <-t.echoed:
		case <-time.After(5 * time.Second):
		}
	}
	if t.sent >= len(t.msgs) {
		return 0, io.EOF
	}
	m := t.msgs[t.sent]
	t.sent++
	t.mu.Lock()
	fmt.Fprintf(t.out, "> %s\n", m)
	t.mu.Unlock()
	return copy(p, m+"\n"), nil
}

func (t *transcript) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			break
		}
		line := string(t.buf[:i])
		t.buf = t.buf[i+1:]
		fmt.Fprintln(t.out, line)
		if strings.HasPrefix(line, "< ") {
			t.echoed <- struct{}{}
		}
	}
	return len(p), nil
}
