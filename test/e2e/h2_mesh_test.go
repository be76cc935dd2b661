package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// This file and the other h2_*.go files test the guide's section
// "Establish WebSocket connections over HTTP/2" on one machine: the
// DestinationRule websockets-server with h2UpgradePolicy UPGRADE and the
// EnvoyFilter h2-upgrade-wss, both verbatim from examples/http2, with the
// local-mode documents on free ports (meshYAML). The client sidecar carries
// each WebSocket to the server sidecar as an RFC 8441 extended CONNECT
// stream, many per TCP connection. The peers are wsmesh sidecars, HAProxy
// 2.6, or HTTP/2 servers and clients written in the test with
// golang.org/x/net/http2's Framer.

// h2EndpointStats and h2Stats are the admin /stats document.
type h2EndpointStats struct {
	Conns, ActiveStreams int
	StreamsOpened        uint64
}

type h2Stats struct {
	OpenConnections int `json:"open_connections"`
	H2Pool          struct {
		Dialed    uint64
		Endpoints map[string]h2EndpointStats
	} `json:"h2_pool"`
}

func (m *mesh) h2Stats(t testing.TB, side string) h2Stats {
	t.Helper()
	code, body, err := m.adminGet(side, "/stats")
	if err != nil || code != 200 {
		t.Fatalf("%s sidecar GET /stats: %d %v\n%s", side, code, err, body)
	}
	var s h2Stats
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("%s sidecar /stats: %v\n%s", side, err, body)
	}
	return s
}

