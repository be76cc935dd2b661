package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/wsmesh/wsmesh/internal/wsclient"
)

// This file tests the guide's two workloads end to end: wsmesh echo (the
// websockets-server) against the Python websockets client, and wsmesh
// client against the Python websockets server, including the interactive
// transcript of the guide driven through a pseudo-terminal.

// startEcho runs "wsmesh echo" on a free loopback port with extra flags and
// returns its host:port and process.
func startEcho(t *testing.T, flags ...string) (string, *exec.Cmd) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cmd := startProcess(t, append([]string{wsmeshBin, "echo", "--listen", addr}, flags...)...)
	waitForPort(t, addr)
	return addr, cmd
}

// pyEchoClient exercises wsmesh echo with the Python websockets client.
// argv: URI CASE. It prints one line per observation for exact assertions.
const pyEchoClient = `
import asyncio, sys
import websockets
from websockets.frames import OP_TEXT

async def main(uri, case):
    if case == "text":
        async with websockets.connect(uri) as ws:
            for m in ["hello", "", "h\u00e9llo \u2713"]:
                await ws.send(m)
                r = await ws.recv()
                print(type(r).__name__, r == m, len(r))
    elif case == "binary":
        async with websockets.connect(uri) as ws:
            for m in [b"\x00\x01\xfe\xff", b""]:
                await ws.send(m)
                r = await ws.recv()
                print(type(r).__name__, r.hex() or "-")
    elif case == "large":
        async with websockets.connect(uri, max_size=None) as ws:
            for m in ["a" * (1 << 20), bytes(range(256)) * 4096, b"\x00" * (16 << 20)]:
                await ws.send(m)
                r = await ws.recv()
                print(type(r).__name__, len(r), r == m)
    elif case == "fragmented":
        async with websockets.connect(uri) as ws:
            await ws.send(["frag", "mented ", "text"])
            print(repr(await ws.recv()))
            await ws.send([b"\x01", b"\x02\x03"])
            print(repr(await ws.recv()))
    elif case == "ping":
        async with websockets.connect(uri) as ws:
            waiter = await ws.ping(b"wsmesh")
            await asyncio.wait_for(waiter, 5)
            print("pong")
    elif case == "close":
        for code, reason in [(1000, ""), (1001, "bye"), (4000, "custom reason")]:
            ws = await websockets.connect(uri)
            await ws.close(code, reason)
            print(ws.close_code, repr(ws.close_reason))
    elif case == "deflate":
        async with websockets.connect(uri) as ws:
            print(ws.response_headers.get("Sec-WebSocket-Extensions"))
            print([e.name for e in ws.extensions])
            m = "wsmesh " * 20000
            await ws.send(m)
            print(await ws.recv() == m)
    elif case == "subprotocol":
        async with websockets.connect(uri, subprotocols=["x", "b", "a"]) as ws:
            print(ws.subprotocol)
        async with websockets.connect(uri, subprotocols=["x"]) as ws:
            print(ws.subprotocol)
    elif case == "oversize":
        async with websockets.connect(uri) as ws:
            await ws.send(b"\x00" * 1024)
            print(len(await ws.recv()))
            await ws.send(b"\x00" * 1025)
            await ws.wait_closed()
            print(ws.close_code, repr(ws.close_reason))
    elif case == "utf8":
        async with websockets.connect(uri) as ws:
            await ws.write_frame(True, OP_TEXT, b"ok\xff\xfe")
            await ws.wait_closed()
            print(ws.close_code, repr(ws.close_reason))
    elif case == "wait-close":
        async with websockets.connect(uri) as ws:
            print("OPEN", flush=True)
            await ws.wait_closed()
            print(ws.close_code, repr(ws.close_reason))

asyncio.run(main(sys.argv[1], sys.argv[2]))
`

