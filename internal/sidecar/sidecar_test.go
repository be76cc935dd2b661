package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/discovery"
	"github.com/wsmesh/wsmesh/internal/echo"
	"github.com/wsmesh/wsmesh/internal/testutil"
)

// meshOpts shapes the test mesh: the guide's two workloads on loopback.
type meshOpts struct {
	h2, allowConnect, strict bool
	drainGrace, wsIdle       time.Duration
	rule                     string // DestinationRule YAML, instead of upgradeRule when h2
}

type mesh struct {
	dir                 string
	egress, inPort      int
	app                 string
	client, server      *Sidecar
	clientLog, srvLog   *testutil.Lines
	cancel              context.CancelFunc
	clientDone, srvDone chan error
}

// freePort is testutil.FreePort.
var freePort = testutil.FreePort

const baseConfig = `apiVersion: v1
kind: Service
metadata:
  name: websockets-server
  labels: {app: websockets-server}
spec:
  ports:
  - {port: %[1]d, targetPort: 80, name: http-websocket}
  selector: {app: websockets-server}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: websockets-server}
spec:
  address: 127.0.0.1
  ports: {http-websocket: %[2]d}
  labels: {app: websockets-server}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: websockets-client}
spec:
  address: 127.0.0.1
  labels: {app: websockets-client}
---
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: websockets-server}
spec:
  workloadSelector: {labels: {app: websockets-server}}
  ingress:
  - port: {number: %[2]d, protocol: HTTP, name: http-websocket}
    defaultEndpoint: %[3]s
---
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: websockets-client}
spec:
  workloadSelector: {labels: {app: websockets-client}}
  egress:
  - port: {number: %[1]d, protocol: HTTP, name: http-websocket}
    bind: 127.0.0.1
    hosts: ["*/*"]
`

const upgradeRule = `apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: websockets-server}
spec:
  host: websockets-server
  trafficPolicy:
    connectionPool:
      http:
        h2UpgradePolicy: UPGRADE
`

const allowConnectFilter = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: h2-upgrade-wss}
spec:
  workloadSelector:
    labels: {app: websockets-server}
  configPatches:
  - applyTo: NETWORK_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter: {name: "envoy.filters.network.http_connection_manager"}
    patch:
      operation: MERGE
      value:
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          http2_protocol_options:
            allow_connect: true
