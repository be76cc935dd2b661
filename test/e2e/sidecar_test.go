package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file tests the guide's section "Establish WebSocket connections over
// HTTP/1.1" on one machine: the Python websockets client, the client's
// sidecar, the server's sidecar and the Python websockets server, with both
// sidecars' access-log lines checked field by field.

// pyMeshServer is the guide's websockets-server application: a Python
// websockets echo server. argv: PORT. Messages "close CODE REASON" make it
// close the connection; "headers" returns the handshake request headers as
// JSON; "stream COUNT SIZE" makes it send COUNT binary messages of SIZE
// bytes, each starting with its 8-byte big-endian index, printing "SENT k"
// (k messages handed to the socket) every 16 messages and "STREAM DONE" at
// the end. It prints "READY" once listening and raises its file limit for
// many connections.
const pyMeshServer = `
import asyncio, json, resource, sys
import websockets

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

async def handler(ws, path):
    try:
        async for msg in ws:
            if isinstance(msg, str) and msg.startswith("close "):
                _, code, reason = (msg + " ").split(" ", 2)
                await ws.close(int(code), reason.strip())
            elif isinstance(msg, str) and msg.startswith("stream "):
                _, count, size = msg.split()
                count, size = int(count), int(size)
                pad = bytes(size - 8)
                for k in range(count):
                    await ws.send(k.to_bytes(8, "big") + pad)
                    if (k + 1) % 16 == 0:
                        print("SENT", k + 1, flush=True)
                print("STREAM DONE", flush=True)
            elif msg == "headers":
                await ws.send(json.dumps({k.lower(): v for k, v in ws.request_headers.raw_items()}))
            else:
                await ws.send(msg)
    except websockets.ConnectionClosed:
        pass

async def main():
    async with websockets.serve(handler, "127.0.0.1", int(sys.argv[1]), max_size=None,
                                ping_interval=None, backlog=4096):
        print("READY", flush=True)
        await asyncio.Future()

asyncio.run(main())
`