func TestPythonClientAgainstEcho(t *testing.T) {
	requirePythonWebsockets(t)
	addr, _ := startEcho(t, "--subprotocol", "a", "--subprotocol", "b")
	small, _ := startEcho(t, "--max-message-size", "1024")
	tests := []struct {
		name, addr, want string
	}{
		{"text", addr, "str True 5\nstr True 0\nstr True 7\n"},
		{"binary", addr, "bytes 0001feff\nbytes -\n"},
		{"large", addr, "str 1048576 True\nbytes 1048576 True\nbytes 16777216 True\n"},
		{"fragmented", addr, "'fragmented text'\nb'\\x01\\x02\\x03'\n"},
		{"ping", addr, "pong\n"},
		{"close", addr, "1000 ''\n1001 'bye'\n4000 'custom reason'\n"},
		{"deflate", addr, "permessage-deflate; client_no_context_takeover; server_no_context_takeover\n['permessage-deflate']\nTrue\n"},
		{"subprotocol", addr, "b\nNone\n"},
		{"oversize", small, "1024\n1009 'message larger than 1024 bytes'\n"},
		{"utf8", addr, "1007 'invalid UTF-8 in text message'\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runProcess(t, "", 60*time.Second, pythonBin, "-c", pyEchoClient, "ws://"+tt.addr+"/", tt.name)
			if res.ExitCode != 0 || res.Stdout != tt.want {
				t.Fatalf("exit %d\nstdout:\n%s\nwant:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, tt.want, res.Stderr)
			}
		})
	}
}

