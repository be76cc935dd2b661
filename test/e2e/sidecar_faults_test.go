package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// This file tests the sidecars when things go wrong: an endpoint that is
// down, a Host no Service has, a server or a client ending a WebSocket
// abruptly, and configuration reloads (valid and invalid) while WebSockets
// are open.

// rawWebSocket opens a WebSocket through addr by hand (no extension
// offered) and returns the connection and its reader after the 101.
func rawWebSocket(t *testing.T, addr, authority, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nUser-Agent: e2e-raw\r\n\r\n", path, authority)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("handshake through %s: %v", addr, err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("handshake through %s: %d %v", addr, resp.StatusCode, resp.Header)
	}
	return c, br
}

// wsClientFrameHeader returns the header of a final masked client frame
// announcing n payload bytes, with mask key k.
func wsClientFrameHeader(opcode byte, n uint64, k [4]byte) []byte {
	b := []byte{0x80 | opcode}
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 65536:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, n)
	}
	return append(b, k[:]...)
}

// wsWriteClientFrame writes one final, masked client frame.
func wsWriteClientFrame(t *testing.T, c net.Conn, opcode byte, payload []byte) {
	t.Helper()
	mask := [4]byte{1, 2, 3, 4}
	b := wsClientFrameHeader(opcode, uint64(len(payload)), mask)
	for i, p := range payload {
		b = append(b, p^mask[i%4])
	}
	if _, err := c.Write(b); err != nil {
		t.Fatalf("writing frame: %v", err)
	}
}

// wsReadServerFrame reads one unmasked server frame.
func wsReadServerFrame(t *testing.T, br *bufio.Reader) (opcode byte, payload []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("reading frame: %v", err)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		io.ReadFull(br, l[:])
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		io.ReadFull(br, l[:])
		n = binary.BigEndian.Uint64(l[:])
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatalf("reading frame payload: %v", err)
	}
	return h[0] & 0x0f, payload
}

// checkLocalReply checks an access-log line of a request the sidecar
// answered itself (or forwarded an error for).
func checkLocalReply(t *testing.T, side string, rec map[string]any, code int64, flags, details string) {
	t.Helper()
	if logNum(rec, "response_code") != code || logStr(rec, "response_flags") != flags || (details != "" && logStr(rec, "response_code_details") != details) ||
		!strings.HasPrefix(logStr(rec, "protocol"), "HTTP/1.") || rec["websocket_closed_by"] != nil {
		t.Errorf("%s access log: want %d %s %s, got:\n%s", side, code, flags, details, dumpLogLines([]map[string]any{rec}))
	}
}

