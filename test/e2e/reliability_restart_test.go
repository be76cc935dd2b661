package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// relPyRestartClients runs N Python websockets clients in one asyncio
// process, each holding a WebSocket to /r/IIII/GEN through the client
// sidecar and exchanging numbered messages "IIII:SEQ" one at a time, each
// acknowledged by its echo. When a WebSocket ends, the client notes the
// close code and reconnects (retrying for up to 40 s, since the sidecar is
// being restarted) and goes on from the first unacknowledged number; after
// POST more acknowledged messages on the new WebSocket it closes with 1000.
// argv: PORT N POST RESULTFILE. It prints "OPEN N" once all are open,
// "WARM" once every client has two acknowledged messages, and "DONE" at
// the end, after writing to RESULTFILE a JSON object with, per client, each generation's first number, its
// acknowledged count and its close code, plus any mismatched echo.
const relPyRestartClients = `
import asyncio, json, random, resource, sys, time
import websockets

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

HOST = "websockets-server.default.svc.cluster.local"
PORT, N, POST = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def connect(path):
    return websockets.connect(f"ws://{HOST}:{PORT}{path}", host="127.0.0.1", port=PORT,
                              compression=None, ping_interval=None, open_timeout=30, close_timeout=10)

opened = 0
warm = 0
all_open = asyncio.Event()
all_warm = asyncio.Event()
sem = asyncio.Semaphore(100)
errors = []

async def connect_retry(path, deadline):
    delay = 0.05
    while True:
        try:
            async with sem:
                return await connect(path)
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as e:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)

async def client(i):
    global opened, warm
    seq = 0
    gens = []
    gen = 0
    while gen < 3:
        ws = await connect_retry(f"/r/{i:04d}/{gen}", time.monotonic() + 40)
        if gen == 0:
            opened += 1
            if opened == N:
                print("OPEN", N, flush=True)
                all_open.set()
            await all_open.wait()
        g = {"first": seq, "acked": 0, "close": None}
        gens.append(g)
        try:
            while gen == 0 or g["acked"] < POST:
                m = f"{i:04d}:{seq}"
                await ws.send(m)
                r = await ws.recv()
                if r != m:
                    errors.append(f"client {i}: sent {m!r}, echo {r!r}")
                seq += 1
                g["acked"] += 1
                if gen == 0 and g["acked"] == 2:
                    warm += 1
                    if warm == N:
                        print("WARM", flush=True)
                        all_warm.set()
                await asyncio.sleep(0.2 + 0.3 * random.random())
            await ws.close()
            g["close"] = ws.close_code
            return gens
        except websockets.ConnectionClosed:
            await ws.wait_closed()
            g["close"] = ws.close_code
            gen += 1
    errors.append(f"client {i}: too many reconnects")
    return gens

async def main():
    res = await asyncio.gather(*(client(i) for i in range(N)), return_exceptions=True)
    out = []
    for i, r in enumerate(res):
        if isinstance(r, BaseException):
            errors.append(f"client {i}: {r!r}")
            out.append([])
        else:
            out.append(r)
    with open(sys.argv[4], "w") as f:
        json.dump({"clients": out, "errors": errors[:50]}, f)
    print("DONE", flush=True)

asyncio.run(main())
`

