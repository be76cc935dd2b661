package accesslog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

var istioKeys = []string{
	"start_time", "route_name", "method", "path", "protocol", "response_code",
	"response_flags", "response_code_details", "connection_termination_details",
	"upstream_transport_failure_reason", "bytes_received", "bytes_sent",
	"duration", "upstream_service_time", "x_forwarded_for", "user_agent",
	"request_id", "authority", "upstream_host", "upstream_cluster",
	"upstream_local_address", "downstream_local_address",
	"downstream_remote_address", "requested_server_name",
}

var wsKeys = []string{
	"websocket_subprotocol", "websocket_extensions", "websocket_frames_downstream",
	"websocket_messages_downstream", "websocket_frames_upstream",
	"websocket_messages_upstream", "websocket_close_code",
	"websocket_close_reason", "websocket_closed_by",
}

func sampleRecord() *Record {
	return &Record{
		StartTime:               time.Date(2026, 11, 24, 12, 23, 12, 345678901, time.FixedZone("CET", 3600)),
		RouteName:               "default",
		Method:                  "GET",
		Path:                    "/chat?room=1",
		Protocol:                "HTTP/1.1",
		ResponseCode:            101,
		ResponseCodeDetails:     "via_upstream",
		BytesReceived:           23,
		BytesSent:               42,
		Duration:                1500*time.Millisecond + 999*time.Microsecond,
		UpstreamServiceTime:     3 * time.Millisecond,
		UserAgent:               "Python/3.9 websockets/10.4",
		RequestID:               "5f1c6c0e-7d0a-4b0e-9d8e-1f2a3b4c5d6e",
		Authority:               "websockets-server.default.svc.cluster.local:8080",
		UpstreamHost:            "10.208.0.105:80",
		UpstreamCluster:         "outbound|8080||websockets-server.default.svc.cluster.local",
		UpstreamLocalAddress:    "10.208.0.104:53983",
		DownstreamLocalAddress:  "10.1.2.3:8080",
		DownstreamRemoteAddress: "10.208.0.104:40000",
	}
}

func TestAppendJSONGolden(t *testing.T) {
	got := string(AppendJSON(nil, sampleRecord()))
	want := `{"start_time":"2026-11-24T11:23:12.345Z","route_name":"default","method":"GET","path":"/chat?room=1","protocol":"HTTP/1.1","response_code":101,"response_flags":"-","response_code_details":"via_upstream","connection_termination_details":null,"upstream_transport_failure_reason":null,"bytes_received":23,"bytes_sent":42,"duration":1500,"upstream_service_time":"3","x_forwarded_for":null,"user_agent":"Python/3.9 websockets/10.4","request_id":"5f1c6c0e-7d0a-4b0e-9d8e-1f2a3b4c5d6e","authority":"websockets-server.default.svc.cluster.local:8080","upstream_host":"10.208.0.105:80","upstream_cluster":"outbound|8080||websockets-server.default.svc.cluster.local","upstream_local_address":"10.208.0.104:53983","downstream_local_address":"10.1.2.3:8080","downstream_remote_address":"10.208.0.104:40000","requested_server_name":null}` + "\n"
	if got != want {
		t.Fatalf("line mismatch\n got: %s\nwant: %s", got, want)
	}
}

// keysInOrder decodes one JSON object and returns its keys in order, failing
// the test if the line is not valid JSON.
func keysInOrder(t *testing.T, line []byte) ([]string, map[string]any) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("invalid JSON %q: %v", line, err)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys, m
}

func TestKeyOrderAndNulls(t *testing.T) {
	keys, m := keysInOrder(t, AppendJSON(nil, &Record{UpstreamServiceTime: -1}))
	if strings.Join(keys, ",") != strings.Join(istioKeys, ",") {
		t.Fatalf("keys = %v", keys)
	}
	for _, k := range []string{"start_time", "route_name", "path", "upstream_service_time", "requested_server_name"} {
		if m[k] != nil {
			t.Errorf("%s = %v, want null", k, m[k])
		}
	}
	if m["response_flags"] != "-" || m["response_code"] != float64(0) || m["duration"] != float64(0) {
		t.Errorf("defaults wrong: %v", m)
	}

	r := sampleRecord()
	r.ResponseFlags = (UpstreamConnectionFailure | UpstreamRetryLimitExceeded).String()
	r.WebSocket = &WebSocket{
		Subprotocol: "chat", FramesDownstream: 5, MessagesDownstream: 3,
		FramesUpstream: 4, MessagesUpstream: 2, CloseCode: 1000, CloseReason: "bye",
		ClosedBy: "downstream",
	}
	keys, m = keysInOrder(t, AppendJSON(nil, r))
	if strings.Join(keys, ",") != strings.Join(append(istioKeys[:len(istioKeys):len(istioKeys)], wsKeys...), ",") {
		t.Fatalf("keys = %v", keys)
	}
	if m["response_flags"] != "UF,URX" || m["websocket_close_code"] != float64(1000) ||
		m["websocket_extensions"] != nil || m["websocket_messages_upstream"] != float64(2) {
		t.Errorf("websocket values wrong: %v", m)
	}
	r.WebSocket = &WebSocket{}
	_, m = keysInOrder(t, AppendJSON(nil, r))
	if v, ok := m["websocket_close_code"]; !ok || v != nil {
		t.Errorf("close code 0 should be null, got %v", v)
	}

	b, err := json.Marshal(r)
	if err != nil || bytes.HasSuffix(b, []byte("\n")) || !json.Valid(b) {
		t.Fatalf("MarshalJSON: %q %v", b, err)
	}
}