func TestEchoRefusesBadHTTP(t *testing.T) {
	addr, echo := startEcho(t)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("GET /healthz: %d %q", resp.StatusCode, body)
	}

	resp, err = client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 426 || resp.Header.Get("Upgrade") != "websocket" ||
		!strings.HasPrefix(string(body), "426 Upgrade Required: this is a WebSocket endpoint") {
		t.Fatalf("plain GET /: %d %v %q", resp.StatusCode, resp.Header, body)
	}

	raw := func(request string) (*http.Response, string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, request)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("reading response to %q: %v", request, err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	const head = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	const key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	if resp, body := raw(head + "Sec-WebSocket-Version: 13\r\n\r\n"); resp.StatusCode != 400 || !strings.Contains(body, "missing Sec-WebSocket-Key") {
		t.Fatalf("missing key: %d %q", resp.StatusCode, body)
	}
	if resp, body := raw(head + key + "Sec-WebSocket-Version: 8\r\n\r\n"); resp.StatusCode != 400 ||
		resp.Header.Get("Sec-WebSocket-Version") != "13" || !strings.Contains(body, "only 13 is supported") {
		t.Fatalf("wrong version: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if resp, _ := raw("NOT A REQUEST\r\n\r\n"); resp.StatusCode != 400 {
		t.Fatalf("garbage request line: %d", resp.StatusCode)
	}
	if resp, body := raw(head + key + "Sec-WebSocket-Version: 13\r\n\r\n"); resp.StatusCode != 101 {
		t.Fatalf("valid handshake after bad ones: %d %q", resp.StatusCode, body)
	}

	// The server survived it all and says why it refused.
	waitForPort(t, addr)
	logs := processOutput(echo)
	for _, want := range []string{"status=426", "missing Sec-WebSocket-Key", "only 13 is supported"} {
		if !strings.Contains(logs, want) {
			t.Errorf("echo log lacks %q:\n%s", want, logs)
		}
	}
	if !processRunning(echo) {
		t.Fatal("echo exited")
	}
}

func TestEchoSIGTERMSendsGoingAway(t *testing.T) {
	requirePythonWebsockets(t)
	addr, echo := startEcho(t)
	py := startProcess(t, pythonBin, "-c", pyEchoClient, "ws://"+addr+"/", "wait-close")
	waitOutput(t, py, "OPEN", 10*time.Second)
	if err := syscall.Kill(echo.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitProcess(t, py, 10*time.Second); code != 0 || processOutput(py) != "OPEN\n1001 ''\n" {
		t.Fatalf("python client: exit %d, output %q, want close 1001", code, processOutput(py))
	}
	if code := waitProcess(t, echo, 10*time.Second); code != 0 {
		t.Fatalf("echo exit code %d after SIGTERM:\n%s", code, processOutput(echo))
	}
	if logs := processOutput(echo); !strings.Contains(logs, "signal received") || !strings.Contains(logs, "code=1001") {
		t.Fatalf("echo log does not name the shutdown:\n%s", logs)
	}
}

// pyServer is a Python websockets server for wsmesh client. argv: PORT.
// It echoes messages, except for a few commands that make it act.
const pyServer = `
import asyncio, sys
import websockets

async def handler(ws, path):
    async for msg in ws:
        if msg == "close-4000":
            await ws.close(4000, "bye")
        elif msg == "close-1001":
            await ws.close(1001)
        elif msg == "fragments":
            await ws.send(["frag", "mented"])
        elif msg == "binary":
            await ws.send(b"\x00\x01\xfe\xff")
        elif msg == "ping":
            await asyncio.wait_for(await ws.ping(), 5)
            await ws.send("pong received")
        elif msg == "info":
            exts = ",".join(e.name for e in ws.extensions)
            await ws.send(f"subprotocol={ws.subprotocol} extensions={exts} x-token={ws.request_headers.get('X-Token')}")
        else:
            await ws.send(msg)

async def main():
    async with websockets.serve(handler, "127.0.0.1", int(sys.argv[1]), subprotocols=["chat.v2", "chat.v1"], max_size=None):
        print("READY", flush=True)
        await asyncio.Future()

asyncio.run(main())
`

// startPyServer runs pyServer on a free loopback port and returns its URL.
func startPyServer(t *testing.T) string {
	t.Helper()
	port := freePort(t)
	startProcess(t, pythonBin, "-c", pyServer, strconv.Itoa(port))
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitForPort(t, addr)
	return "ws://" + addr
}

func TestClientAgainstPythonServer(t *testing.T) {
	requirePythonWebsockets(t)
	url := startPyServer(t)
	big := strings.Repeat("m", 1<<20)
	tests := []struct {
		name  string
		flags []string
		input string
		want  string // between "Connected" and "Connection closed" lines
		close string
	}{
		{"text", nil, "hello\nworld\n", "< hello\n< world\n", "1000 (OK)"},
		{"binary", []string{"--binary"}, "hi\n", "< (binary) 6869\n", "1000 (OK)"},
		{"binary from server", nil, "binary\n", "< (binary) 0001feff\n", "1000 (OK)"},
		{"1 MiB", nil, big + "\n", "< " + big + "\n", "1000 (OK)"},
		{"fragmented", nil, "fragments\n", "< fragmented\n", "1000 (OK)"},
		{"ping", nil, "ping\n", "< pong received\n", "1000 (OK)"},
		{"negotiation", []string{"--subprotocol", "chat.v1", "-H", "X-Token: abc"}, "info\n",
			"< subprotocol=chat.v1 extensions=permessage-deflate x-token=abc\n", "1000 (OK)"},
		{"server closes 4000", nil, "close-4000\n", "", "4000 (private use) bye"},
		{"server closes 1001", nil, "close-1001\nnot sent\n", "", "1001 (going away)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{wsmeshBin, "client"}, tt.flags...)
			res := runProcess(t, tt.input, 30*time.Second, append(args, url)...)
			want := "Connected to " + url + ".\n" + tt.want + "Connection closed: " + tt.close + ".\n"
			if res.ExitCode != 0 || res.Stdout != want || res.Stderr != "" {
				t.Fatalf("exit %d\nstdout:\n%.300q\nwant:\n%.300q\nstderr:\n%s", res.ExitCode, res.Stdout, want, res.Stderr)
			}
		})
	}
}

// TestCloseWordingMatchesPython compares wsmesh's close-status wording with
// websockets' own for every kind of code.
func TestCloseWordingMatchesPython(t *testing.T) {
	requirePythonWebsockets(t)
	codes := []int{1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015, 1016, 2000, 3000, 3999, 4000, 4999}
	var script strings.Builder
	script.WriteString("from websockets.frames import Close\n")
	var want strings.Builder
	for _, c := range codes {
		for _, reason := range []string{"", "some reason"} {
			fmt.Fprintf(&script, "print(Close(%d, %q))\n", c, reason)
			want.WriteString(wsclient.FormatClose(c, reason) + "\n")
		}
	}
	res := runProcess(t, "", 30*time.Second, pythonBin, "-c", script.String())
	if res.ExitCode != 0 || res.Stdout != want.String() {
		t.Fatalf("python:\n%s\nwsmesh:\n%s\nstderr: %s", res.Stdout, want.String(), res.Stderr)
	}
}

func TestClientConnectErrors(t *testing.T) {
	refused := "ws://127.0.0.1:" + strconv.Itoa(freePort(t))
	addr, _ := startEcho(t)
	tests := []struct{ url, cause string }{
		{refused, "connect: connection refused"},
		{"ws://" + addr + "/healthz", "server rejected WebSocket connection: HTTP 200"},
		{"http://" + addr, "http://" + addr + " isn't a valid URI: scheme isn't ws or wss"},
	}
	for _, tt := range tests {
		res := runProcess(t, "", 30*time.Second, wsmeshBin, "client", tt.url)
		prefix := "Failed to connect to " + tt.url + ": "
		line := strings.TrimSuffix(res.Stderr, "\n")
		if res.ExitCode != 1 || res.Stdout != "" || strings.Contains(line, "\n") ||
			!strings.Contains(line, prefix) || !strings.Contains(line, tt.cause) || !strings.HasSuffix(line, ".") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1 and one line %q...%q", tt.url, res.ExitCode, res.Stdout, res.Stderr, prefix, tt.cause)
		}
	}
}

