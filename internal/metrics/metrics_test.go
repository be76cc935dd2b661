package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// sample finds the value of the sample whose line starts with name and
// contains every label pair given.
func sample(t *testing.T, body, name string, pairs ...string) string {
	t.Helper()
	for line := range strings.Lines(body) {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, p := range pairs {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			f := strings.Fields(line)
			return f[len(f)-1]
		}
	}
	t.Fatalf("no sample %s %v in\n%s", name, pairs, body)
	return ""
}

var echoLabels = Labels{
	SourceWorkload: "wsclient", SourceWorkloadNamespace: "default",
	DestinationWorkload: "echo", DestinationWorkloadNamespace: "default",
	DestinationService: "echo.default.svc.cluster.local", DestinationServiceName: "echo",
	DestinationServiceNamespace: "default",
}

func TestObserveHTTPAndWebSocket(t *testing.T) {
	m := New()
	m.Observe(&accesslog.Record{ResponseCode: 200, Duration: 12 * time.Millisecond, BytesReceived: 10, BytesSent: 2000}, ReporterSource, echoLabels)
	m.Observe(&accesslog.Record{ResponseCode: 200, Duration: 3 * time.Millisecond}, ReporterSource, echoLabels)
	m.WebSocketOpened()
	m.WebSocketOpened()
	m.WebSocketClosed()
	m.Observe(&accesslog.Record{
		ResponseCode: 101, Duration: 90 * time.Second, BytesReceived: 23, BytesSent: 42,
		WebSocket: &accesslog.WebSocket{MessagesDownstream: 2, MessagesUpstream: 3},
	}, ReporterDestination, echoLabels)
	m.Observe(&accesslog.Record{ResponseCode: 503, ResponseFlags: "UF,URX"}, ReporterSource, Labels{})
	m.H2ExtendedConnectFallback("10.0.0.7:8080")

	body := scrape(t, m)
	common := []string{
		`source_workload="wsclient"`, `source_workload_namespace="default"`, `destination_workload="echo"`,
		`destination_service="echo.default.svc.cluster.local"`, `destination_service_name="echo"`,
		`request_protocol="http"`, `connection_security_policy="none"`, `response_flags="-"`,
	}
	if v := sample(t, body, "istio_requests_total", append(common, `reporter="source"`, `response_code="200"`)...); v != "2" {
		t.Errorf("requests 200 = %s", v)
	}
	if v := sample(t, body, "istio_requests_total", append(common, `reporter="destination"`, `response_code="101"`)...); v != "1" {
		t.Errorf("requests 101 = %s", v)
	}
	if v := sample(t, body, "istio_requests_total", `response_code="503"`, `response_flags="UF,URX"`, `source_workload="unknown"`); v != "1" {
		t.Errorf("requests 503 = %s", v)
	}
	if v := sample(t, body, "istio_request_duration_milliseconds_bucket", append(common, `response_code="200"`, `le="5"`)...); v != "1" {
		t.Errorf("duration le=5 = %s", v)
	}
	if v := sample(t, body, "istio_request_duration_milliseconds_sum", append(common, `response_code="200"`)...); v != "15" {
		t.Errorf("duration sum = %s", v)
	}
	if v := sample(t, body, "istio_response_bytes_sum", append(common, `response_code="200"`)...); v != "2000" {
		t.Errorf("response bytes sum = %s", v)
	}
	if v := sample(t, body, "istio_request_bytes_sum", append(common, `response_code="101"`)...); v != "23" {
		t.Errorf("request bytes sum = %s", v)
	}
	if v := sample(t, body, "wsmesh_websocket_active"); v != "1" {
		t.Errorf("active = %s", v)
	}
	if v := sample(t, body, "wsmesh_websocket_messages_total", `direction="upstream"`, `reporter="destination"`); v != "3" {
		t.Errorf("messages upstream = %s", v)
	}
	if v := sample(t, body, "wsmesh_h2_extended_connect_fallback_total", `endpoint="10.0.0.7:8080"`); v != "1" {
		t.Errorf("fallback = %s", v)
	}
	if strings.Contains(body, "go_goroutines") || strings.Contains(body, "istio_tcp_") {
		t.Error("unexpected metrics in a private registry")
	}
}

func TestObserveTCP(t *testing.T) {
	m := New()
	l := echoLabels
	l.RequestProtocol = "tcp"
	l.ConnectionSecurityPolicy = "mutual_tls"
	m.TCPOpened(ReporterSource, l)
	m.Observe(&accesslog.Record{BytesReceived: 100, BytesSent: 5000}, ReporterSource, l)
	body := scrape(t, m)
	pairs := []string{`reporter="source"`, `request_protocol="tcp"`, `connection_security_policy="mutual_tls"`}
	for name, want := range map[string]string{
		"istio_tcp_connections_opened_total": "1",
		"istio_tcp_connections_closed_total": "1",
		"istio_tcp_received_bytes_total":     "100",
		"istio_tcp_sent_bytes_total":         "5000",
	} {
		if v := sample(t, body, name, pairs...); v != want {
			t.Errorf("%s = %s, want %s", name, v, want)
		}
	}
	if strings.Contains(body, "istio_requests_total{") {
		t.Error("TCP record counted as a request")
	}
}

func TestConcurrentObserve(t *testing.T) {
	m := New()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 500 {
				m.Observe(&accesslog.Record{ResponseCode: 101, WebSocket: &accesslog.WebSocket{MessagesDownstream: 1}}, ReporterSource, echoLabels)
			}
		})
	}
	wg.Wait()
	if v := sample(t, scrape(t, m), "wsmesh_websocket_messages_total", `direction="downstream"`); v != "2000" {
		t.Fatalf("messages = %s", v)
	}
}

func BenchmarkObserve(b *testing.B) {
	m := New()
	rec := &accesslog.Record{ResponseCode: 101, Duration: time.Second, WebSocket: &accesslog.WebSocket{MessagesDownstream: 3}}
	b.ReportAllocs()
	for b.Loop() {
		m.Observe(rec, ReporterSource, echoLabels)
	}
}