`

// startMesh runs the echo app and both sidecars in this process.
func startMesh(t *testing.T, o meshOpts) *mesh {
	t.Helper()
	m := &mesh{dir: t.TempDir(), egress: freePort(t), inPort: freePort(t), clientLog: &testutil.Lines{}, srvLog: &testutil.Lines{}}
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.app = appLn.Addr().String()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	es := echo.New(echo.Config{Logger: quiet})
	mux := http.NewServeMux()
	mux.Handle("/", es)
	mux.HandleFunc("/post", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d %s", r.Method, len(b), r.Proto)
	})
	appSrv := &http.Server{Handler: mux}
	go appSrv.Serve(appLn)
	t.Cleanup(func() {
		ctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		es.Shutdown(ctx)
		appSrv.Close()
	})
	m.write(t, "mesh.yaml", fmt.Sprintf(baseConfig, m.egress, m.inPort, m.app))
	if o.rule != "" {
		m.write(t, "destinationrule.yaml", o.rule)
	} else if o.h2 {
		m.write(t, "destinationrule.yaml", upgradeRule)
	}
	if o.allowConnect {
		m.write(t, "envoyfilter.yaml", allowConnectFilter)
	}
	src, err := discovery.NewFileSource([]string{m.dir}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	srcDone := make(chan struct{})
	go func() { defer close(srcDone); src.Run(ctx) }()
	start := func(workload string, log *testutil.Lines) (*Sidecar, chan error) {
		sc, err := New(Options{Source: src, Workload: workload, Access: accesslog.New(log), Logger: quiet,
			ObserveWebSocket: true, H2Strict: o.strict, DrainGrace: o.drainGrace, WebSocketIdleTimeout: o.wsIdle})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- sc.Run(ctx) }()
		select {
		case <-sc.Ready():
		case err := <-done:
			t.Fatalf("%s: %v", workload, err)
		}
		return sc, done
	}
	m.server, m.srvDone = start("websockets-server", m.srvLog)
	m.client, m.clientDone = start("websockets-client", m.clientLog)
	t.Cleanup(func() {
		cancel()
		for _, d := range []chan error{m.clientDone, m.srvDone} {
			select {
			case <-d:
			case <-time.After(20 * time.Second):
				t.Error("sidecar did not stop")
			}
		}
		<-srcDone
	})
	return m
}

func (m *mesh) write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(m.dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (m *mesh) url() string {
	return fmt.Sprintf("ws://websockets-server.default.svc.cluster.local:%d/", m.egress)
}

// dial connects through the client sidecar with the service's name as Host.
func (m *mesh) dial(t *testing.T, ctx context.Context) *websocket.Conn {
	t.Helper()
	egress := fmt.Sprintf("127.0.0.1:%d", m.egress)
	c, _, err := websocket.Dial(ctx, m.url(), &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, egress)
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func echoOnce(t *testing.T, ctx context.Context, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	_, b, err := c.Read(ctx)
	if err != nil || string(b) != msg {
		t.Fatalf("echo of %q: %q %v", msg, b, err)
	}
}

func TestGuideOverHTTP1(t *testing.T) {
	m := startMesh(t, meshOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := m.dial(t, ctx)
	echoOnce(t, ctx, c, "hello")
	echoOnce(t, ctx, c, "world")
	c.Close(websocket.StatusNormalClosure, "")
	cl, sl := m.clientLog.Wait(t, 1)[0], m.srvLog.Wait(t, 1)[0]
	for _, r := range []map[string]any{cl, sl} {
		if r["protocol"] != "HTTP/1.1" || r["response_code"] != 101.0 || r["websocket_messages_downstream"] != 2.0 || r["websocket_close_code"] != 1000.0 {
			t.Fatalf("record %v", r)
		}
	}
	if cl["upstream_host"] != fmt.Sprintf("127.0.0.1:%d", m.inPort) || sl["upstream_host"] != m.app {
		t.Fatalf("upstream hosts: %v / %v", cl["upstream_host"], sl["upstream_host"])
	}
	if cl["bytes_received"] != sl["bytes_received"] || cl["bytes_sent"] != sl["bytes_sent"] {
		t.Fatalf("byte counts differ between the sidecars: %v", []any{cl["bytes_received"], sl["bytes_received"], cl["bytes_sent"], sl["bytes_sent"]})
	}
}

func TestGuideOverHTTP2(t *testing.T) {
	m := startMesh(t, meshOpts{h2: true, allowConnect: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 200
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i] = m.dial(t, ctx)
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 3; j++ {
				msg := fmt.Sprintf("m%d-%d", i, j)
				if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					t.Error(err)
					return
				}
				_, b, err := c.Read(ctx)
				if err != nil || string(b) != msg {
					t.Errorf("echo %q: %q %v", msg, b, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	stats := m.client.Pool().Stats()
	if stats.Dialed == 0 || stats.Dialed > 3 {
		t.Fatalf("%d WebSockets used %d HTTP/2 connections, want 1 to 3", n, stats.Dialed)
	}
	for _, c := range conns {
		c.Close(websocket.StatusNormalClosure, "")
	}
	cl, sl := m.clientLog.Wait(t, n), m.srvLog.Wait(t, n)
	for i := range cl {
		if cl[i]["protocol"] != "HTTP/1.1" || sl[i]["protocol"] != "HTTP/2" || sl[i]["method"] != "GET" || sl[i]["response_code"] != 101.0 {
			t.Fatalf("records: client %v server %v", cl[i], sl[i])
		}
		if sl[i]["response_flags"] != "-" || cl[i]["response_flags"] != "-" {
			t.Fatalf("flags: client %v server %v", cl[i]["response_flags"], sl[i]["response_flags"])
		}
	}
}

func TestHTTP2FallbackAndStrict(t *testing.T) {
	t.Run("fallback", func(t *testing.T) {
		m := startMesh(t, meshOpts{h2: true})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := 0; i < 2; i++ { // the second one uses the cached answer
			c := m.dial(t, ctx)
			echoOnce(t, ctx, c, "hello")
			c.Close(websocket.StatusNormalClosure, "")
		}
		cl, sl := m.clientLog.Wait(t, 2), m.srvLog.Wait(t, 2)
		for i := range cl {
			if !strings.Contains(cl[i]["response_code_details"].(string), "http1_fallback") || sl[i]["protocol"] != "HTTP/1.1" {
				t.Fatalf("client %v\nserver %v", cl[i], sl[i])
			}
		}
	})
	t.Run("strict", func(t *testing.T) {
		m := startMesh(t, meshOpts{h2: true, strict: true})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, resp, err := websocket.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/", m.egress), nil)
		if err == nil || resp == nil || resp.StatusCode != 503 {
			t.Fatalf("want 503, got %v %v", resp, err)
		}
		r := m.clientLog.Wait(t, 1)[0]
		if r["response_flags"] != "UR" {
			t.Fatalf("record %v", r)
		}
	})
}

func TestPlainRequestsOverHTTP2(t *testing.T) {
	m := startMesh(t, meshOpts{h2: true, allowConnect: true})
	client := &http.Client{Timeout: 10 * time.Second}
	for i, body := range []string{"", strings.Repeat("x", 100000)} {
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/post", m.egress), strings.NewReader(body))
		if i == 0 {
			req.Method = "GET"
			req.Body = nil
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("%s %d HTTP/1.1", req.Method, len(body))
		if resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("%d %q, want %q", resp.StatusCode, b, want)
		}
	}
	sl := m.srvLog.Wait(t, 2)
	if sl[1]["protocol"] != "HTTP/2" || sl[1]["bytes_received"] != 100000.0 {
		t.Fatalf("server record %v", sl[1])
	}
}

func TestDrainClosesWebSocketsWithGoingAway(t *testing.T) {
	m := startMesh(t, meshOpts{h2: true, allowConnect: true, drainGrace: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := m.dial(t, ctx)
	echoOnce(t, ctx, c, "before drain")
	m.client.Drain()
	_, _, err := c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("client saw %v, want close 1001", err)
	}
	select {
	case err := <-m.clientDone:
		if err != nil {
			t.Fatal(err)
		}
		m.clientDone <- nil // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("client sidecar did not exit after draining")
	}
	r := m.clientLog.Wait(t, 1)[0]
	if !strings.Contains(fmt.Sprint(r["connection_termination_details"]), "1001") {
		t.Fatalf("record %v", r)
	}
}

func TestReloadKeepsOpenWebSockets(t *testing.T) {
	m := startMesh(t, meshOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conns := make([]*websocket.Conn, 20)
	for i := range conns {
		conns[i] = m.dial(t, ctx)
		echoOnce(t, ctx, conns[i], "before")
	}
	before := m.client.snap.Load().Version
	m.write(t, "destinationrule.yaml", strings.Replace(upgradeRule, "UPGRADE", "DO_NOT_UPGRADE", 1))
	deadline := time.Now().Add(5 * time.Second)
	for m.client.snap.Load().Version == before {
		if time.Now().After(deadline) {
			t.Fatal("configuration not reloaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// An invalid change is refused and changes nothing.
	m.write(t, "broken.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: nope}]}\n")
	time.Sleep(300 * time.Millisecond)
	for _, c := range conns {
		echoOnce(t, ctx, c, "after")
	}
	if got := m.client.Tracker().Len(); got != len(conns) {
		t.Fatalf("%d open connections, want %d", got, len(conns))
	}
}

func TestWebSocketIdleTimeoutClosesWithFrame(t *testing.T) {
	m := startMesh(t, meshOpts{wsIdle: 400 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := m.dial(t, ctx)
	// Pings count as activity: the connection outlives several timeouts.
	go func() { _, _, _ = c.Read(ctx) }()
	for i := 0; i < 6; i++ {
		time.Sleep(150 * time.Millisecond)
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
	c2 := m.dial(t, ctx)
	echoOnce(t, ctx, c2, "then silence")
	start := time.Now()
	_, _, err := c2.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "idle timeout" {
		t.Fatalf("after %v: %v, want close 1001 idle timeout", time.Since(start), err)
	}
	// Both sidecars time the same idleness; whichever fires first closes
	// with SI, and the other sees the close come through.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var flags []any
		for _, r := range append(m.clientLog.Records(t), m.srvLog.Records(t)...) {
			flags = append(flags, r["response_flags"])
			if r["response_flags"] == "SI" && r["websocket_close_reason"] == "idle timeout" {
				c.CloseNow()
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record with flag SI: %v", flags)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRemovedEndpointClosesItsWebSockets(t *testing.T) {
	m := startMesh(t, meshOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := m.dial(t, ctx)
	echoOnce(t, ctx, c, "before")
	// Move the server's endpoint to another port: the open WebSocket's
	// endpoint is gone, so it is closed with 1001 and the reason logged.
	b, err := os.ReadFile(filepath.Join(m.dir, "mesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.Replace(string(b), fmt.Sprintf("ports: {http-websocket: %d}", m.inPort), fmt.Sprintf("ports: {http-websocket: %d}", freePort(t)), 1)
	m.write(t, "mesh.yaml", moved)
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || !strings.Contains(ce.Reason, "endpoint removed") {
		t.Fatalf("client saw %v", err)
	}
	r := m.clientLog.Wait(t, 1)[0]
	if !strings.Contains(fmt.Sprint(r["connection_termination_details"]), "endpoint removed") {
		t.Fatalf("record %v", r)
	}
}
