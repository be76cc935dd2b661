package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// This file and the other reliability_*_test.go files test the promises of
// docs/reliability.md by breaking things around real wsmesh processes: an
// application killed in the middle of a message, a sidecar restarted under
// a thousand WebSockets, a peer sidecar killed, slowloris clients,
// half-open and half-closed TCP, and a soak of connection churn checked for
// goroutine, file-descriptor and memory leaks.

// relOpenConnections returns a sidecar's open_connections from /stats.
func relOpenConnections(t testing.TB, m *mesh, side string) int {
	t.Helper()
	n, err := strconv.Atoi(fmt.Sprint(m.adminJSON(t, side, "/stats")["open_connections"]))
	if err != nil {
		t.Fatalf("%s /stats open_connections: %v", side, err)
	}
	return n
}

// relWaitOpenConnections waits up to timeout until a sidecar's
// open_connections is n.
func relWaitOpenConnections(t testing.TB, m *mesh, side string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := relOpenConnections(t, m, side)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sidecar open_connections %d after %v, want %d; /connections: %v", side, got, timeout, n, m.connections(t, side))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// relGoroutines returns a sidecar's goroutine count from its pprof page
// (first line "goroutine profile: total N").
func relGoroutines(t testing.TB, m *mesh, side string) int {
	t.Helper()
	code, body, err := m.adminGet(side, "/debug/pprof/goroutine?debug=1")
	if err != nil || code != 200 {
		t.Fatalf("%s pprof goroutine: %d %v", side, code, err)
	}
	first, _, _ := strings.Cut(body, "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(first, "goroutine profile: total "))
	if err != nil {
		t.Fatalf("%s pprof goroutine: first line %q", side, first)
	}
	return n
}

// relWaitGoroutines waits up to timeout until a sidecar runs at most max
// goroutines and returns the last count (failing the test past timeout).
func relWaitGoroutines(t testing.TB, m *mesh, side string, max int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := relGoroutines(t, m, side)
		if n <= max {
			return n
		}
		if time.Now().After(deadline) {
			_, body, _ := m.adminGet(side, "/debug/pprof/goroutine?debug=1")
			t.Fatalf("%s sidecar has %d goroutines after %v, want at most %d:\n%s", side, n, timeout, max, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// relWaitFDs waits up to timeout until process pid has at most max file
// descriptors open and returns the count (failing the test past timeout).
func relWaitFDs(t testing.TB, pid, max int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := procFDCount(t, pid)
		if n <= max {
			return n
		}
		if time.Now().After(deadline) {
			var links []string
			ents, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
			for _, e := range ents {
				l, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + e.Name())
				links = append(links, e.Name()+"->"+l)
			}
			t.Fatalf("pid %d has %d fds after %v, want at most %d: %v", pid, n, timeout, max, links)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// relRSSKiB returns VmRSS of process pid in KiB.
func relRSSKiB(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatalf("reading status of %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS of %d: %q", pid, line)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// relDial opens a WebSocket to path through the mesh's egress with
// github.com/coder/websocket (no compression), sending the guide's Host.
func relDial(ctx context.Context, m *mesh, path string) (*websocket.Conn, error) {
	egress := m.egress()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", egress)
		},
		DisableKeepAlives: true,
	}
	c, resp, err := websocket.Dial(ctx, m.url(path), &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: HTTP %d: %w", path, resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial %s: %w", path, err)
	}
	c.SetReadLimit(-1)
	return c, nil
}

// relEcho sends msg on c and checks that the same message comes back.
func relEcho(ctx context.Context, c *websocket.Conn, msg string) error {
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return fmt.Errorf("write %q: %w", msg, err)
	}
	typ, b, err := c.Read(ctx)
	if err != nil {
		return fmt.Errorf("read echo of %q: %w", msg, err)
	}
	if typ != websocket.MessageText || string(b) != msg {
		return fmt.Errorf("echo of %q: got %v %q", msg, typ, b)
	}
	return nil
}

// relConnBytes returns bytes_received and bytes_sent of the open connection
// with path on a sidecar (-1, -1 when none is open).
func relConnBytes(t testing.TB, m *mesh, side, path string) (received, sent int64) {
	t.Helper()
	for _, c := range m.connections(t, side) {
		if c["path"] == path {
			return logNum(c, "bytes_received"), logNum(c, "bytes_sent")
		}
	}
	return -1, -1
}

// relWaitConnBytes waits up to 20 seconds until the open connection with
// path on a sidecar has received at least minReceived and sent at least
// minSent bytes.
func relWaitConnBytes(t testing.TB, m *mesh, side, path string, minReceived, minSent int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		received, sent := relConnBytes(t, m, side, path)
		if received >= minReceived && sent >= minSent {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sidecar, %s: %d bytes received (want %d) and %d sent (want %d) after 20s: %v",
				side, path, received, minReceived, sent, minSent, m.connections(t, side))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// relLine waits up to 10 seconds for the access-log line of path.
func relLine(t testing.TB, m *mesh, side, path string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range m.accessLog(t, side) {
			if logStr(l, "path") == path {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s access log has no line for %s:\n%s", side, path, dumpLogLines(m.accessLog(t, side)))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// relConnEnded reports whether err is the end of a connection (EOF, reset,
// closed) rather than a timeout.
func relConnEnded(err error) bool {
	return err != nil && !isNetTimeout(err)
}

// TestReliabilityUpstreamKilledMidMessage kills the application (the Python
// websockets server) with SIGKILL while a large message is in flight, once
// with the message on its way to the application and once with one on its
// way from it: the
// client sees its connection end, the client sidecar logs the WebSocket as
// ended by the upstream (flag UC or websocket_closed_by upstream), and both
// sidecars' open_connections return to 0.
func TestReliabilityUpstreamKilledMidMessage(t *testing.T) {
	requirePythonWebsockets(t)

	checkLines := func(t *testing.T, m *mesh, path string, minUp, minDown int64) {
		t.Helper()
		relWaitOpenConnections(t, m, "client", 0, 15*time.Second)
		relWaitOpenConnections(t, m, "server", 0, 15*time.Second)
		for _, side := range []string{"client", "server"} {
			rec := relLine(t, m, side, path)
			flags, by := logStr(rec, "response_flags"), logStr(rec, "websocket_closed_by")
			if logNum(rec, "response_code") != 101 || !(strings.Contains(flags, "UC") || by == "upstream") {
				t.Errorf("%s line: want 101 with flag UC or websocket_closed_by upstream:\n%s", side, dumpLogLines([]map[string]any{rec}))
			}
			if strings.Contains(flags, "DC") {
				t.Errorf("%s line blames the downstream (DC) for an upstream death:\n%s", side, dumpLogLines([]map[string]any{rec}))
			}
			if logNum(rec, "bytes_received") < minUp || logNum(rec, "bytes_sent") < minDown {
				t.Errorf("%s line: bytes_received %d (want >= %d), bytes_sent %d (want >= %d)", side,
					logNum(rec, "bytes_received"), minUp, logNum(rec, "bytes_sent"), minDown)
			}
			t.Logf("%s: flags %s, closed_by %s, details %q", side, flags, by, logStr(rec, "connection_termination_details"))
		}
	}

	t.Run("message to the app", func(t *testing.T) {
		m := newMesh(t, meshOptions{})
		const path = "/kill/toapp"
		c, br := rawWebSocket(t, m.egress(), m.authority(), path)
		wsWriteClientFrame(t, c, 1, []byte("warm"))
		if op, p := wsReadServerFrame(t, br); op != 1 || string(p) != "warm" {
			t.Fatalf("echo: %d %q", op, p)
		}
		// One binary message of 1 GiB, written in 64 KiB pieces until the
		// connection breaks: always in flight when the app dies.
		key := [4]byte{9, 8, 7, 6}
		c.SetDeadline(time.Now().Add(60 * time.Second))
		if _, err := c.Write(wsClientFrameHeader(2, 1<<30, key)); err != nil {
			t.Fatal(err)
		}
		writeErr := make(chan error, 1)
		var written int64
		var writtenMu sync.Mutex
		go func() {
			chunk := bytes.Repeat([]byte{'a' ^ 9, 'a' ^ 8, 'a' ^ 7, 'a' ^ 6}, 16<<10)
			for {
				n, err := c.Write(chunk)
				writtenMu.Lock()
				written += int64(n)
				writtenMu.Unlock()
				if err != nil {
					writeErr <- err
					return
				}
			}
		}()
		// Kill the app once 8 MiB have gone through the server sidecar.
		relWaitConnBytes(t, m, "server", path, 8<<20, 0)
		if err := syscall.Kill(m.app.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// The client's writes fail or its connection ends.
		start := time.Now()
		readErr := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, br)
			if err == nil {
				err = io.EOF
			}
			readErr <- err
		}()
		select {
		case err := <-writeErr:
			t.Logf("client write ended after %v: %v", time.Since(start), err)
		case err := <-readErr:
			t.Logf("client read ended after %v: %v", time.Since(start), err)
		case <-time.After(15 * time.Second):
			t.Fatalf("client connection still alive 15s after the app was killed")
		}
		c.Close()
		writtenMu.Lock()
		t.Logf("client wrote %d MiB of the message", written>>20)
		writtenMu.Unlock()
		checkLines(t, m, path, 8<<20, 6)
	})

	t.Run("message from the app", func(t *testing.T) {
		m := newMesh(t, meshOptions{app: "none"})
		app := startProcess(t, pythonBin, "-c", pyMeshServer, strconv.Itoa(m.appPort))
		waitOutput(t, app, "READY\n", 20*time.Second)
		const path = "/kill/fromapp"
		const size = 64 << 20
		c, br := rawWebSocket(t, m.egress(), m.authority(), path)
		c.SetDeadline(time.Now().Add(60 * time.Second))
		// One 64 MiB message from the app; the client reads 1 MiB of it
		// and stops reading, so the app is blocked sending the rest when
		// it dies.
		cmd := []byte("stream 1 " + strconv.Itoa(size))
		wsWriteClientFrame(t, c, 1, cmd)
		if _, err := io.ReadFull(br, make([]byte, 1<<20)); err != nil {
			t.Fatalf("reading the start of the message: %v", err)
		}
		relWaitConnBytes(t, m, "server", path, 0, 1<<20)
		if err := syscall.Kill(app.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// The client drains what was already on its way, then the
		// connection ends before the message does.
		n, err := io.Copy(io.Discard, br)
		if isNetTimeout(err) {
			t.Fatalf("client connection still alive after the app was killed (read %d more bytes)", n)
		}
		if n+1<<20 >= size+10 {
			t.Fatalf("client received the whole message (%d bytes) although the app was killed", n+1<<20)
		}
		t.Logf("client read %d MiB of the message, then %v", (n+1<<20)>>20, err)
		c.Close()
		checkLines(t, m, path, int64(len(cmd)+6), 1<<20)
	})
}

// TestReliabilityPeerSidecarKilled kills the server's sidecar with SIGKILL
// under 50 open WebSockets: each client's WebSocket ends, each is logged by
// the client sidecar, and the client sidecar leaks nothing (open_connections
// 0, file descriptors and goroutines back to their baseline). New
// WebSockets then get 503 UF.
func TestReliabilityPeerSidecarKilled(t *testing.T) {
	const n = 50
	m := newMesh(t, meshOptions{app: "echo"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Warm up, so that lazily created state is part of the baseline.
	for i := range 3 {
		c, err := relDial(ctx, m, fmt.Sprintf("/warm/%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := relEcho(ctx, c, "warm"); err != nil {
			t.Fatal(err)
		}
		c.Close(websocket.StatusNormalClosure, "")
	}
	relWaitOpenConnections(t, m, "client", 0, 10*time.Second)
	m.waitLogLines(t, "client", 3)
	time.Sleep(200 * time.Millisecond)
	pid := m.pid("client")
	fdBase := procFDCount(t, pid)
	grBase := relGoroutines(t, m, "client")

	conns := make([]*websocket.Conn, n)
	for i := range conns {
		c, err := relDial(ctx, m, fmt.Sprintf("/peer/%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if err := relEcho(ctx, c, fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	relWaitOpenConnections(t, m, "client", n, 10*time.Second)
	if fd := procFDCount(t, pid); fd < fdBase+2*n {
		t.Errorf("client sidecar has %d fds with %d WebSockets open, baseline %d: expected 2 per WebSocket", fd, n, fdBase)
	}

	if err := syscall.Kill(m.pid("server"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitProcess(t, m.procs["server"], 10*time.Second)

	// Every client sees its WebSocket end (no close frame: 1006 in
	// browser terms).
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, c := range conns {
		wg.Go(func() {
			rctx, rcancel := context.WithTimeout(ctx, 15*time.Second)
			defer rcancel()
			_, _, errs[i] = c.Read(rctx)
			c.CloseNow()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WebSocket %d: read %v, want the connection to end", i, err)
		}
	}
	relWaitOpenConnections(t, m, "client", 0, 15*time.Second)
	lines := logsByPath(t, "client", m.waitLogLines(t, "client", 3+n))
	for i := range n {
		p := fmt.Sprintf("/peer/%02d", i)
		rec := lines[p]
		if rec == nil {
			t.Errorf("no client access-log line for %s", p)
			continue
		}
		if logNum(rec, "response_code") != 101 || !(strings.Contains(logStr(rec, "response_flags"), "UC") || logStr(rec, "websocket_closed_by") == "upstream") {
			t.Errorf("%s: want 101 with flag UC or closed_by upstream:\n%s", p, dumpLogLines([]map[string]any{rec}))
		}
		if logNum(rec, "bytes_received") < int64(len("hello 0")+6) {
			t.Errorf("%s: bytes_received %d", p, logNum(rec, "bytes_received"))
		}
	}
	fd := relWaitFDs(t, pid, fdBase, 10*time.Second)
	gr := relWaitGoroutines(t, m, "client", grBase+2, 10*time.Second)
	t.Logf("client sidecar: fds %d (baseline %d), goroutines %d (baseline %d)", fd, fdBase, gr, grBase)

	// The peer is gone: new WebSockets get 503 UF, and nothing stays open.
	if _, err := relDial(ctx, m, "/after"); err == nil || !strings.Contains(err.Error(), "HTTP 503") {
		t.Errorf("WebSocket after the peer died: %v, want HTTP 503", err)
	}
	rec := relLine(t, m, "client", "/after")
	checkLocalReply(t, "client", rec, 503, "UF", "upstream_reset_before_response_started{connection_failure}")
	relWaitOpenConnections(t, m, "client", 0, 10*time.Second)
	relWaitFDs(t, pid, fdBase, 10*time.Second)
}

// TestReliabilitySlowloris sends 200 partial request heads, one byte every
// 250 ms, to a client sidecar run with --header-read-timeout 2s: each gets
// 408 (or is closed) about 2 s after its first byte, every one is logged as
// 408 DPE, and meanwhile an open WebSocket keeps echoing in under a second
// and new WebSockets open.
func TestReliabilitySlowloris(t *testing.T) {
	const n = 200
	const timeout = 2 * time.Second
	m := newMesh(t, meshOptions{app: "echo", clientFlags: []string{"--header-read-timeout", timeout.String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, err := relDial(ctx, m, "/normal")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := relEcho(ctx, ws, "before"); err != nil {
		t.Fatal(err)
	}

	type result struct {
		status  string // "408", another status line, or "closed"
		elapsed time.Duration
		err     error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			head := fmt.Sprintf("GET /slow/%03d HTTP/1.1\r\nHost: %s\r\nUser-Agent: slowloris\r\nX-Pad: %s\r\n\r\n", i, m.authority(), strings.Repeat("p", 64))
			c, err := net.DialTimeout("tcp", m.egress(), 10*time.Second)
			if err != nil {
				results[i].err = err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			start := time.Now()
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				for k := 0; k < len(head); k++ {
					if _, err := c.Write([]byte{head[k]}); err != nil {
						return
					}
					select {
					case <-stop:
						return
					case <-time.After(250 * time.Millisecond):
					}
				}
			}()
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			results[i].elapsed = time.Since(start)
			switch {
			case strings.HasPrefix(line, "HTTP/1.1 408 "):
				results[i].status = "408"
			case line != "":
				results[i].status = strings.TrimSpace(line)
			case relConnEnded(err):
				results[i].status = "closed"
			default:
				results[i].err = err
			}
		})
	}

	// Echo latency on the open WebSocket, and new WebSockets, while the
	// slowloris connections are held.
	var maxEcho, maxOpen time.Duration
	var echoes int
	loadDone := make(chan struct{})
	go func() { wg.Wait(); close(loadDone) }()
	for k := 0; ; k++ {
		select {
		case <-loadDone:
		default:
			start := time.Now()
			if err := relEcho(ctx, ws, fmt.Sprintf("during %d", k)); err != nil {
				t.Fatal(err)
			}
			maxEcho = max(maxEcho, time.Since(start))
			echoes++
			if k%10 == 0 {
				start = time.Now()
				c, err := relDial(ctx, m, fmt.Sprintf("/fresh/%d", k))
				if err != nil {
					t.Fatalf("new WebSocket during slowloris: %v", err)
				}
				if err := relEcho(ctx, c, "fresh"); err != nil {
					t.Fatal(err)
				}
				maxOpen = max(maxOpen, time.Since(start))
				c.Close(websocket.StatusNormalClosure, "")
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		break
	}
	t.Logf("during slowloris: %d echoes, slowest %v; slowest new WebSocket + echo %v", echoes, maxEcho, maxOpen)
	if maxEcho >= time.Second || maxOpen >= time.Second {
		t.Errorf("slowest echo %v, slowest new WebSocket %v: want < 1s", maxEcho, maxOpen)
	}
	if echoes < 10 {
		t.Errorf("only %d echoes during the slowloris", echoes)
	}

	var slowest, fastest time.Duration = 0, time.Hour
	closed := 0
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("slowloris %d: %v after %v", i, r.err, r.elapsed)
			continue
		case r.status == "closed":
			closed++
		case r.status != "408":
			t.Errorf("slowloris %d: got %q, want 408", i, r.status)
		}
		slowest, fastest = max(slowest, r.elapsed), min(fastest, r.elapsed)
	}
	t.Logf("slowloris: answered or closed after %v to %v (%d closed without 408)", fastest, slowest, closed)
	// The clock starts at the first byte the sidecar reads, a moment after
	// the first one written; allow 3 s more for a loaded machine.
	if fastest < timeout-300*time.Millisecond || slowest > timeout+3*time.Second {
		t.Errorf("slowloris connections ended after %v to %v, want about %v", fastest, slowest, timeout)
	}

	lines := m.waitLogLines(t, "client", n)
	got := 0
	for _, rec := range lines {
		if logNum(rec, "response_code") == 408 {
			got++
			if logStr(rec, "response_flags") != "DPE" || logStr(rec, "response_code_details") != "request_header_timeout" {
				t.Errorf("408 line:\n%s", dumpLogLines([]map[string]any{rec}))
			}
		}
	}
	if got != n-closed {
		t.Errorf("client access log has %d lines with 408, want %d", got, n-closed)
	}
	if err := relEcho(ctx, ws, "after"); err != nil {
		t.Fatal(err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	relWaitOpenConnections(t, m, "client", 0, 10*time.Second)
}

// TestReliabilityHalfOpen checks two half-open TCP cases. A client that
// stops reading while the application streams messages at it must not make
// the sidecars buffer: back-pressure reaches the application, both sidecars'
// RSS stays within 64 MiB of where it was, and once the client reads again
// the stream continues in order. A client that sends a close frame and then
// shuts down its sending side still receives the server's close reply.
func TestReliabilityHalfOpen(t *testing.T) {
	requirePythonWebsockets(t)
	m := newMesh(t, meshOptions{app: "none"})
	app := startProcess(t, pythonBin, "-c", pyMeshServer, strconv.Itoa(m.appPort))
	waitOutput(t, app, "READY\n", 20*time.Second)

	t.Run("stalled reader", func(t *testing.T) {
		const (
			path  = "/stall"
			count = 8192 // messages of 64 KiB: 512 MiB if nothing pushed back
			size  = 64 << 10
			bound = 64 << 10 // KiB of RSS growth allowed
		)
		c, br := rawWebSocket(t, m.egress(), m.authority(), path)
		c.SetDeadline(time.Now().Add(90 * time.Second))
		wsWriteClientFrame(t, c, 1, []byte("warm"))
		if op, p := wsReadServerFrame(t, br); op != 1 || string(p) != "warm" {
			t.Fatalf("echo: %d %q", op, p)
		}
		rss0 := map[string]int64{"client": relRSSKiB(t, m.pid("client")), "server": relRSSKiB(t, m.pid("server"))}
		wsWriteClientFrame(t, c, 1, []byte(fmt.Sprintf("stream %d %d", count, size)))

		// Wait until the stream stalls: the client sidecar's bytes_sent
		// stops growing.
		var last int64 = -1
		stableSince := time.Now()
		deadline := time.Now().Add(30 * time.Second)
		peak := map[string]int64{}
		for {
			for _, side := range []string{"client", "server"} {
				peak[side] = max(peak[side], relRSSKiB(t, m.pid(side)))
			}
			_, sent := relConnBytes(t, m, "client", path)
			if sent != last {
				last, stableSince = sent, time.Now()
			} else if time.Since(stableSince) > time.Second && sent > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the stream never stalled: client sidecar bytes_sent %d", sent)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Hold the stall for two more seconds, sampling RSS.
		for range 20 {
			for _, side := range []string{"client", "server"} {
				peak[side] = max(peak[side], relRSSKiB(t, m.pid(side)))
			}
			time.Sleep(100 * time.Millisecond)
		}
		_, sentClient := relConnBytes(t, m, "client", path)
		_, sentServer := relConnBytes(t, m, "server", path)
		out := processOutput(app)
		sentApp := 0
		if i := strings.LastIndex(out, "SENT "); i >= 0 {
			sentApp, _ = strconv.Atoi(strings.Fields(out[i+5:])[0])
		}
		t.Logf("stalled: client sidecar passed %d MiB, server sidecar %d MiB, app handed %d MiB to its socket; RSS client %d->%d KiB, server %d->%d KiB",
			sentClient>>20, sentServer>>20, sentApp*size>>20, rss0["client"], peak["client"], rss0["server"], peak["server"])
		if strings.Contains(out, "STREAM DONE") || sentApp >= count/2 {
			t.Errorf("the app sent %d of %d messages to a client that does not read: no back-pressure", sentApp, count)
		}
		for _, side := range []string{"client", "server"} {
			if grew := peak[side] - rss0[side]; grew >= bound {
				t.Errorf("%s sidecar's RSS grew by %d KiB while the client was stalled, want < %d KiB", side, grew, bound)
			}
		}

		// The client reads again: the stream goes on, in order.
		c.SetDeadline(time.Now().Add(60 * time.Second))
		for k := range 200 {
			op, p := wsReadServerFrame(t, br)
			if op != 2 || len(p) != size || binary.BigEndian.Uint64(p) != uint64(k) {
				t.Fatalf("message %d after the stall: opcode %d, %d bytes, index %d", k, op, len(p), binary.BigEndian.Uint64(p[:8]))
			}
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		relWaitOpenConnections(t, m, "client", 0, 15*time.Second)
		relWaitOpenConnections(t, m, "server", 0, 15*time.Second)
	})

	t.Run("half-closed after close frame", func(t *testing.T) {
		const path = "/halfclose"
		c, br := rawWebSocket(t, m.egress(), m.authority(), path)
		wsWriteClientFrame(t, c, 1, []byte("hello"))
		if op, p := wsReadServerFrame(t, br); op != 1 || string(p) != "hello" {
			t.Fatalf("echo: %d %q", op, p)
		}
		wsWriteClientFrame(t, c, 8, append(binary.BigEndian.AppendUint16(nil, 1000), "bye"...))
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		op, p := wsReadServerFrame(t, br)
		if op != 8 || len(p) < 2 || binary.BigEndian.Uint16(p) != 1000 {
			t.Fatalf("after close frame and SHUT_WR: frame %d %q, want the server's close 1000", op, p)
		}
		if _, err := io.Copy(io.Discard, br); isNetTimeout(err) {
			t.Fatalf("connection not closed after the close handshake")
		}
		for _, side := range []string{"client", "server"} {
			rec := relLine(t, m, side, path)
			if logNum(rec, "response_code") != 101 || logStr(rec, "response_flags") != "-" || logNum(rec, "websocket_close_code") != 1000 ||
				logStr(rec, "websocket_closed_by") != "downstream" || logNum(rec, "websocket_frames_upstream") != 2 {
				t.Errorf("%s line:\n%s", side, dumpLogLines([]map[string]any{rec}))
			}
		}
		relWaitOpenConnections(t, m, "client", 0, 10*time.Second)
		relWaitOpenConnections(t, m, "server", 0, 10*time.Second)
	})
}