func TestClientPipedAgainstEcho(t *testing.T) {
	addr, _ := startEcho(t)
	url := "ws://" + addr
	checkGuidePiped(t, 30*time.Second, url, url)
}

// checkGuidePiped pipes the guide's session ("hello", "world", end of
// input) into wsmesh client with args (the URL last) and checks that it
// prints the guide's transcript for url.
func checkGuidePiped(t *testing.T, timeout time.Duration, url string, args ...string) {
	t.Helper()
	res := runProcess(t, "hello\nworld\n", timeout, append([]string{wsmeshBin, "client"}, args...)...)
	want := "Connected to " + url + ".\n< hello\n< world\nConnection closed: 1000 (OK).\n"
	if res.ExitCode != 0 || res.Stdout != want {
		t.Fatalf("wsmesh client: exit %d\nstdout %q\nwant   %q\nstderr %s", res.ExitCode, res.Stdout, want, res.Stderr)
	}
}

// TestInteractiveTranscript types the guide's session into wsmesh client
// and into python3 -m websockets through a pseudo-terminal and checks that
// both screens show the guide's transcript.
func TestInteractiveTranscript(t *testing.T) {
	addr, _ := startEcho(t)
	url := "ws://" + addr
	t.Run("wsmesh", func(t *testing.T) {
		checkGuideTerminal(t, url, wsmeshBin, "client", url)
	})
	t.Run("python", func(t *testing.T) {
		requirePythonWebsockets(t)
		checkGuideTerminal(t, url, pythonBin, "-m", "websockets", url)
	})
}