// h2WaitStats polls /stats for up to timeout until ok accepts it.
func (m *mesh) h2WaitStats(t testing.TB, side string, timeout time.Duration, what string, ok func(h2Stats) bool) h2Stats {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := m.h2Stats(t, side)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sidecar /stats after %v: want %s, have %+v", side, timeout, what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// h2AdminPost posts to a sidecar's admin path.
func (m *mesh) h2AdminPost(t testing.TB, side, path string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post("http://"+m.admin[side]+path, "text/plain", nil)
	if err != nil {
		t.Fatalf("%s sidecar POST %s: %v", side, path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s sidecar POST %s: %d", side, path, resp.StatusCode)
	}
}

// pyH2Client is the client application for the HTTP/2 tests (Python
// websockets, compression and keepalive off). argv: PORT CASE ARGS...; it
// connects to 127.0.0.1:PORT with the guide's service name as Host.
//
//	many N K TRIGGER: open N WebSockets (/m/NNNN) at once, print "OPEN N",
//	  wait until the file TRIGGER exists ("-": don't), then on each send K
//	  messages back to back and read K, which must be the same in order;
//	  print "ECHOED <ok>", close all, print "CLOSED N [codes]" and
//	  "BYTES up down" (the same for every connection).
//	hold N: open N WebSockets (/h/NNN), echo one message on each, print
//	  "OPEN N", then wait until every one is closed by the other side and
//	  print "CLOSED N [codes]".
const pyH2Client = `
import asyncio, os, resource, sys
import websockets

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

HOST = "websockets-server.default.svc.cluster.local"
PORT = int(sys.argv[1])

def connect(path):
    return websockets.connect(f"ws://{HOST}:{PORT}{path}", host="127.0.0.1", port=PORT,
                              compression=None, ping_interval=None, max_size=None,
                              open_timeout=120, close_timeout=30)

def fsize(n, masked):
    return (2 if n < 126 else 4 if n < 65536 else 10) + (4 if masked else 0) + n

async def many(n, k, trigger):
    sem = asyncio.Semaphore(50)
    async def open_one(i):
        async with sem:
            return await connect(f"/m/{i:04d}")
    conns = await asyncio.gather(*(open_one(i) for i in range(n)))
    print("OPEN", len(conns), flush=True)
    if trigger != "-":
        while not os.path.exists(trigger):
            await asyncio.sleep(0.05)
    async def talk(i, ws):
        msgs = [f"msg-{i:04d}-{j:03d}" for j in range(k)]
        for m in msgs:
            await ws.send(m)
        got = []
        for _ in msgs:
            got.append(await asyncio.wait_for(ws.recv(), 120))
        return got == msgs or (msgs, got)
    res = await asyncio.gather(*(talk(i, ws) for i, ws in enumerate(conns)), return_exceptions=True)
    bad = [r for r in res if r is not True]
    print("ECHOED", len(res) - len(bad), flush=True)
    if bad:
        print("ERRORS", repr(bad[:3]), flush=True)
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    print("CLOSED", len(conns), sorted(set(ws.close_code for ws in conns)), flush=True)
    per = k * fsize(len("msg-0000-000"), True) + fsize(2, True)
    print("BYTES", per, k * fsize(len("msg-0000-000"), False) + fsize(2, False), flush=True)

async def hold(n):
    conns = await asyncio.gather(*(connect(f"/h/{i:03d}") for i in range(n)))
    for i, ws in enumerate(conns):
        await ws.send(f"hello-{i}")
        got = await asyncio.wait_for(ws.recv(), 60)
        assert got == f"hello-{i}", got
    print("OPEN", n, flush=True)
    async def end(ws):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed:
            pass
        return ws.close_code
    codes = await asyncio.wait_for(asyncio.gather(*(end(ws) for ws in conns)), 300)
    print("CLOSED", n, sorted(set(codes)), flush=True)

case = sys.argv[2]
if case == "many":
    asyncio.run(many(int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
elif case == "hold":
    asyncio.run(hold(int(sys.argv[3])))
else:
    sys.exit("unknown case " + case)
`

// h2Check collects mismatches of access-log fields.
type h2Check struct {
	errs []string
}

func (c *h2Check) eq(side string, rec map[string]any, key string, want any) {
	var got any
	switch want.(type) {
	case nil:
		got = rec[key]
	case int64:
		got = logNum(rec, key)
	case int:
		got, want = logNum(rec, key), int64(want.(int))
	default:
		got = logStr(rec, key)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		c.errs = append(c.errs, fmt.Sprintf("%s %s = %v, want %v", side, key, got, want))
	}
}

// closedBy checks websocket_closed_by where both peers sent a close frame:
// the relay observes each chunk before passing it on, so the initiator's
// close is always seen first.
func (c *h2Check) closedBy(t *testing.T, side string, rec map[string]any, want string) {
	t.Helper()
	c.eq(side, rec, "websocket_closed_by", want)
}

func (c *h2Check) report(t *testing.T, what string, lines ...map[string]any) {
	t.Helper()
	if len(c.errs) > 0 {
		t.Errorf("%s: access-log lines wrong:\n  %s\n%s", what, strings.Join(c.errs, "\n  "), dumpLogLines(lines))
	}
}

// TestH2GuideWebSocket: the guide's exchange over HTTP/2 between the
// sidecars. The client sidecar logs the app's HTTP/1.1 upgrade, the server
// sidecar the tunnel's HTTP/2 (method GET, 101 as the app answered: wsmesh
// logs the upgrade on both sides the same way).
func TestH2GuideWebSocket(t *testing.T) {
	m := newMesh(t, meshOptions{h2: true, allowConnect: true})
	code, body, err := m.adminGet("server", "/config_dump")
	if err != nil || code != 200 || !strings.Contains(body, `"allowed": true`) {
		t.Fatalf("server sidecar /config_dump: allow_connect not on: %d %v\n%.2000s", code, err, body)
	}

	out, c, s := pyEcho(t, m, 90*time.Second)
	hdrs := pyHeaders(t, out)
	up, down := pyBytes(t, out)
	var ck h2Check
	ck.eq("client", c, "protocol", "HTTP/1.1")
	ck.eq("server", s, "protocol", "HTTP/2")
	for side, rec := range map[string]map[string]any{"client": c, "server": s} {
		ck.eq(side, rec, "method", "GET")
		ck.eq(side, rec, "path", "/echo")
		ck.eq(side, rec, "response_code", 101)
		ck.eq(side, rec, "response_flags", "-")
		ck.eq(side, rec, "response_code_details", "via_upstream")
		ck.eq(side, rec, "route_name", "default")
		ck.eq(side, rec, "authority", m.authority())
		ck.eq(side, rec, "bytes_received", up)
		ck.eq(side, rec, "bytes_sent", down)
		ck.eq(side, rec, "websocket_frames_downstream", 9)
		ck.eq(side, rec, "websocket_messages_downstream", 8)
		ck.eq(side, rec, "websocket_frames_upstream", 9)
		ck.eq(side, rec, "websocket_messages_upstream", 8)
		ck.eq(side, rec, "websocket_close_code", 1000)
		ck.closedBy(t, side, rec, "downstream")
		if !strings.HasPrefix(logStr(rec, "user_agent"), "Python/3") {
			ck.errs = append(ck.errs, side+" user_agent "+logStr(rec, "user_agent"))
		}
	}
	ck.eq("client", c, "upstream_host", "127.0.0.1:"+strconv.Itoa(m.inboundPort))
	ck.eq("server", s, "upstream_host", "127.0.0.1:"+strconv.Itoa(m.appPort))
	ck.eq("client", c, "upstream_cluster", fmt.Sprintf("outbound|%d||%s", m.egressPort, meshHost))
	ck.eq("server", s, "upstream_cluster", fmt.Sprintf("inbound|%d||", m.appPort))
	ck.eq("server", s, "downstream_local_address", "127.0.0.1:"+strconv.Itoa(m.inboundPort))
	// The HTTP/2 connection seen from both ends, and the same request.
	ck.eq("server", s, "downstream_remote_address", logStr(c, "upstream_local_address"))
	ck.eq("server", s, "request_id", logStr(c, "request_id"))
	// Byte counts agree across the HTTP/2 hop.
	ck.eq("server", s, "bytes_received", logNum(c, "bytes_received"))
	ck.eq("server", s, "bytes_sent", logNum(c, "bytes_sent"))
	ck.report(t, "/echo", c, s)

	// What the application received: an HTTP/1.1 upgrade again.
	if hdrs["host"] != m.authority() || hdrs["x-request-id"] != logStr(c, "request_id") ||
		hdrs["upgrade"] != "websocket" || !strings.Contains(strings.ToLower(hdrs["connection"]), "upgrade") ||
		hdrs["sec-websocket-version"] != "13" {
		t.Errorf("headers the application received: %v (request_id %s)", hdrs, logStr(c, "request_id"))
	}

	st := m.h2Stats(t, "client")
	ep := st.H2Pool.Endpoints["127.0.0.1:"+strconv.Itoa(m.inboundPort)]
	if st.H2Pool.Dialed != 1 || ep.StreamsOpened != 1 {
		t.Errorf("client sidecar h2_pool: %+v, want one connection dialed and one stream opened", st.H2Pool)
	}

	// The guide's transcript, second WebSocket on the same HTTP/2 connection.
	url := strings.TrimSuffix(m.url(""), "/")
	checkGuidePiped(t, 60*time.Second, url, "--connect-to", m.authority()+"="+m.egress(), url)
	cl := m.waitLogLines(t, "client", 2)
	sl := m.waitLogLines(t, "server", 2)
	c, s = cl[1], sl[1]
	ck = h2Check{}
	ck.eq("client", c, "protocol", "HTTP/1.1")
	ck.eq("server", s, "protocol", "HTTP/2")
	ck.eq("server", s, "method", "GET")
	ck.eq("server", s, "response_code", 101)
	ck.eq("client", c, "response_code", 101)
	ck.eq("server", s, "websocket_messages_downstream", 2)
	ck.eq("server", s, "bytes_received", logNum(c, "bytes_received"))
	ck.eq("server", s, "bytes_sent", logNum(c, "bytes_sent"))
	ck.eq("server", s, "downstream_remote_address", logStr(c, "upstream_local_address"))
	ck.eq("client", c, "upstream_local_address", logStr(cl[0], "upstream_local_address")) // same TCP connection
	ck.report(t, "guide transcript", c, s)
	if st := m.h2Stats(t, "client"); st.H2Pool.Dialed != 1 {
		t.Errorf("client sidecar dialed %d HTTP/2 connections for two WebSockets, want 1", st.H2Pool.Dialed)
	}
	m.waitConnections(t, "client", 0)
	m.waitConnections(t, "server", 0)
}

// TestH2ThousandConcurrentWebSockets: 1,000 WebSockets open at once share
// a few HTTP/2 connections; every message comes back in order.
func TestH2ThousandConcurrentWebSockets(t *testing.T) {
	const n, k = 1000, 5
	m := newMesh(t, meshOptions{h2: true, allowConnect: true})
	trigger := filepath.Join(t.TempDir(), "go")
	py := startProcess(t, pythonBin, "-c", pyH2Client, strconv.Itoa(m.egressPort), "many", strconv.Itoa(n), strconv.Itoa(k), trigger)
	waitOutput(t, py, fmt.Sprintf("OPEN %d\n", n), 180*time.Second)

	// All open at once: one stream each, on a few TCP connections.
	ep := "127.0.0.1:" + strconv.Itoa(m.inboundPort)
	st := m.h2WaitStats(t, "client", 30*time.Second, fmt.Sprintf("%d open connections and active streams", n), func(s h2Stats) bool {
		return s.OpenConnections == n && s.H2Pool.Endpoints[ep].ActiveStreams == n
	})
	if st.H2Pool.Dialed < 1 || st.H2Pool.Dialed > 3 || st.H2Pool.Endpoints[ep].Conns > 3 {
		t.Errorf("%d WebSockets over %d dialed HTTP/2 connections (%d open), want 1 to 3", n, st.H2Pool.Dialed, st.H2Pool.Endpoints[ep].Conns)
	}
	t.Logf("client sidecar h2_pool with %d WebSockets open: %+v", n, st.H2Pool)
	if got := len(m.connections(t, "server")); got != n {
		t.Errorf("server sidecar has %d open connections, want %d", got, n)
	}
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := waitProcess(t, py, 240*time.Second); code != 0 {
		t.Fatalf("python client exit %d:\n%s", code, processOutput(py))
	}
	out := processOutput(py)
	if !strings.Contains(out, fmt.Sprintf("ECHOED %d\nCLOSED %d [1000]\n", n, n)) {
		t.Fatalf("python client:\n%s", out)
	}
	up, down := pyBytes(t, out)

	cl := logsByPath(t, "client", m.waitLogLines(t, "client", n))
	sl := logsByPath(t, "server", m.waitLogLines(t, "server", n))
	if len(cl) != n || len(sl) != n {
		t.Fatalf("access-log lines: client %d, server %d, want %d each", len(cl), len(sl), n)
	}
	ids := map[string]bool{}
	for i := range n {
		p := fmt.Sprintf("/m/%04d", i)
		c, s := cl[p], sl[p]
		if c == nil || s == nil {
			t.Fatalf("%s: missing line: client %v server %v", p, c, s)
		}
		var ck h2Check
		ck.eq("client", c, "protocol", "HTTP/1.1")
		ck.eq("server", s, "protocol", "HTTP/2")
		for side, rec := range map[string]map[string]any{"client": c, "server": s} {
			ck.eq(side, rec, "method", "GET")
			ck.eq(side, rec, "response_code", 101)
			ck.eq(side, rec, "response_flags", "-")
			ck.eq(side, rec, "bytes_received", up)
			ck.eq(side, rec, "bytes_sent", down)
			ck.eq(side, rec, "websocket_messages_downstream", k)
			ck.eq(side, rec, "websocket_messages_upstream", k)
			ck.eq(side, rec, "websocket_close_code", 1000)
		}
		ck.eq("client", c, "response_code_details", "via_upstream")
		ck.eq("server", s, "request_id", logStr(c, "request_id"))
		ck.eq("server", s, "downstream_remote_address", logStr(c, "upstream_local_address"))
		ck.report(t, p, c, s)
		if t.Failed() {
			t.FailNow() // one report is enough
		}
		ids[logStr(c, "request_id")] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct request ids for %d WebSockets", len(ids), n)
	}
	m.waitConnections(t, "client", 0)
	m.waitConnections(t, "server", 0)
	if st := m.h2Stats(t, "client"); st.H2Pool.Endpoints[ep].ActiveStreams != 0 || st.H2Pool.Endpoints[ep].StreamsOpened != n {
		t.Errorf("client sidecar h2_pool after closing: %+v, want 0 active and %d opened streams", st.H2Pool, n)
	}
}