func stdQuote(t testing.TB, s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

var quoteCases = []string{
	"", "plain", `quote"back\slash`, "ctl\x00\x01\x1f\x7f", "\b\f\n\r\t",
	"<script>&amp;</script>", "héllo wörld ✓ 😀", "\u2028\u2029", "bad\xffutf8\xc3",
	"\xed\xa0\x80surrogate", "trailing\xe2\x82", "\ufffd",
}

func TestAppendQuotedMatchesEncodingJSON(t *testing.T) {
	for _, s := range quoteCases {
		if got, want := string(AppendQuoted(nil, s)), stdQuote(t, s); got != want {
			t.Errorf("AppendQuoted(%q) = %s, want %s", s, got, want)
		}
	}
}

func FuzzAppendQuoted(f *testing.F) {
	for _, s := range quoteCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, want := string(AppendQuoted(nil, s)), stdQuote(t, s)
		if got != want {
			t.Fatalf("AppendQuoted(%q) = %s, want %s", s, got, want)
		}
		r := &Record{Path: s, UserAgent: s, WebSocket: &WebSocket{CloseReason: s}}
		if line := AppendJSON(nil, r); !json.Valid(line) {
			t.Fatalf("invalid line %q", line)
		}
	})
}

// countingWriter records each Write call separately.
type countingWriter struct {
	mu     sync.Mutex
	writes [][]byte
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes = append(w.writes, append([]byte(nil), p...))
	w.mu.Unlock()
	return len(p), nil
}

func TestLoggerConcurrentOneWritePerLine(t *testing.T) {
	w := &countingWriter{}
	l := New(w)
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			r := sampleRecord()
			r.BytesSent = int64(g)
			for range each {
				l.Log(r)
			}
		})
	}
	wg.Wait()
	if len(w.writes) != goroutines*each || l.Lines() != goroutines*each || l.Errors() != 0 {
		t.Fatalf("writes=%d lines=%d errors=%d", len(w.writes), l.Lines(), l.Errors())
	}
	for _, p := range w.writes {
		if bytes.Count(p, []byte("\n")) != 1 || !json.Valid(p) {
			t.Fatalf("bad write %q", p)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Log(sampleRecord())
	if l.Errors() != 1 {
		t.Fatalf("log after close: errors=%d", l.Errors())
	}
}

func TestOpenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	for range 2 { // second Open appends
		l, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		l.Log(sampleRecord())
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); n++ {
		if !json.Valid(sc.Bytes()) {
			t.Fatalf("bad line %q", sc.Text())
		}
	}
	if n != 2 {
		t.Fatalf("lines = %d, want 2", n)
	}
	for _, p := range []string{"", "-", "/dev/stdout"} {
		l, err := Open(p)
		if err != nil || l.w != os.Stdout {
			t.Fatalf("Open(%q) = %v, %v", p, l, err)
		}
		if err := l.Close(); err != nil { // must not close stdout
			t.Fatal(err)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing", "x.log")); err == nil {
		t.Fatal("Open in missing directory succeeded")
	}
}

func TestFlags(t *testing.T) {
	if s := Flags(0).String(); s != "-" {
		t.Fatalf("empty = %q", s)
	}
	all := Flags(1<<flagCount - 1)
	want := "LH,UH,UT,LR,UR,UF,UC,UO,NR,DI,FI,RL,UAEX,RLSE,DC,URX,SI,IH,DPE,UMSDR,RFCF,NFCF,DT,UPE,NC,OM,DF,DO,DR,UDO"
	if s := all.String(); s != want {
		t.Fatalf("all = %q", s)
	}
	f := UpstreamRetryLimitExceeded | UpstreamConnectionFailure | NoHealthyUpstream
	if s := f.String(); s != "UH,UF,URX" {
		t.Fatalf("String = %q", s)
	}
	for _, in := range []Flags{0, f, all, DownstreamConnectionTermination} {
		got, err := ParseFlags(in.String())
		if err != nil || got != in {
			t.Fatalf("ParseFlags(%q) = %v, %v", in.String(), got, err)
		}
	}
	if _, err := ParseFlags("UF,XX"); err == nil {
		t.Fatal("ParseFlags accepted XX")
	}
	if !f.Has(UpstreamConnectionFailure|NoHealthyUpstream) || f.Has(NoRouteFound) {
		t.Fatal("Has wrong")
	}
}

func TestAppendJSONNoAlloc(t *testing.T) {
	r := sampleRecord()
	r.WebSocket = &WebSocket{CloseCode: 1001, CloseReason: "going away"}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = AppendJSON(buf[:0], r) }); n != 0 {
		t.Fatalf("AppendJSON allocs = %v", n)
	}
	l := New(discard{})
	l.Log(r)
	if n := testing.AllocsPerRun(100, func() { l.Log(r) }); n != 0 {
		t.Fatalf("Log allocs = %v", n)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func BenchmarkAppendJSON(b *testing.B) {
	r := sampleRecord()
	r.WebSocket = &WebSocket{FramesDownstream: 10, MessagesDownstream: 10, CloseCode: 1000}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendJSON(buf[:0], r)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkEncodingJSONBaseline(b *testing.B) {
	r := sampleRecord()
	var m map[string]any
	if err := json.Unmarshal(AppendJSON(nil, r), &m); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = json.Marshal(m)
	}
}

func BenchmarkLoggerParallel(b *testing.B) {
	l := New(discard{})
	r := sampleRecord()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Log(r)
		}
	})
}

// TestRecordSize keeps a record within its allocation size class: a
// sidecar holds one per open WebSocket until it ends.
func TestRecordSize(t *testing.T) {
	if got, limit := unsafe.Sizeof(Record{}), uintptr(352); got > limit {
		t.Errorf("Record is %d bytes, over its %d-byte budget", got, limit)
	}
}