func TestSidecarEndpointDown(t *testing.T) {
	t.Run("server sidecar down", func(t *testing.T) {
		m := newMesh(t, meshOptions{noServerSidecar: true})
		if out := runPyClient(t, m, 30*time.Second, "status", "/down"); out != "STATUS 503\n" {
			t.Fatalf("python client: %q, want STATUS 503", out)
		}
		resp, body, _ := rawHTTPExchange(t, m.egress(), "GET /plain HTTP/1.1\r\nHost: "+m.authority()+"\r\nConnection: close\r\n\r\n")
		if resp == nil || resp.StatusCode != 503 || !strings.Contains(body, "connection refused") {
			t.Fatalf("plain GET: %v %q", resp, body)
		}
		lines := m.waitLogLines(t, "client", 2)
		for i, rec := range lines {
			checkLocalReply(t, "client", rec, 503, "UF", "upstream_reset_before_response_started{connection_failure}")
			if r := logStr(rec, "upstream_transport_failure_reason"); !strings.Contains(r, "connection refused") {
				t.Errorf("line %d: upstream_transport_failure_reason %q", i, r)
			}
			// Envoy logs the host it failed to connect to as upstream_host
			// on a UF line.
			if got, want := logStr(rec, "upstream_host"), "127.0.0.1:"+strconv.Itoa(m.inboundPort); got != want {
				t.Errorf("line %d: upstream_host %q, want %q", i, got, want)
			}
			if got, want := logStr(rec, "upstream_cluster"), fmt.Sprintf("outbound|%d||%s", m.egressPort, meshHost); got != want {
				t.Errorf("line %d: upstream_cluster %q, want %q", i, got, want)
			}
		}
		if p := []string{logStr(lines[0], "path"), logStr(lines[1], "path")}; p[0] != "/down" || p[1] != "/plain" {
			t.Errorf("paths %v", p)
		}
	})

	t.Run("application down", func(t *testing.T) {
		m := newMesh(t, meshOptions{app: "none"})
		if out := runPyClient(t, m, 30*time.Second, "status", "/down"); out != "STATUS 503\n" {
			t.Fatalf("python client: %q, want STATUS 503", out)
		}
		srv := m.waitLogLines(t, "server", 1)[0]
		checkLocalReply(t, "server", srv, 503, "UF", "upstream_reset_before_response_started{connection_failure}")
		if r := logStr(srv, "upstream_transport_failure_reason"); !strings.Contains(r, "connection refused") {
			t.Errorf("server upstream_transport_failure_reason %q", r)
		}
		if got, want := logStr(srv, "upstream_host"), "127.0.0.1:"+strconv.Itoa(m.appPort); got != want {
			t.Errorf("server upstream_host %q, want %q", got, want)
		}
		// The client sidecar forwarded the server sidecar's answer.
		cli := m.waitLogLines(t, "client", 1)[0]
		checkLocalReply(t, "client", cli, 503, "-", "via_upstream")
		if logStr(cli, "request_id") != logStr(srv, "request_id") {
			t.Errorf("request ids differ: %s %s", logStr(cli, "request_id"), logStr(srv, "request_id"))
		}
	})
}

func TestSidecarUnknownService(t *testing.T) {
	m := newMesh(t, meshOptions{app: "echo"})
	host := "nope.default.svc.cluster.local:" + strconv.Itoa(m.egressPort)
	resp, body, _ := rawHTTPExchange(t, m.egress(), "GET /x HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
	if resp == nil || resp.StatusCode != 404 || !strings.Contains(body, "nope.default.svc.cluster.local") {
		t.Fatalf("GET unknown host: %v %q", resp, body)
	}
	res := runProcess(t, "", 30*time.Second, wsmeshBin, "client", "--connect-to", host+"="+m.egress(), "ws://"+host+"/ws")
	if res.ExitCode != 1 || !strings.Contains(res.Stderr, "HTTP 404") {
		t.Fatalf("wsmesh client to unknown host: exit %d, stderr %q", res.ExitCode, res.Stderr)
	}
	lines := m.waitLogLines(t, "client", 2)
	for _, rec := range lines {
		checkLocalReply(t, "client", rec, 404, "NR", "route_not_found")
		if logStr(rec, "authority") != host || logStr(rec, "upstream_cluster") != "" || logStr(rec, "upstream_host") != "" {
			t.Errorf("NR line: %s", dumpLogLines([]map[string]any{rec}))
		}
	}
	// A known host on the same connection's listener still works.
	if resp, _, _ := rawHTTPExchange(t, m.egress(), "GET /healthz HTTP/1.1\r\nHost: "+m.authority()+"\r\nConnection: close\r\n\r\n"); resp == nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz after NR: %v", resp)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(m.accessLog(t, "server")); n != 1 {
		t.Errorf("server sidecar logged %d lines, want 1 (only /healthz)", n)
	}
}

func TestSidecarServerClosesWebSocket(t *testing.T) {
	m := newMesh(t, meshOptions{})
	for _, tc := range []struct {
		code   int
		reason string
	}{{1001, "going away"}, {4000, "bye"}} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			out := runPyClient(t, m, 30*time.Second, "server-close", strconv.Itoa(tc.code), tc.reason)
			want := fmt.Sprintf("ECHO hello\nCLOSED %d %q\n", tc.code, tc.reason)
			want = strings.ReplaceAll(want, `"`, `'`)
			if !strings.HasPrefix(out, want) {
				t.Fatalf("python client:\n%s\nwant:\n%s", out, want)
			}
			up, down := pyBytes(t, out)
			path := "/sc/" + strconv.Itoa(tc.code)
			var cli, srv map[string]any
			deadline := time.Now().Add(10 * time.Second)
			for cli == nil || srv == nil {
				cli = logsByPath(t, "client", m.accessLog(t, "client"))[path]
				srv = logsByPath(t, "server", m.accessLog(t, "server"))[path]
				if time.Now().After(deadline) {
					t.Fatalf("no access-log lines for %s", path)
				}
				time.Sleep(20 * time.Millisecond)
			}
			checkWebSocketLines(t, m, cli, srv, wsExpect{
				path: path, up: up, down: down,
				framesDown: 3, msgsDown: 2, framesUp: 2, msgsUp: 1,
				closeCode: int64(tc.code), closeReason: tc.reason, closedBy: "upstream", flags: "-", userAgent: "Python/3",
			})
		})
	}
}