// TestReliabilitySidecarRestart restarts the client sidecar under 1,000
// WebSockets: SIGTERM with --drain-grace 1s while 1,000 Python clients
// exchange numbered messages. /ready answers 503 during the drain; after
// the grace every client gets close 1001 (Going Away); a new sidecar
// process on the same ports takes the reconnections and every client's
// sequence continues where its acknowledged messages ended. The old
// sidecar's access log accounts for every acknowledged message.
func TestReliabilitySidecarRestart(t *testing.T) {
	const n = 1000
	const post = 3
	requirePythonWebsockets(t)
	m := newMesh(t, meshOptions{clientFlags: []string{"--drain-grace", "1s"}})
	start := time.Now()

	resultFile := filepath.Join(t.TempDir(), "result.json")
	py := startProcess(t, pythonBin, "-c", relPyRestartClients, strconv.Itoa(m.egressPort), strconv.Itoa(n), strconv.Itoa(post), resultFile)
	waitOutput(t, py, fmt.Sprintf("OPEN %d\n", n), 40*time.Second)
	waitOutput(t, py, "WARM\n", 20*time.Second)
	t.Logf("%d WebSockets open and warm after %v", n, time.Since(start).Round(time.Millisecond))
	if got := relOpenConnections(t, m, "client"); got != n {
		t.Fatalf("client sidecar open_connections %d, want %d", got, n)
	}

	old := m.procs["client"]
	oldLog := m.accessLogFile["client"]
	if err := syscall.Kill(old.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	termAt := time.Now()
	// /ready turns 503 while the sidecar drains.
	var ready []string
	sawDraining := false
	for processRunning(old) && time.Since(termAt) < 15*time.Second {
		code, body, err := m.adminGet("client", "/ready")
		switch {
		case err != nil:
			ready = append(ready, "error")
		case code == 503 && strings.Contains(body, "DRAINING"):
			sawDraining = true
		default:
			ready = append(ready, fmt.Sprintf("%d %q", code, body))
		}
		if sawDraining {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !sawDraining {
		t.Errorf("GET /ready during the drain never answered 503 DRAINING; got %v", compactList(ready))
	}
	if code := waitProcess(t, old, 20*time.Second); code != 0 {
		t.Errorf("old client sidecar exit code %d", code)
	}
	exitAfter := time.Since(termAt)
	oldOut := processOutput(old)
	if !strings.Contains(oldOut, "left_open=0") {
		t.Errorf("old client sidecar did not drain everything:\n%s", lastLines(oldOut, 10))
	}

	// A new client sidecar on the same ports.
	args := append([]string(nil), old.Args...)
	newLog := filepath.Join(t.TempDir(), "client-access-2.log")
	for i := range args {
		if args[i] == "--access-log" {
			args[i+1] = newLog
		}
	}
	m.procs["client"] = startProcess(t, args...)
	m.accessLogFile["client"] = newLog
	m.waitReady(t, "client")
	t.Logf("old sidecar exited %v after SIGTERM; new one ready %v after SIGTERM", exitAfter.Round(time.Millisecond), time.Since(termAt).Round(time.Millisecond))

	if code := waitProcess(t, py, 60*time.Second); code != 0 {
		t.Fatalf("python clients exit %d:\n%s", code, lastLines(processOutput(py), 20))
	}
	raw, err := os.ReadFile(resultFile)
	if err != nil {
		t.Fatalf("python clients' result: %v\n%s", err, lastLines(processOutput(py), 20))
	}
	var res struct {
		Clients [][]struct {
			First int  `json:"first"`
			Acked int  `json:"acked"`
			Close *int `json:"close"`
		} `json:"clients"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("python clients' result: %v", err)
	}
	for _, e := range res.Errors {
		t.Errorf("python: %s", e)
	}
	if len(res.Clients) != n {
		t.Fatalf("RESULT has %d clients, want %d", len(res.Clients), n)
	}

	// The old sidecar's access log: one line per first-generation WebSocket.
	oldLines := map[string]map[string]any{}
	m.accessLogFile["client"] = oldLog
	for _, l := range m.accessLog(t, "client") {
		oldLines[logStr(l, "path")] = l
	}
	m.accessLogFile["client"] = newLog

	bad := 0
	acked := 0
	for ci, gens := range res.Clients {
		fail := func(format string, a ...any) {
			bad++
			if bad <= 20 {
				t.Errorf("client %d: %s", ci, fmt.Sprintf(format, a...))
			}
		}
		if len(gens) != 2 {
			fail("%d WebSockets, want 2 (one before the restart, one after): %+v", len(gens), gens)
			continue
		}
		g0, g1 := gens[0], gens[1]
		acked += g0.Acked
		if g0.Close == nil || *g0.Close != 1001 {
			fail("first WebSocket ended with close %v, want 1001", g0.Close)
		}
		if g0.First != 0 || g0.Acked < 2 {
			fail("first WebSocket: first %d, %d acknowledged", g0.First, g0.Acked)
		}
		// The sequence continues at the first unacknowledged number.
		if g1.First != g0.First+g0.Acked || g1.Acked != post || g1.Close == nil || *g1.Close != 1000 {
			fail("second WebSocket: first %d (want %d), %d acknowledged (want %d), close %v (want 1000)",
				g1.First, g0.First+g0.Acked, g1.Acked, post, g1.Close)
		}
		// Everything acknowledged went through the old sidecar, which
		// saw at most one more message (sent as the close frame came).
		p := fmt.Sprintf("/r/%04d/0", ci)
		rec := oldLines[p]
		if rec == nil {
			fail("no line for %s in the old sidecar's access log", p)
			continue
		}
		down, up := logNum(rec, "websocket_messages_downstream"), logNum(rec, "websocket_messages_upstream")
		a := int64(g0.Acked)
		if logNum(rec, "response_code") != 101 || logNum(rec, "websocket_close_code") != 1001 ||
			down < a || down > a+1 || up < a || up > down {
			fail("old sidecar line does not account for %d acknowledged messages (messages down %d, up %d):\n%s",
				a, down, up, dumpLogLines([]map[string]any{rec}))
		}
		if d := logStr(rec, "connection_termination_details"); !strings.Contains(d, "1001") {
			fail("old sidecar line: connection_termination_details %q", d)
		}
	}
	if len(oldLines) != n {
		t.Errorf("old sidecar logged %d lines, want %d", len(oldLines), n)
	}
	newLines := logsByPath(t, "client", m.waitLogLines(t, "client", n))
	for ci := range n {
		p := fmt.Sprintf("/r/%04d/1", ci)
		if rec := newLines[p]; rec == nil || logNum(rec, "websocket_close_code") != 1000 || logNum(rec, "websocket_messages_downstream") != post {
			t.Errorf("new sidecar line for %s: %v", p, rec)
			break
		}
	}
	t.Logf("%d messages acknowledged before the restart, %d after; total %v", acked, n*post, time.Since(start).Round(time.Millisecond))
	relWaitOpenConnections(t, m, "client", 0, 10*time.Second)
	relWaitOpenConnections(t, m, "server", 0, 10*time.Second)
}

// compactList shortens a list of repeated strings to "value ×count" runs.
func compactList(l []string) []string {
	var out []string
	for i := 0; i < len(l); {
		j := i
		for j < len(l) && l[j] == l[i] {
			j++
		}
		out = append(out, fmt.Sprintf("%s ×%d", l[i], j-i))
		i = j
	}
	return out
}

// lastLines returns the last k lines of s.
func lastLines(s string, k int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > k {
		lines = lines[len(lines)-k:]
	}
	return strings.Join(lines, "\n")
}