// pyMeshClient is the guide's client application: the Python websockets
// client connecting to ws://websockets-server.default.svc.cluster.local:PORT
// through the client sidecar's egress port (the host name is not resolved:
// host= and port= go to create_connection). Compression and keepalive pings
// are off so that byte and frame counts are exact. argv: PORT CASE ARGS...
// It prints "BYTES up down" with the exact number of bytes it wrote and read
// after the handshake, computed from the frames.
const pyMeshClient = `
import asyncio, json, os, resource, sys
import websockets

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

HOST = "websockets-server.default.svc.cluster.local"
PORT = int(sys.argv[1])

def connect(path="/", **kw):
    kw.setdefault("compression", None)
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", None)
    kw.setdefault("open_timeout", 60)
    return websockets.connect(f"ws://{HOST}:{PORT}{path}", host="127.0.0.1", port=PORT, **kw)

def fsize(n, masked):
    # size of one unfragmented frame with an n-byte payload
    return (2 if n < 126 else 4 if n < 65536 else 10) + (4 if masked else 0) + n

def plen(m):
    return len(m.encode()) if isinstance(m, str) else len(m)

class Counter:
    def __init__(self):
        self.up = self.down = 0
    async def echo(self, ws, m):
        await ws.send(m)
        self.up += fsize(plen(m), True)
        r = await ws.recv()
        self.down += fsize(plen(r), False)
        return r
    async def echo_all(self, ws, msgs):
        for m in msgs:
            r = await self.echo(ws, m)
            print(type(r).__name__, plen(r), r == m)
    def closed(self, ws):
        # the client's close frame (a code, no reason) and the server's answer
        self.up += fsize(2, True)
        self.down += fsize(2, False)
        print("CLOSED", ws.close_code)
        print("BYTES", self.up, self.down)

async def echo_case():
    c = Counter()
    async with connect("/echo") as ws:
        hdrs = json.loads(await c.echo(ws, "headers"))
        print("HEADERS", json.dumps(hdrs, sort_keys=True))
        await c.echo_all(ws, ["hello", "", "h\u00e9llo \u2713", b"\x00\x01\xfe\xff", b"", "x" * 200, b"y" * 70000])
    c.closed(ws)

async def large_case():
    c = Counter()
    async with connect("/large") as ws:
        await c.echo_all(ws, [bytes(range(256)) * 65536, "t" * (16 << 20)])
    c.closed(ws)

async def many_case(n):
    sem = asyncio.Semaphore(100)
    async def open_one(i):
        async with sem:
            return await connect(f"/c/{i:04d}")
    conns = await asyncio.gather(*(open_one(i) for i in range(n)))
    print("OPEN", len(conns), flush=True)
    counters = [Counter() for _ in conns]
    async def talk(i, ws):
        c = counters[i]
        ok = await c.echo(ws, f"text-{i:04d}") == f"text-{i:04d}"
        b = i.to_bytes(4, "big") * 8
        ok = ok and await c.echo(ws, b) == b
        c.up += fsize(2, True)
        c.down += fsize(2, False)
        return ok
    oks = await asyncio.gather(*(talk(i, ws) for i, ws in enumerate(conns)))
    await asyncio.gather(*(ws.close() for ws in conns))
    print("ECHOED", sum(oks))
    print("CLOSED", len(conns), sorted(set(ws.close_code for ws in conns)))
    pairs = sorted(set((c.up, c.down) for c in counters))
    if len(pairs) == 1:
        print("BYTES", *pairs[0])
    else:
        print("BYTES DIFFER", pairs)

async def rounds(conns, k):
    async def one(i, ws):
        m = f"round-{k}-{i:03d}"
        await ws.send(m)
        return await asyncio.wait_for(ws.recv(), 10) == m
    res = await asyncio.gather(*(one(i, ws) for i, ws in enumerate(conns)), return_exceptions=True)
    return sum(1 for r in res if r is True)

async def hold_case(n, trigger):
    conns = await asyncio.gather(*(connect(f"/h/{i:03d}") for i in range(n)))
    print("ROUND 0", await rounds(conns, 0), flush=True)
    k = 1
    while True:
        path = f"{trigger}.{k}"
        while not os.path.exists(path):
            await asyncio.sleep(0.02)
        if open(path).read().strip() == "close":
            break
        print("ROUND", k, await rounds(conns, k), flush=True)
        k += 1
    print("OPEN BEFORE CLOSE", sum(1 for ws in conns if ws.open))
    await asyncio.gather(*(ws.close() for ws in conns))
    print("CLOSED", sorted(set(ws.close_code for ws in conns)), flush=True)

async def server_close_case(code, reason):
    c = Counter()
    async with connect(f"/sc/{code}") as ws:
        print("ECHO", await c.echo(ws, "hello"))
        cmd = f"close {code} {reason}"
        await ws.send(cmd)
        c.up += fsize(plen(cmd), True)
        try:
            await ws.recv()
            print("UNEXPECTED MESSAGE")
        except websockets.ConnectionClosed as e:
            pass
        await ws.wait_closed()
        print("CLOSED", ws.close_code, repr(ws.close_reason))
    # the server's close frame and the client's echo of it
    n = 2 + len(reason.encode())
    c.down += fsize(n, False)
    c.up += fsize(n, True)
    print("BYTES", c.up, c.down)

async def status_case(path):
    try:
        ws = await connect(path)
    except websockets.InvalidStatusCode as e:
        print("STATUS", e.status_code)
        return
    print("OPEN")
    await ws.close()

async def open_wait_case():
    ws = await connect("/vanish")
    await ws.send("hi")
    print("ECHO", await ws.recv())
    print("OPEN", flush=True)
    await asyncio.sleep(3600)

case = sys.argv[2]
if case == "echo":
    asyncio.run(echo_case())
elif case == "large":
    asyncio.run(large_case())
elif case == "many":
    asyncio.run(many_case(int(sys.argv[3])))
elif case == "hold":
    asyncio.run(hold_case(int(sys.argv[3]), sys.argv[4]))
elif case == "server-close":
    asyncio.run(server_close_case(int(sys.argv[3]), sys.argv[4]))
elif case == "status":
    asyncio.run(status_case(sys.argv[3]))
elif case == "open-wait":
    asyncio.run(open_wait_case())
`