// checkGuideTerminal types the guide's session ("hello", "world", Ctrl-D)
// into args on a pseudo-terminal and checks that the screen shows the
// guide's transcript for url.
func checkGuideTerminal(t *testing.T, url string, args ...string) {
	t.Helper()
	term := startPTY(t, args...)
	term.waitConnected(t, url)
	term.typeLine(t, "hello", "< hello")
	term.typeLine(t, "world", "< world")
	term.send(t, "\x04") // Ctrl-D
	want := []string{
		"Connected to " + url + ".",
		"> hello",
		"< hello",
		"> world",
		"< world",
		"Connection closed: 1000 (OK).",
	}
	if got := term.finish(t); !equalLines(got, want) {
		t.Fatalf("screen:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestInteractiveServerClose checks that a server-initiated close looks the
// same on the screen of wsmesh client and of python3 -m websockets.
func TestInteractiveServerClose(t *testing.T) {
	requirePythonWebsockets(t)
	url := startPyServer(t)
	want := []string{
		"Connected to " + url + ".",
		"> hi",
		"< hi",
		"> close-4000",
		"Connection closed: 4000 (private use) bye.",
	}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"wsmesh", []string{wsmeshBin, "client", url}},
		{"python", []string{pythonBin, "-m", "websockets", url}},
	} {
		t.Run(c.name, func(t *testing.T) {
			term := startPTY(t, c.args...)
			term.waitConnected(t, url)
			term.typeLine(t, "hi", "< hi")
			term.typeLine(t, "close-4000", "Connection closed")
			if got := term.finish(t); !equalLines(got, want) {
				t.Fatalf("screen:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func equalLines(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

// ptySession is a process running on a pseudo-terminal.
type ptySession struct {
	cmd    *exec.Cmd
	master *os.File
	out    *lockedBuffer // everything the process wrote to the terminal
	eof    chan struct{} // closed when reading the terminal ends
	exited chan struct{}
}

// startPTY starts args on a new 24x120 pseudo-terminal (its stdin, stdout
// and stderr); the process is killed by PID when the test ends.
func startPTY(t *testing.T, args ...string) *ptySession {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "TERM=xterm")
	master, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 120})
	if err != nil {
		t.Fatalf("starting %q on a pty: %v", args, err)
	}
	s := &ptySession{cmd: cmd, master: master, out: &lockedBuffer{}, eof: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(s.eof)
		io.Copy(s.out, master) // ends with EIO once the process and its terminal are gone
	}()
	go func() {
		cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
		}
		master.Close()
		if t.Failed() {
			t.Logf("terminal output of %q: %q", args, s.out.String())
		}
	})
	return s
}

func (s *ptySession) waitFor(t *testing.T, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.out.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal never showed %q; got %q", text, s.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitConnected waits for the client's "Connected to url." line and for
// its "> " prompt (wsmesh client prints it after that line; python3 -m
// websockets prints it first and writes the line above it): keys typed
// before the prompt is up are echoed by the terminal itself, as they
// would be for a person typing that fast.
func (s *ptySession) waitConnected(t *testing.T, url string) {
	t.Helper()
	s.waitFor(t, "Connected to "+url+".")
	s.waitFor(t, "> ")
}

func (s *ptySession) send(t *testing.T, keys string) {
	t.Helper()
	if _, err := io.WriteString(s.master, keys); err != nil {
		t.Fatalf("typing %q: %v", keys, err)
	}
}

// typeLine types line and Enter, then waits for response on the terminal.
func (s *ptySession) typeLine(t *testing.T, line, response string) {
	t.Helper()
	before := len(s.out.String())
	s.send(t, line+"\r")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.out.String()[before:], response) {
		if time.Now().After(deadline) {
			t.Fatalf("after typing %q the terminal never showed %q; got %q", line, response, s.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// finish waits for the process to exit and returns the screen it left.
func (s *ptySession) finish(t *testing.T) []string {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("process still running; terminal: %q", s.out.String())
	}
	select {
	case <-s.eof:
	case <-time.After(5 * time.Second):
	}
	return renderScreen(s.out.String())
}

// renderScreen replays terminal output on an unbounded screen and returns
// its non-empty lines with trailing spaces removed. It understands what the
// clients use: printable text, CR, LF, BS, ESC 7/8 (save/restore cursor)
// and CSI A, B, C, D (cursor moves), K (erase line) and L (insert line);
// other escape sequences are ignored.
func renderScreen(out string) []string {
	var lines [][]rune
	row, col, savedRow, savedCol := 0, 0, 0, 0
	grow := func() {
		for len(lines) <= row {
			lines = append(lines, nil)
		}
	}
	rs := []rune(out)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case r == '\r':
			col = 0
		case r == '\n':
			row++
		case r == '\b':
			if col > 0 {
				col--
			}
		case r == 0x1b && i+1 < len(rs):
			i++
			switch rs[i] {
			case '7':
				savedRow, savedCol = row, col
			case '8':
				row, col = savedRow, savedCol
			case '[':
				j := i + 1
				for j < len(rs) && (rs[j] < 0x40 || rs[j] > 0x7e) {
					j++
				}
				if j >= len(rs) {
					i = j
					break
				}
				params, final := string(rs[i+1:j]), rs[j]
				i = j
				n, err := strconv.Atoi(params)
				if err != nil || n < 1 {
					n = 1
				}
				switch final {
				case 'A':
					row = max(row-n, 0)
				case 'B':
					row += n
				case 'C':
					col += n
				case 'D':
					col = max(col-n, 0)
				case 'K':
					grow()
					if params == "" || params == "0" {
						if col < len(lines[row]) {
							lines[row] = lines[row][:col]
						}
					} else if params == "2" {
						lines[row] = nil
					}
				case 'L':
					grow()
					blank := make([][]rune, n)
					lines = append(lines[:row], append(blank, lines[row:]...)...)
				}
			}
		case r < 0x20 || r == 0x7f:
			// other control characters: bell, etc.
		default:
			grow()
			for len(lines[row]) <= col {
				lines[row] = append(lines[row], ' ')
			}
			lines[row][col] = r
			col++
		}
	}
	var screen []string
	for _, l := range lines {
		if s := strings.TrimRight(string(l), " "); s != "" {
			screen = append(screen, s)
		}
	}
	return screen
}