func TestSidecarClientVanishes(t *testing.T) {
	m := newMesh(t, meshOptions{})

	t.Run("process killed", func(t *testing.T) {
		py := startProcess(t, pythonBin, "-c", pyMeshClient, strconv.Itoa(m.egressPort), "open-wait")
		waitOutput(t, py, "OPEN\n", 20*time.Second)
		cs := m.waitConnections(t, "client", 1)
		if cs[0]["kind"] != "websocket" || cs[0]["side"] != "source" || cs[0]["path"] != "/vanish" ||
			logNum(cs[0], "bytes_received") != 8 || logNum(cs[0], "bytes_sent") != 4 {
			t.Errorf("client /connections: %v", cs)
		}
		if cs := m.waitConnections(t, "server", 1); cs[0]["side"] != "destination" || cs[0]["kind"] != "websocket" {
			t.Errorf("server /connections: %v", cs)
		}
		if err := syscall.Kill(py.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitProcess(t, py, 10*time.Second)
		m.waitConnections(t, "client", 0)
		m.waitConnections(t, "server", 0)
		cli := logsByPath(t, "client", m.waitLogLines(t, "client", 1))["/vanish"]
		srv := logsByPath(t, "server", m.waitLogLines(t, "server", 1))["/vanish"]
		flags := logStr(cli, "response_flags")
		if flags != "DC" && flags != "-" {
			t.Errorf("client response_flags %q, want DC or -", flags)
		}
		checkWebSocketLines(t, m, cli, srv, wsExpect{
			path: "/vanish", up: 8, down: 4, // "hi" masked, "hi" unmasked
			framesDown: 1, msgsDown: 1, framesUp: 1, msgsUp: 1,
			closeCode: -1, closedBy: "downstream", flags: flags, userAgent: "Python/3",
		})
	})

	t.Run("TCP reset without close frame", func(t *testing.T) {
		c, br := rawWebSocket(t, m.egress(), m.authority(), "/reset")
		wsWriteClientFrame(t, c, 1, []byte("ping?"))
		if op, p := wsReadServerFrame(t, br); op != 1 || string(p) != "ping?" {
			t.Fatalf("echo: %d %q", op, p)
		}
		m.waitConnections(t, "client", 1)
		c.(*net.TCPConn).SetLinger(0)
		c.Close() // RST
		m.waitConnections(t, "client", 0)
		m.waitConnections(t, "server", 0)
		cli := logsByPath(t, "client", m.waitLogLines(t, "client", 2))["/reset"]
		srv := logsByPath(t, "server", m.waitLogLines(t, "server", 2))["/reset"]
		if cli == nil || srv == nil {
			t.Fatalf("no lines for /reset")
		}
		if !strings.Contains(logStr(cli, "response_flags"), "DC") || logStr(cli, "connection_termination_details") == "" {
			t.Errorf("client line after RST: want DC and a termination detail:\n%s", dumpLogLines([]map[string]any{cli}))
		}
		// The client sidecar tells the server side in WebSocket terms (close
		// 1001 "downstream connection lost", a masked 34-byte frame) instead
		// of passing the reset on, so the server line has that close.
		const farewell = 2 + 4 + 2 + len("downstream connection lost")
		for side, rec := range map[string]map[string]any{"client": cli, "server": srv} {
			// Both lines carry the 1001 the client sidecar sent for the lost client.
			wantReceived, wantSent := int64(11), int64(7)
			if side == "server" {
				// ...and the app answers that close with its own (unmasked).
				wantReceived, wantSent = int64(11+farewell), int64(7+farewell-4)
			}
			if logStr(rec, "websocket_closed_by") != "downstream" || logNum(rec, "websocket_close_code") != 1001 ||
				logNum(rec, "bytes_received") != wantReceived || logNum(rec, "bytes_sent") != wantSent || logNum(rec, "response_code") != 101 ||
				logStr(rec, "user_agent") != "e2e-raw" {
				t.Errorf("%s line after RST:\n%s", side, dumpLogLines([]map[string]any{rec}))
			}
		}
	})
}

func TestSidecarConfigReload(t *testing.T) {
	const n = 100
	m := newMesh(t, meshOptions{})
	version := func(side string) string { return fmt.Sprint(m.adminJSON(t, side, "/config_dump")["version"]) }
	v0 := version("client")

	trigger := filepath.Join(t.TempDir(), "trigger")
	py := startProcess(t, pythonBin, "-c", pyMeshClient, strconv.Itoa(m.egressPort), "hold", strconv.Itoa(n), trigger)
	waitOut := func(want string) {
		t.Helper()
		waitOutput(t, py, want, 60*time.Second)
	}
	waitOut(fmt.Sprintf("ROUND 0 %d\n", n))
	openWS := func(side string) int {
		k := 0
		for _, c := range m.connections(t, side) {
			if c["kind"] == "websocket" {
				k++
			}
		}
		return k
	}
	m.waitConnections(t, "client", n)
	m.waitConnections(t, "server", n)

	// 1. An irrelevant change: another Service in a new file.
	writeConfigFile(t, filepath.Join(m.dir, "other.yaml"), "apiVersion: v1\nkind: Service\nmetadata:\n  name: other\nspec:\n  ports:\n  - port: 9090\n    name: http\n  selector:\n    app: other\n")
	m.waitLog(t, "client", "config reloaded", 1)
	m.waitLog(t, "server", "config reloaded", 1)
	v1 := version("client")
	if v1 == v0 || version("server") != v1 {
		t.Fatalf("versions after reload: %s -> client %s, server %s", v0, v1, version("server"))
	}
	if a, b := openWS("client"), openWS("server"); a != n || b != n {
		t.Fatalf("after a reload %d/%d WebSockets open, want %d", a, b, n)
	}
	writeConfigFile(t, trigger+".1", "echo")
	waitOut(fmt.Sprintf("ROUND 1 %d\n", n))

	// 2. An invalid change: logged, ignored, nothing cut.
	bad := "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: other\nspec:\n  host: other\n" +
		"  trafficPolicy:\n    connectionPool:\n      http:\n        h2UpgradePolicy: UPGRAED\n"
	writeConfigFile(t, filepath.Join(m.dir, "other-dr.yaml"), bad)
	for _, side := range []string{"client", "server"} {
		m.waitLog(t, side, "config reload failed", 1)
		log := m.logOutput(side)
		if !strings.Contains(log, "other-dr.yaml") || !strings.Contains(log, "h2UpgradePolicy") || !strings.Contains(log, "UPGRAED") {
			t.Errorf("%s sidecar's reload error does not name the file and field:\n%s", side, log)
		}
		if v := version(side); v != v1 {
			t.Errorf("%s sidecar's version %s after an invalid change, want %s", side, v, v1)
		}
		if code, body, _ := m.adminGet(side, "/ready"); code != 200 || body != "LIVE\n" {
			t.Errorf("%s /ready after invalid change: %d %q", side, code, body)
		}
	}
	writeConfigFile(t, trigger+".2", "echo")
	waitOut(fmt.Sprintf("ROUND 2 %d\n", n))
	// New WebSockets still go through, still over HTTP/1.1.
	out := runPyClient(t, m, 60*time.Second, "echo")
	if !strings.Contains(out, "CLOSED 1000\n") {
		t.Fatalf("new WebSocket after an invalid change:\n%s", out)
	}

	// 3. The file fixed: applied.
	writeConfigFile(t, filepath.Join(m.dir, "other-dr.yaml"), strings.Replace(bad, "UPGRAED", "DO_NOT_UPGRADE", 1))
	m.waitLog(t, "client", "config reloaded", 2)
	m.waitLog(t, "server", "config reloaded", 2)
	if v := version("client"); v == v1 {
		t.Errorf("version unchanged after the fix")
	}
	writeConfigFile(t, trigger+".3", "echo")
	waitOut(fmt.Sprintf("ROUND 3 %d\n", n))

	writeConfigFile(t, trigger+".4", "close")
	if code := waitProcess(t, py, 60*time.Second); code != 0 {
		t.Fatalf("python client exit %d:\n%s", code, processOutput(py))
	}
	if out := processOutput(py); !strings.Contains(out, fmt.Sprintf("OPEN BEFORE CLOSE %d\nCLOSED [1000]\n", n)) {
		t.Fatalf("python client:\n%s", out)
	}
	cli := logsByPath(t, "client", m.waitLogLines(t, "client", n+1))
	srv := logsByPath(t, "server", m.waitLogLines(t, "server", n+1))
	for i := range n {
		p := fmt.Sprintf("/h/%03d", i)
		// four rounds of "round-K-III" (11 bytes) and the close handshake
		checkWebSocketLines(t, m, cli[p], srv[p], wsExpect{
			path: p, up: 4*(2+4+11) + 8, down: 4*(2+11) + 4,
			framesDown: 5, msgsDown: 4, framesUp: 5, msgsUp: 4,
			closeCode: 1000, closedBy: "downstream", flags: "-", userAgent: "Python/3",
		})
		if t.Failed() {
			t.FailNow()
		}
	}
	for _, side := range []string{"client", "server"} {
		if strings.Contains(m.logOutput(side), "listener removed") {
			t.Errorf("%s sidecar removed a listener:\n%s", side, m.logOutput(side))
		}
	}
	m.waitConnections(t, "client", 0)
	m.waitConnections(t, "server", 0)
	_ = os.Remove(trigger)
}

func TestSidecarWebSocketIdleTimeout(t *testing.T) {
	m := newMesh(t, meshOptions{clientFlags: []string{"--websocket-idle-timeout", "1s"}})
	c, br := rawWebSocket(t, m.egress(), m.authority(), "/idle")
	wsWriteClientFrame(t, c, 1, []byte("once")) // 10 bytes
	if op, p := wsReadServerFrame(t, br); op != 1 || string(p) != "once" {
		t.Fatalf("echo: %d %q", op, p)
	}
	// After a second of silence the sidecar closes the WebSocket with
	// 1001 "idle timeout" (16 bytes); the client answers (8 bytes).
	start := time.Now()
	op, p := wsReadServerFrame(t, br)
	took := time.Since(start)
	if op != 8 || len(p) < 2 || binary.BigEndian.Uint16(p) != 1001 || string(p[2:]) != "idle timeout" ||
		took < 900*time.Millisecond || took > 5*time.Second {
		t.Fatalf("after %v: frame %d %q, want close 1001 \"idle timeout\" after about 1s", took, op, p)
	}
	wsWriteClientFrame(t, c, 8, p[:2])
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, br); isNetTimeout(err) {
		t.Fatalf("connection not closed after the close handshake")
	}
	rec := logsByPath(t, "client", m.waitLogLines(t, "client", 1))["/idle"]
	if !strings.Contains(logStr(rec, "response_flags"), "SI") || logNum(rec, "response_code") != 101 ||
		logStr(rec, "connection_termination_details") != "websocket idle timeout" || logNum(rec, "websocket_close_code") != 1001 {
		t.Errorf("idle timeout line:\n%s", dumpLogLines([]map[string]any{rec}))
	}
	// bytes_received counts what the downstream client sent, not the close
	// frame the sidecar itself wrote upstream.
	if got, sent := logNum(rec, "bytes_received"), logNum(rec, "bytes_sent"); got != 18 || sent != 22 {
		t.Errorf("bytes_received %d, bytes_sent %d; want 18 (10+8 from the client) and 22 (6+16 to it)", got, sent)
	}
	m.waitConnections(t, "client", 0)
	m.waitConnections(t, "server", 0)
}