// pyEchoOutput is what pyMeshClient's echo case prints when every message
// comes back unchanged and the WebSocket closes with 1000.
const pyEchoOutput = "str 5 True\nstr 0 True\nstr 10 True\nbytes 4 True\nbytes 0 True\nstr 200 True\nbytes 70000 True\nCLOSED 1000\n"

// pyEcho runs pyMeshClient's echo case through the mesh, checks that every
// message came back, and returns what the client printed and the one
// access-log line each sidecar wrote for it.
func pyEcho(t *testing.T, m *mesh, timeout time.Duration) (out string, cli, srv map[string]any) {
	t.Helper()
	out = runPyClient(t, m, timeout, "echo")
	if !strings.Contains(out, pyEchoOutput) {
		t.Fatalf("echo through the mesh:\n%s\nwant:\n%s", out, pyEchoOutput)
	}
	cl := m.waitLogLines(t, "client", 1)
	sl := m.waitLogLines(t, "server", 1)
	if len(cl) != 1 || len(sl) != 1 {
		t.Fatalf("want one line per side:\nclient:\n%s\nserver:\n%s", dumpLogLines(cl), dumpLogLines(sl))
	}
	return out, cl[0], sl[0]
}

// runPyClient runs pyMeshClient to completion and fails on a non-zero exit.
func runPyClient(t *testing.T, m *mesh, timeout time.Duration, args ...string) string {
	t.Helper()
	res := runProcess(t, "", timeout, append([]string{pythonBin, "-c", pyMeshClient, strconv.Itoa(m.egressPort)}, args...)...)
	if res.ExitCode != 0 {
		t.Fatalf("python client %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, res.ExitCode, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

// pyBytes returns the "BYTES up down" numbers printed by pyMeshClient.
func pyBytes(t *testing.T, out string) (up, down int64) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "BYTES" {
			up, _ = strconv.ParseInt(f[1], 10, 64)
			down, _ = strconv.ParseInt(f[2], 10, 64)
			return up, down
		}
	}
	t.Fatalf("no BYTES line in client output:\n%s", out)
	return 0, 0
}

// pyHeaders returns the handshake request headers the application received,
// as pyMeshClient's echo case prints them (its "HEADERS" line).
func pyHeaders(t *testing.T, out string) map[string]string {
	t.Helper()
	var hdrs map[string]string
	for _, line := range strings.Split(out, "\n") {
		if j, ok := strings.CutPrefix(line, "HEADERS "); ok {
			if err := json.Unmarshal([]byte(j), &hdrs); err != nil {
				t.Fatal(err)
			}
		}
	}
	return hdrs
}

// wsExpect is what a WebSocket's access-log lines must say.
type wsExpect struct {
	path                 string
	up, down             int64 // bytes after the handshake; -1: don't check (both sides must still agree)
	framesDown, msgsDown int64
	framesUp, msgsUp     int64
	closeCode            int64 // -1: null
	closeReason          string
	closedBy             string
	flags                string
	userAgent            string // prefix
	extensions           string // websocket_extensions; "" null, "*" anything (the same on both sides)
}

// logsByPath indexes access-log lines by path; a path seen twice fails.
func logsByPath(t *testing.T, side string, lines []map[string]any) map[string]map[string]any {
	t.Helper()
	out := make(map[string]map[string]any, len(lines))
	for _, l := range lines {
		p := logStr(l, "path")
		if _, dup := out[p]; dup {
			t.Fatalf("%s access log has two lines for path %q:\n%s", side, p, dumpLogLines(lines))
		}
		out[p] = l
	}
	return out
}

// checkWebSocketLines checks the client sidecar's and the server sidecar's
// access-log lines of one WebSocket field by field.
func checkWebSocketLines(t *testing.T, m *mesh, cli, srv map[string]any, e wsExpect) {
	t.Helper()
	if cli == nil || srv == nil {
		t.Fatalf("%s: missing access-log line: client %v, server %v", e.path, cli, srv)
	}
	now := time.Now()
	var errs []string
	expect := func(side string, rec map[string]any, key string, want any) {
		var got any
		switch want.(type) {
		case int64:
			got = logNum(rec, key)
		case nil:
			if v := rec[key]; v != nil {
				got = v
			}
		default:
			got = logStr(rec, key)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			errs = append(errs, fmt.Sprintf("%s %s = %v, want %v", side, key, got, want))
		}
	}
	for _, side := range []string{"client", "server"} {
		rec := cli
		if side == "server" {
			rec = srv
		}
		// Every key of Istio's default format plus the WebSocket keys is present.
		for _, k := range []string{"start_time", "route_name", "method", "path", "protocol", "response_code",
			"response_flags", "response_code_details", "connection_termination_details",
			"upstream_transport_failure_reason", "bytes_received", "bytes_sent", "duration",
			"upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority",
			"upstream_host", "upstream_cluster", "upstream_local_address", "downstream_local_address",
			"downstream_remote_address", "requested_server_name", "websocket_subprotocol",
			"websocket_extensions", "websocket_frames_downstream", "websocket_messages_downstream",
			"websocket_frames_upstream", "websocket_messages_upstream", "websocket_close_code",
			"websocket_close_reason", "websocket_closed_by"} {
			if _, ok := rec[k]; !ok {
				errs = append(errs, fmt.Sprintf("%s line lacks key %q", side, k))
			}
		}
		st, err := time.Parse(time.RFC3339Nano, logStr(rec, "start_time"))
		if err != nil || st.Before(m.started.Add(-time.Second)) || st.After(now) {
			errs = append(errs, fmt.Sprintf("%s start_time %q not within the test (%v)", side, logStr(rec, "start_time"), err))
		}
		expect(side, rec, "route_name", "default")
		expect(side, rec, "method", "GET")
		expect(side, rec, "path", e.path)
		expect(side, rec, "protocol", "HTTP/1.1")
		expect(side, rec, "response_code", int64(101))
		expect(side, rec, "response_flags", e.flags)
		expect(side, rec, "response_code_details", "via_upstream")
		expect(side, rec, "upstream_transport_failure_reason", nil)
		expect(side, rec, "authority", m.authority())
		expect(side, rec, "requested_server_name", nil)
		expect(side, rec, "websocket_subprotocol", nil)
		switch e.extensions {
		case "":
			expect(side, rec, "websocket_extensions", nil)
		case "*":
			expect(side, rec, "websocket_extensions", logStr(cli, "websocket_extensions"))
		default:
			expect(side, rec, "websocket_extensions", e.extensions)
		}
		if e.up >= 0 {
			expect(side, rec, "bytes_received", e.up)
			expect(side, rec, "bytes_sent", e.down)
		}
		expect(side, rec, "websocket_frames_downstream", e.framesDown)
		expect(side, rec, "websocket_messages_downstream", e.msgsDown)
		expect(side, rec, "websocket_frames_upstream", e.framesUp)
		expect(side, rec, "websocket_messages_upstream", e.msgsUp)
		if e.closeCode < 0 {
			expect(side, rec, "websocket_close_code", nil)
		} else {
			expect(side, rec, "websocket_close_code", e.closeCode)
		}
		if e.closeReason == "" {
			expect(side, rec, "websocket_close_reason", nil)
		} else {
			expect(side, rec, "websocket_close_reason", e.closeReason)
		}
		expect(side, rec, "websocket_closed_by", e.closedBy)
		if !strings.HasPrefix(logStr(rec, "user_agent"), e.userAgent) {
			errs = append(errs, fmt.Sprintf("%s user_agent %q, want prefix %q", side, logStr(rec, "user_agent"), e.userAgent))
		}
		d, ust := logNum(rec, "duration"), logNum(rec, "upstream_service_time")
		if d < 0 || d > now.Sub(m.started).Milliseconds()+1 {
			errs = append(errs, fmt.Sprintf("%s duration %d ms implausible (test running for %v)", side, d, now.Sub(m.started)))
		}
		if ust < 0 || ust > d {
			errs = append(errs, fmt.Sprintf("%s upstream_service_time %d not within duration %d", side, ust, d))
		}
		if !strings.HasPrefix(logStr(rec, "x_forwarded_for"), "127.0.0.1") {
			errs = append(errs, fmt.Sprintf("%s x_forwarded_for %q", side, logStr(rec, "x_forwarded_for")))
		}
		if !strings.HasPrefix(logStr(rec, "upstream_local_address"), "127.0.0.1:") {
			errs = append(errs, fmt.Sprintf("%s upstream_local_address %q", side, logStr(rec, "upstream_local_address")))
		}
		if !strings.HasPrefix(logStr(rec, "downstream_remote_address"), "127.0.0.1:") {
			errs = append(errs, fmt.Sprintf("%s downstream_remote_address %q", side, logStr(rec, "downstream_remote_address")))
		}
	}
	expect("client", cli, "upstream_host", "127.0.0.1:"+strconv.Itoa(m.inboundPort))
	expect("server", srv, "upstream_host", "127.0.0.1:"+strconv.Itoa(m.appPort))
	expect("client", cli, "upstream_cluster", fmt.Sprintf("outbound|%d||%s", m.egressPort, meshHost))
	expect("server", srv, "upstream_cluster", fmt.Sprintf("inbound|%d||", m.appPort))
	expect("client", cli, "downstream_local_address", "127.0.0.1:"+strconv.Itoa(m.egressPort))
	expect("server", srv, "downstream_local_address", "127.0.0.1:"+strconv.Itoa(m.inboundPort))
	// The same connection seen from both ends, the same request.
	expect("server", srv, "downstream_remote_address", logStr(cli, "upstream_local_address"))
	expect("server", srv, "request_id", logStr(cli, "request_id"))
	if logStr(cli, "request_id") == "" {
		errs = append(errs, "client request_id is empty")
	}
	expect("server", srv, "bytes_received", logNum(cli, "bytes_received"))
	expect("server", srv, "bytes_sent", logNum(cli, "bytes_sent"))
	if len(errs) > 0 {
		t.Errorf("%s: access-log lines wrong:\n  %s\nclient: %s\nserver: %s", e.path, strings.Join(errs, "\n  "),
			dumpLogLines([]map[string]any{cli}), dumpLogLines([]map[string]any{srv}))
	}
}

func TestSidecarWebSocketEcho(t *testing.T) {
	m := newMesh(t, meshOptions{})

	out, cli, srv := pyEcho(t, m, 60*time.Second)
	// What the application received: the sidecars' forwarding headers.
	hdrs := pyHeaders(t, out)
	up, down := pyBytes(t, out)
	checkWebSocketLines(t, m, cli, srv, wsExpect{
		path: "/echo", up: up, down: down,
		framesDown: 9, msgsDown: 8, framesUp: 9, msgsUp: 8,
		closeCode: 1000, closedBy: "downstream", flags: "-", userAgent: "Python/3",
	})
	if hdrs["host"] != m.authority() || hdrs["x-request-id"] != logStr(cli, "request_id") ||
		hdrs["upgrade"] != "websocket" || !strings.Contains(strings.ToLower(hdrs["connection"]), "upgrade") {
		t.Errorf("headers the application received: %v (request_id %s)", hdrs, logStr(cli, "request_id"))
	}

	t.Run("16MiB", func(t *testing.T) {
		out := runPyClient(t, m, 120*time.Second, "large")
		want := "bytes 16777216 True\nstr 16777216 True\nCLOSED 1000\n"
		if !strings.Contains(out, want) {
			t.Fatalf("16 MiB echo:\n%s\nwant:\n%s", out, want)
		}
		up, down := pyBytes(t, out)
		if up <= 32<<20 || down <= 32<<20 {
			t.Fatalf("BYTES %d %d", up, down)
		}
		cli := logsByPath(t, "client", m.waitLogLines(t, "client", 2))
		srv := logsByPath(t, "server", m.waitLogLines(t, "server", 2))
		checkWebSocketLines(t, m, cli["/large"], srv["/large"], wsExpect{
			path: "/large", up: up, down: down,
			framesDown: 3, msgsDown: 2, framesUp: 3, msgsUp: 2,
			closeCode: 1000, closedBy: "downstream", flags: "-", userAgent: "Python/3",
		})
	})

	// Nothing stays open.
	m.waitConnections(t, "client", 0)
	m.waitConnections(t, "server", 0)
}

func TestSidecarThousandConcurrentWebSockets(t *testing.T) {
	const n = 1000
	m := newMesh(t, meshOptions{})
	py := startProcess(t, pythonBin, "-c", pyMeshClient, strconv.Itoa(m.egressPort), "many", strconv.Itoa(n))
	waitOutput(t, py, fmt.Sprintf("OPEN %d\n", n), 90*time.Second)
	if code := waitProcess(t, py, 90*time.Second); code != 0 {
		t.Fatalf("python client exit %d:\n%s", code, processOutput(py))
	}
	out := processOutput(py)
	if !strings.Contains(out, fmt.Sprintf("ECHOED %d\nCLOSED %d [1000]\n", n, n)) {
		t.Fatalf("python client:\n%s", out)
	}
	up, down := pyBytes(t, out) // every connection wrote and read the same

	cli := logsByPath(t, "client", m.waitLogLines(t, "client", n))
	srv := logsByPath(t, "server", m.waitLogLines(t, "server", n))
	if len(cli) != n || len(srv) != n {
		t.Fatalf("access-log lines: client %d, server %d, want %d", len(cli), len(srv), n)
	}
	ids := map[string]bool{}
	for i := range n {
		p := fmt.Sprintf("/c/%04d", i)
		checkWebSocketLines(t, m, cli[p], srv[p], wsExpect{
			path: p, up: up, down: down,
			framesDown: 3, msgsDown: 2, framesUp: 3, msgsUp: 2,
			closeCode: 1000, closedBy: "downstream", flags: "-", userAgent: "Python/3",
		})
		if t.Failed() {
			t.FailNow() // one connection's report is enough
		}
		ids[logStr(cli[p], "request_id")] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct request ids for %d WebSockets", len(ids), n)
	}
	m.waitConnections(t, "client", 0)
	m.waitConnections(t, "server", 0)
}

// TestSidecarGuideTranscript plays the guide's client session through both
// sidecars: wsmesh client piped and on a terminal, and python3 -m websockets
// on a terminal (with the service name resolved to 127.0.0.1 in-process, as
// the cluster's DNS would).
func TestSidecarGuideTranscript(t *testing.T) {
	m := newMesh(t, meshOptions{})
	url := m.url("") // ws://websockets-server.default.svc.cluster.local:PORT/
	url = strings.TrimSuffix(url, "/")
	connectTo := m.authority() + "=" + m.egress()

	t.Run("wsmesh client piped", func(t *testing.T) {
		checkGuidePiped(t, 30*time.Second, url, "--connect-to", connectTo, url)
		cli := m.waitLogLines(t, "client", 1)
		srv := m.waitLogLines(t, "server", 1)
		c, s := cli[len(cli)-1], srv[len(srv)-1]
		checkWebSocketLines(t, m, c, s, wsExpect{
			path: "/", up: -1, framesDown: 3, msgsDown: 2, framesUp: 3, msgsUp: 2,
			closeCode: 1000, closedBy: "downstream", flags: "-", userAgent: "", extensions: "*",
		})
	})

	t.Run("wsmesh client terminal", func(t *testing.T) {
		checkGuideTerminal(t, url, wsmeshBin, "client", "--connect-to", connectTo, url)
	})
	t.Run("python -m websockets terminal", func(t *testing.T) {
		requirePythonWebsockets(t)
		// python3 -m websockets URL, with the cluster DNS name resolved to
		// the client sidecar's egress address.
		script := fmt.Sprintf(`
import runpy, socket, sys
_gai = socket.getaddrinfo
def gai(host, *a, **k):
    if host == %q:
        host = "127.0.0.1"
    return _gai(host, *a, **k)
socket.getaddrinfo = gai
sys.argv = ["python3 -m websockets", %q]
runpy.run_module("websockets", run_name="__main__", alter_sys=True)
`, meshHost, url)
		checkGuideTerminal(t, url, pythonBin, "-c", script)
		cli := m.waitLogLines(t, "client", 3)
		srv := m.waitLogLines(t, "server", 3)
		c, s := cli[len(cli)-1], srv[len(srv)-1]
		checkWebSocketLines(t, m, c, s, wsExpect{
			path: "/", up: -1, framesDown: 3, msgsDown: 2, framesUp: 3, msgsUp: 2,
			closeCode: 1000, closedBy: "downstream", flags: "-", userAgent: "Python/3", extensions: "*",
		})
		if ext := logStr(c, "websocket_extensions"); ext != "" {
			t.Logf("python -m websockets negotiated %q", ext)
		}
	})
}

// plainAppInfo is what the Go application of TestSidecarPlainHTTP answers.
type plainAppInfo struct {
	Method, Path, Host, RequestID, XFF, XFP string
	TransferEncoding                        []string
	ContentLength                           int64
	BodyLen                                 int
	BodySHA256                              string
}

func TestSidecarPlainHTTP(t *testing.T) {
	var mu sync.Mutex
	var seen []plainAppInfo
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(body)
		info := plainAppInfo{
			Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host,
			RequestID: r.Header.Get("X-Request-Id"), XFF: r.Header.Get("X-Forwarded-For"), XFP: r.Header.Get("X-Forwarded-Proto"),
			TransferEncoding: r.TransferEncoding, ContentLength: r.ContentLength,
			BodyLen: len(body), BodySHA256: hex.EncodeToString(sum[:]),
		}
		mu.Lock()
		seen = append(seen, info)
		mu.Unlock()
		if r.Method == http.MethodPost {
			// Echo the body back, chunked (no Content-Length).
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			w.Write(body[len(body)/2:])
			return
		}
		j, _ := json.Marshal(info)
		w.Header().Set("Content-Type", "application/json")
		w.Write(j)
	})
	m := newMesh(t, meshOptions{app: "go", appHandler: app})

	var dials int
	var dialMu sync.Mutex
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr != m.authority() {
				return nil, fmt.Errorf("unexpected dial to %s", addr)
			}
			dialMu.Lock()
			dials++
			dialMu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, "tcp", m.egress())
		},
		MaxIdleConnsPerHost: 1,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := "http://" + m.authority()

	// Keep-alive GETs: one downstream connection carries them all.
	var reused int
	for i := range 5 {
		trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if ci.Reused {
				reused++
			}
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", fmt.Sprintf("%s/get/%d?q=%d", base, i, i), nil)
		req.Header.Set("User-Agent", "e2e-get")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var info plainAppInfo
		if resp.StatusCode != 200 || json.Unmarshal(body, &info) != nil || info.Path != fmt.Sprintf("/get/%d?q=%d", i, i) || info.Host != m.authority() {
			t.Fatalf("GET %d: %d %s", i, resp.StatusCode, body)
		}
		if info.RequestID == "" || info.XFF != "127.0.0.1, 127.0.0.1" && info.XFF != "127.0.0.1" || info.XFP != "http" {
			t.Errorf("GET %d: forwarding headers at the app: %+v", i, info)
		}
	}
	if reused != 4 || dials != 1 {
		t.Errorf("keep-alive: %d of 5 GETs reused the connection, %d dials; want 4 and 1", reused, dials)
	}

	// A chunked POST of 3 MiB and a bit, written in pieces.
	payload := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16)
	payload = append(payload, "tail"...)
	pr, pw := io.Pipe()
	go func() {
		for off := 0; off < len(payload); off += 100_000 {
			pw.Write(payload[off:min(off+100_000, len(payload))])
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", base+"/post", pr)
	req.Header.Set("User-Agent", "e2e-post")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, payload) {
		t.Fatalf("chunked POST: %d, %d bytes back, want %d", resp.StatusCode, len(body), len(payload))
	}
	mu.Lock()
	post := seen[len(seen)-1]
	mu.Unlock()
	sum := sha256.Sum256(payload)
	if post.Method != "POST" || post.BodyLen != len(payload) || post.BodySHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("app received %+v", post)
	}
	t.Logf("app saw the POST with Transfer-Encoding %v, Content-Length %d", post.TransferEncoding, post.ContentLength)

	// One access-log line per request on each side.
	cli := m.waitLogLines(t, "client", 6)
	srv := m.waitLogLines(t, "server", 6)
	if len(cli) != 6 || len(srv) != 6 {
		t.Fatalf("want 6 lines per side:\nclient:\n%s\nserver:\n%s", dumpLogLines(cli), dumpLogLines(srv))
	}
	mu.Lock()
	defer mu.Unlock()
	sortByStart := func(ls []map[string]any) {
		sort.SliceStable(ls, func(i, j int) bool { return logStr(ls[i], "start_time") < logStr(ls[j], "start_time") })
	}
	sortByStart(cli)
	sortByStart(srv)
	var downstreamConns = map[string]bool{}
	for i := range 6 {
		c, s := cli[i], srv[i]
		method, path, ua := "GET", fmt.Sprintf("/get/%d?q=%d", i, i), "e2e-get"
		var recv, sent int64
		if i == 5 {
			method, path, ua = "POST", "/post", "e2e-post"
			recv, sent = int64(len(payload)), int64(len(payload))
		}
		var errs []string
		for _, side := range []string{"client", "server"} {
			rec := c
			if side == "server" {
				rec = s
			}
			check := func(key string, want any) {
				var got any = logStr(rec, key)
				if _, ok := want.(int64); ok {
					got = logNum(rec, key)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					errs = append(errs, fmt.Sprintf("%s %s = %v, want %v", side, key, got, want))
				}
			}
			check("method", method)
			check("path", path)
			check("protocol", "HTTP/1.1")
			check("response_code", int64(200))
			check("response_flags", "-")
			check("response_code_details", "via_upstream")
			check("user_agent", ua)
			check("authority", m.authority())
			check("request_id", seen[i].RequestID)
			if i == 5 {
				check("bytes_received", recv)
				check("bytes_sent", sent)
			} else {
				j, _ := json.Marshal(seen[i])
				check("bytes_received", int64(0))
				check("bytes_sent", int64(len(j)))
			}
			if _, ok := rec["websocket_closed_by"]; ok && rec["websocket_closed_by"] != nil {
				errs = append(errs, side+" plain HTTP line has WebSocket fields")
			}
			if d, u := logNum(rec, "duration"), logNum(rec, "upstream_service_time"); d < 0 || u < 0 || u > d || d > 30_000 {
				errs = append(errs, fmt.Sprintf("%s duration %d upstream_service_time %d", side, d, u))
			}
		}
		if got, want := logStr(c, "upstream_cluster"), fmt.Sprintf("outbound|%d||%s", m.egressPort, meshHost); got != want {
			errs = append(errs, fmt.Sprintf("client upstream_cluster %q want %q", got, want))
		}
		if got, want := logStr(s, "upstream_cluster"), fmt.Sprintf("inbound|%d||", m.appPort); got != want {
			errs = append(errs, fmt.Sprintf("server upstream_cluster %q want %q", got, want))
		}
		if got, want := logStr(c, "upstream_host"), "127.0.0.1:"+strconv.Itoa(m.inboundPort); got != want {
			errs = append(errs, fmt.Sprintf("client upstream_host %q want %q", got, want))
		}
		if got, want := logStr(s, "upstream_host"), "127.0.0.1:"+strconv.Itoa(m.appPort); got != want {
			errs = append(errs, fmt.Sprintf("server upstream_host %q want %q", got, want))
		}
		downstreamConns[logStr(c, "downstream_remote_address")] = true
		if len(errs) > 0 {
			t.Errorf("request %d (%s %s):\n  %s\nclient: %sserver: %s", i, method, path, strings.Join(errs, "\n  "),
				dumpLogLines([]map[string]any{c}), dumpLogLines([]map[string]any{s}))
		}
	}
	if len(downstreamConns) != 1 {
		t.Errorf("the six requests came over one client connection, but the log shows %d downstream addresses: %v", len(downstreamConns), downstreamConns)
	}
}
