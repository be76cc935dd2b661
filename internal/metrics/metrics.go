// Package metrics keeps wsmesh's Prometheus metrics under Istio's standard
// names and labels (istio_requests_total, istio_request_duration_milliseconds,
// istio_tcp_* ...), so existing Istio dashboards and Kiali read them, plus a
// few wsmesh_* metrics about WebSockets and HTTP/2 extended CONNECT. The
// metrics live in a private registry served by Handler.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/relay"
)

// Reporter label values: which sidecar of a request reports it.
const (
	ReporterSource      = "source"      // the client's sidecar (outbound)
	ReporterDestination = "destination" // the server's sidecar (inbound)
)

// Labels are the Istio standard labels describing the two workloads of a
// request or connection. Empty values are reported as "unknown", as Istio
// does.
type Labels struct {
	SourceWorkload               string
	SourceWorkloadNamespace      string
	DestinationWorkload          string
	DestinationWorkloadNamespace string
	DestinationService           string // host name, e.g. echo.default.svc.cluster.local
	DestinationServiceName       string // e.g. echo
	DestinationServiceNamespace  string
	// RequestProtocol is "http", "grpc" or "tcp"; "" means "http". Records
	// observed with "tcp" update the istio_tcp_* metrics instead of the
	// request metrics.
	RequestProtocol string
	// ConnectionSecurityPolicy is "mutual_tls" or "none"; "" means "none".
	ConnectionSecurityPolicy string
}

var workloadLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace",
	"destination_workload", "destination_workload_namespace",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"request_protocol", "response_flags", "connection_security_policy",
}

var requestLabels = append(append([]string(nil), workloadLabels...), "response_code")

// Istio's default histogram buckets.
var (
	durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	bytesBuckets    = prometheus.ExponentialBuckets(1, 10, 9)
)

// Metrics is the set of metrics one wsmesh process exports. Its methods are
// safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	requestBytes    *prometheus.HistogramVec
	responseBytes   *prometheus.HistogramVec
	tcpSent         *prometheus.CounterVec
	tcpReceived     *prometheus.CounterVec
	tcpOpened       *prometheus.CounterVec
	tcpClosed       *prometheus.CounterVec

	wsActive   prometheus.Gauge
	wsMessages *prometheus.CounterVec
	h2Fallback *prometheus.CounterVec
}

// New returns Metrics registered in a fresh private registry.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_requests_total",
			Help: "Requests (including WebSocket upgrades) handled by the proxy.",
		}, requestLabels),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "istio_request_duration_milliseconds",
			Help:    "Duration of requests; for a WebSocket, the life of the connection.",
			Buckets: durationBuckets,
		}, requestLabels),
		requestBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "istio_request_bytes",
			Help:    "Request body bytes received from downstream (for a WebSocket, every byte after the handshake).",
			Buckets: bytesBuckets,
		}, requestLabels),
		responseBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "istio_response_bytes",
			Help:    "Response body bytes sent to downstream (for a WebSocket, every byte after the handshake).",
			Buckets: bytesBuckets,
		}, requestLabels),
		tcpSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_sent_bytes_total",
			Help: "Bytes sent to downstream on TCP connections.",
		}, workloadLabels),
		tcpReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_received_bytes_total",
			Help: "Bytes received from downstream on TCP connections.",
		}, workloadLabels),
		tcpOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_opened_total",
			Help: "TCP connections opened.",
		}, workloadLabels),
		tcpClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_closed_total",
			Help: "TCP connections closed.",
		}, workloadLabels),
		wsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wsmesh_websocket_active",
			Help: "WebSocket connections currently open through this proxy.",
		}),
		wsMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsmesh_websocket_messages_total",
			Help: `WebSocket data messages seen in ended connections; direction "downstream" counts messages the downstream peer sent, "upstream" those the upstream peer sent.`,
		}, []string{"reporter", "direction"}),
		h2Fallback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsmesh_h2_extended_connect_fallback_total",
			Help: "WebSockets sent over HTTP/1.1 because an HTTP/2 upstream did not offer extended CONNECT (RFC 8441).",
		}, []string{"endpoint"}),
	}
	parked := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wsmesh_relay_directions_parked",
		Help: "Directions of relayed connections idle long enough to wait for bytes without a goroutine (two per fully idle WebSocket).",
	}, func() float64 { return float64(relay.Parked()) })
	inline := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "wsmesh_relay_inline_forwards_total",
		Help: "Reads of HTTP/2 DATA that a relay passed to its socket on the connection's reader goroutine, with no hand-off to another goroutine.",
	}, func() float64 { return float64(relay.InlineForwards()) })
	m.reg.MustRegister(m.requests, m.requestDuration, m.requestBytes, m.responseBytes,
		m.tcpSent, m.tcpReceived, m.tcpOpened, m.tcpClosed, m.wsActive, m.wsMessages, m.h2Fallback, parked, inline)
	return m
}

// Registry returns the private registry, e.g. to add process collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// codeStrings avoids formatting the common status codes on every request.
var codeStrings = func() (t [600]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func codeString(c int) string {
	if c >= 0 && c < len(codeStrings) {
		return codeStrings[c]
	}
	return strconv.Itoa(c)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// values fills the workloadLabels values, then extra, into dst.
func (l *Labels) values(dst []string, reporter, flags string, extra ...string) []string {
	dst = append(dst, reporter,
		orUnknown(l.SourceWorkload), orUnknown(l.SourceWorkloadNamespace),
		orUnknown(l.DestinationWorkload), orUnknown(l.DestinationWorkloadNamespace),
		orUnknown(l.DestinationService), orUnknown(l.DestinationServiceName), orUnknown(l.DestinationServiceNamespace),
		or(l.RequestProtocol, "http"), or(flags, "-"), or(l.ConnectionSecurityPolicy, "none"))
	return append(dst, extra...)
}

// Observe records one ended request, WebSocket or TCP connection. reporter
// is ReporterSource or ReporterDestination. A record observed with
// RequestProtocol "tcp" updates the istio_tcp_* byte counters and
// istio_tcp_connections_closed_total; any other updates the request metrics
// and, for a WebSocket, wsmesh_websocket_messages_total.
func (m *Metrics) Observe(rec *accesslog.Record, reporter string, labels Labels) {
	var buf [12]string
	if labels.RequestProtocol == "tcp" {
		v := labels.values(buf[:0], reporter, rec.ResponseFlags)
		m.tcpSent.WithLabelValues(v...).Add(float64(rec.BytesSent))
		m.tcpReceived.WithLabelValues(v...).Add(float64(rec.BytesReceived))
		m.tcpClosed.WithLabelValues(v...).Inc()
		return
	}
	v := labels.values(buf[:0], reporter, rec.ResponseFlags, codeString(rec.ResponseCode))
	m.requests.WithLabelValues(v...).Inc()
	m.requestDuration.WithLabelValues(v...).Observe(float64(rec.Duration.Nanoseconds()) / 1e6)
	m.requestBytes.WithLabelValues(v...).Observe(float64(rec.BytesReceived))
	m.responseBytes.WithLabelValues(v...).Observe(float64(rec.BytesSent))
	if ws := rec.WebSocket; ws != nil {
		m.wsMessages.WithLabelValues(reporter, "downstream").Add(float64(ws.MessagesDownstream))
		m.wsMessages.WithLabelValues(reporter, "upstream").Add(float64(ws.MessagesUpstream))
	}
}

// TCPOpened counts a TCP connection opened (istio_tcp_connections_opened_total).
// labels.RequestProtocol should be "tcp".
func (m *Metrics) TCPOpened(reporter string, labels Labels) {
	var buf [12]string
	m.tcpOpened.WithLabelValues(labels.values(buf[:0], reporter, "")...).Inc()
}

// WebSocketOpened increments wsmesh_websocket_active; pair it with
// WebSocketClosed.
func (m *Metrics) WebSocketOpened() { m.wsActive.Inc() }

// WebSocketClosed decrements wsmesh_websocket_active.
func (m *Metrics) WebSocketClosed() { m.wsActive.Dec() }

// H2ExtendedConnectFallback counts a WebSocket to endpoint (host:port) that
// fell back to HTTP/1.1 because the HTTP/2 connection did not allow extended
// CONNECT.
func (m *Metrics) H2ExtendedConnectFallback(endpoint string) {
	m.h2Fallback.WithLabelValues(endpoint).Inc()
}
