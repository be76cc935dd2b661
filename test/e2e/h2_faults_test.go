package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// This file tests the HTTP/2 hop between the sidecars when things go
// wrong: a peer without extended CONNECT, a peer that resets one stream, a
// peer that drains (GOAWAY), a peer that dies, and a rapid-reset flood.

// TestH2PeerWithoutExtendedConnect: the server sidecar has no EnvoyFilter,
// so it does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL. The client
// sidecar falls back to an HTTP/1.1 upgrade (and says so); with
// --h2-strict it answers 503 with flag UR, as Envoy does.
func TestH2PeerWithoutExtendedConnect(t *testing.T) {
	t.Run("fallback", func(t *testing.T) {
		m := newMesh(t, meshOptions{h2: true})
		for i := range 2 { // the second one uses the remembered answer
			out := runPyClient(t, m, 90*time.Second, "echo")
			if !strings.Contains(out, "bytes 70000 True\nCLOSED 1000\n") {
				t.Fatalf("echo %d with fallback:\n%s", i, out)
			}
		}
		cl := m.waitLogLines(t, "client", 2)
		sl := m.waitLogLines(t, "server", 2)
		for i := range 2 {
			c, s := cl[i], sl[i]
			var ck h2Check
			if d := logStr(c, "response_code_details"); !strings.Contains(d, "http1_fallback") || !strings.HasPrefix(d, "via_upstream") {
				ck.errs = append(ck.errs, "client response_code_details "+d)
			}
			ck.eq("client", c, "protocol", "HTTP/1.1")
			ck.eq("server", s, "protocol", "HTTP/1.1")
			ck.eq("client", c, "response_code", 101)
			ck.eq("server", s, "response_code", 101)
			ck.eq("client", c, "response_flags", "-")
			ck.eq("server", s, "bytes_received", logNum(c, "bytes_received"))
			ck.eq("server", s, "bytes_sent", logNum(c, "bytes_sent"))
			ck.eq("server", s, "request_id", logStr(c, "request_id"))
			ck.report(t, fmt.Sprintf("fallback %d", i), c, s)
		}
		code, body, err := m.adminGet("client", "/stats/prometheus")
		if err != nil || code != 200 || !strings.Contains(body, "wsmesh_h2_extended_connect_fallback_total") {
			t.Errorf("client sidecar metrics: %d %v; no wsmesh_h2_extended_connect_fallback_total", code, err)
		}
	})
	t.Run("strict", func(t *testing.T) {
		m := newMesh(t, meshOptions{h2: true, clientFlags: []string{"--h2-strict"}})
		if out := runPyClient(t, m, 60*time.Second, "status", "/strict"); out != "STATUS 503\n" {
			t.Fatalf("python client: %q, want STATUS 503", out)
		}
		c := m.waitLogLines(t, "client", 1)[0]
		var ck h2Check
		ck.eq("client", c, "response_code", 503)
		ck.eq("client", c, "response_flags", "UR")
		ck.eq("client", c, "path", "/strict")
		ck.eq("client", c, "upstream_host", "127.0.0.1:"+strconv.Itoa(m.inboundPort))
		ck.report(t, "strict", c)
		if lines := m.accessLog(t, "server"); len(lines) != 0 {
			t.Errorf("nothing should have reached the server sidecar:\n%s", dumpLogLines(lines))
		}
	})
}

// fakeH2Server is an h2c server built on the Framer: it advertises
// extended CONNECT, answers every extended CONNECT with 200 and then acts
// as a WebSocket echo server on the stream's bytes; a text message "reset"
// on a stream makes it answer with RST_STREAM (INTERNAL_ERROR) on that
// stream only.
type fakeH2Server struct {
	ln     net.Listener
	conns  atomic.Int32
	resets atomic.Int32
	wg     sync.WaitGroup
	mu     sync.Mutex
	open   []net.Conn
	errs   []string
}

func startFakeH2Server(t *testing.T) *fakeH2Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeH2Server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.mu.Lock()
			s.open = append(s.open, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				if err := s.serve(c); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					s.mu.Lock()
					s.errs = append(s.errs, err.Error())
					s.mu.Unlock()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.errs) > 0 {
			t.Logf("fake HTTP/2 server errors: %v", s.errs)
		}
	})
	return s
}

func (s *fakeH2Server) addr() string { return s.ln.Addr().String() }

type fakeStream struct {
	path string
	buf  []byte // WebSocket bytes not yet parsed
}

func (s *fakeH2Server) serve(c net.Conn) error {
	br := bufio.NewReader(c)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(br, preface); err != nil || string(preface) != http2.ClientPreface {
		return fmt.Errorf("bad preface %q: %v", preface, err)
	}
	fr := http2.NewFramer(c, br)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100}); err != nil {
		return err
	}
	dec := hpack.NewDecoder(4096, nil)
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	streams := map[uint32]*fakeStream{}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return err
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := fr.WritePing(true, f.Data); err != nil {
					return err
				}
			}
		case *http2.HeadersFrame:
			if !f.HeadersEnded() {
				return errors.New("CONTINUATION not supported by the fake server")
			}
			fields, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				return err
			}
			var method, protocol, path string
			for _, hf := range fields {
				switch hf.Name {
				case ":method":
					method = hf.Value
				case ":protocol":
					protocol = hf.Value
				case ":path":
					path = hf.Value
				}
			}
			hbuf.Reset()
			if method != "CONNECT" || protocol != "websocket" {
				enc.WriteField(hpack.HeaderField{Name: ":status", Value: "404"})
				if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hbuf.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
					return err
				}
				continue
			}
			enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
				return err
			}
			streams[f.StreamID] = &fakeStream{path: path}
		case *http2.DataFrame:
			id := f.StreamID
			if n := uint32(len(f.Data())); n > 0 {
				if err := fr.WriteWindowUpdate(0, n); err != nil {
					return err
				}
				if err := fr.WriteWindowUpdate(id, n); err != nil {
					return err
				}
			}
			st := streams[id]
			if st == nil {
				continue
			}
			st.buf = append(st.buf, f.Data()...)
			for {
				op, payload, rest, ok := parseClientFrame(st.buf)
				if !ok {
					break
				}
				st.buf = rest
				if op == 0x1 && string(payload) == "reset" {
					s.resets.Add(1)
					if err := fr.WriteRSTStream(id, http2.ErrCodeInternal); err != nil {
						return err
					}
					delete(streams, id)
					break
				}
				if err := fr.WriteData(id, op == 0x8, serverFrame(op, payload)); err != nil {
					return err
				}
				if op == 0x8 {
					delete(streams, id)
					break
				}
			}
			if f.StreamEnded() && streams[id] != nil {
				delete(streams, id)
				if err := fr.WriteData(id, true, nil); err != nil {
					return err
				}
			}
		case *http2.RSTStreamFrame:
			delete(streams, f.StreamID)
		case *http2.GoAwayFrame:
			return nil
		}
	}
}

// parseClientFrame parses one masked client frame (final, no extensions).
func parseClientFrame(b []byte) (op byte, payload, rest []byte, ok bool) {
	if len(b) < 2 {
		return 0, nil, b, false
	}
	op = b[0] & 0x0f
	n := uint64(b[1] & 0x7f)
	h := 2
	switch n {
	case 126:
		if len(b) < 4 {
			return 0, nil, b, false
		}
		n, h = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return 0, nil, b, false
		}
		n, h = binary.BigEndian.Uint64(b[2:]), 10
	}
	masked := b[1]&0x80 != 0
	if masked {
		h += 4
	}
	if uint64(len(b)) < uint64(h)+n {
		return 0, nil, b, false
	}
	payload = append([]byte(nil), b[h:h+int(n)]...)
	if masked {
		mask := b[h-4 : h]
		for i := range payload {
			payload[i] ^= mask[i%4]
		}
	}
	return op, payload, b[h+int(n):], true
}

// serverFrame builds one final, unmasked server frame (payload < 64 KiB).
func serverFrame(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	if n := len(payload); n < 126 {
		b = append(b, byte(n))
	} else {
		b = append(b, 126, byte(n>>8), byte(n))
	}
	return append(b, payload...)
}

// h2RawEcho sends a text message on a raw WebSocket and expects it back.
func h2RawEcho(t *testing.T, c net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	wsWriteClientFrame(t, c, 0x1, []byte(msg))
	op, p := wsReadServerFrame(t, br)
	if op != 0x1 || string(p) != msg {
		t.Fatalf("echo of %q: opcode %d %q", msg, op, p)
	}
}

// TestH2PeerResetsOneStream: the HTTP/2 peer resets one tunnelled
// WebSocket's stream. Only that WebSocket ends (logged UR or UC by the
// client sidecar); another one on the same HTTP/2 connection goes on.
func TestH2PeerResetsOneStream(t *testing.T) {
	fake := startFakeH2Server(t)
	_, port, _ := net.SplitHostPort(fake.addr())
	p, _ := strconv.Atoi(port)
	m := newMesh(t, meshOptions{h2: true, app: "none", noServerSidecar: true, endpointPort: p})

	keep, keepBR := rawWebSocket(t, m.egress(), m.authority(), "/keep")
	reset, resetBR := rawWebSocket(t, m.egress(), m.authority(), "/reset")
	h2RawEcho(t, keep, keepBR, "one")
	h2RawEcho(t, reset, resetBR, "one")
	if st := m.h2Stats(t, "client"); st.H2Pool.Dialed != 1 || st.H2Pool.Endpoints[fake.addr()].ActiveStreams != 2 {
		t.Fatalf("client sidecar h2_pool: %+v, want 2 streams on 1 connection", st.H2Pool)
	}

	wsWriteClientFrame(t, reset, 0x1, []byte("reset"))
	reset.SetReadDeadline(time.Now().Add(30 * time.Second))
	rest, err := io.ReadAll(resetBR)
	if isNetTimeout(err) {
		t.Fatalf("the reset WebSocket is still open after 30s (read %q)", rest)
	}
	if fake.resets.Load() != 1 {
		t.Fatalf("fake server sent %d resets", fake.resets.Load())
	}
	t.Logf("the reset WebSocket's client read %q, then %v", rest, err)

	// The other WebSocket on the same connection is unaffected.
	h2RawEcho(t, keep, keepBR, "two")
	h2RawEcho(t, keep, keepBR, strings.Repeat("x", 1000))
	if n := fake.conns.Load(); n != 1 {
		t.Errorf("fake server accepted %d connections, want 1", n)
	}
	st := m.h2WaitStats(t, "client", 10*time.Second, "1 active stream", func(s h2Stats) bool {
		return s.H2Pool.Endpoints[fake.addr()].ActiveStreams == 1
	})
	if st.H2Pool.Dialed != 1 {
		t.Errorf("client sidecar h2_pool after the reset: %+v, want the 1 connection still in use", st.H2Pool)
	}
	wsWriteClientFrame(t, keep, 0x8, []byte{0x03, 0xe8})
	if op, p := wsReadServerFrame(t, keepBR); op != 0x8 || !bytes.Equal(p, []byte{0x03, 0xe8}) {
		t.Fatalf("close echo: %d %x", op, p)
	}
	keep.Close()

	lines := logsByPath(t, "client", m.waitLogLines(t, "client", 2))
	r, k := lines["/reset"], lines["/keep"]
	if r == nil || k == nil {
		t.Fatalf("client access log:\n%s", dumpLogLines(m.accessLog(t, "client")))
	}
	var ck h2Check
	ck.eq("client /reset", r, "response_code", 101)
	ck.eq("client /reset", r, "upstream_host", fake.addr())
	if f := logStr(r, "response_flags"); f != "UR" && f != "UC" {
		ck.errs = append(ck.errs, "client /reset response_flags "+f+", want UR or UC")
	}
	ck.eq("client /reset", r, "websocket_closed_by", "upstream")
	ck.eq("client /keep", k, "response_flags", "-")
	ck.eq("client /keep", k, "websocket_close_code", 1000)
	ck.eq("client /keep", k, "websocket_messages_downstream", 3)
	ck.report(t, "reset", r, k)
	t.Logf("client sidecar logged the reset WebSocket with %s, %q", logStr(r, "response_flags"), logStr(r, "connection_termination_details"))
	m.waitConnections(t, "client", 0)
}

// TestH2PeerDrains: POST /drain on the server sidecar sends GOAWAY on its
// HTTP/2 connections; after --drain-grace the open WebSockets get close
// 1001 and the sidecar exits. A new server sidecar on the same port then
// takes new WebSockets over a new TCP connection.
func TestH2PeerDrains(t *testing.T) {
	const n = 5
	m := newMesh(t, meshOptions{h2: true, allowConnect: true, serverFlags: []string{"--drain-grace", "1s"}})
	py := startProcess(t, pythonBin, "-c", pyH2Client, strconv.Itoa(m.egressPort), "hold", strconv.Itoa(n))
	waitOutput(t, py, fmt.Sprintf("OPEN %d\n", n), 90*time.Second)
	ep := "127.0.0.1:" + strconv.Itoa(m.inboundPort)
	if st := m.h2Stats(t, "client"); st.H2Pool.Dialed != 1 || st.H2Pool.Endpoints[ep].ActiveStreams != n {
		t.Fatalf("client sidecar h2_pool: %+v, want %d streams on 1 connection", st.H2Pool, n)
	}

	oldServer := m.procs["server"]
	m.h2AdminPost(t, "server", "/drain")
	waitOutput(t, py, fmt.Sprintf("CLOSED %d [1001]\n", n), 60*time.Second)
	if code := waitProcess(t, oldServer, 60*time.Second); code != 0 {
		t.Fatalf("drained server sidecar exit %d:\n%s", code, processOutput(oldServer))
	}
	if code := waitProcess(t, py, 30*time.Second); code != 0 {
		t.Fatalf("python client exit %d:\n%s", code, processOutput(py))
	}
	cl := logsByPath(t, "client", m.waitLogLines(t, "client", n))
	sl := logsByPath(t, "server", m.waitLogLines(t, "server", n))
	for i := range n {
		p := fmt.Sprintf("/h/%03d", i)
		c, s := cl[p], sl[p]
		if c == nil || s == nil {
			t.Fatalf("%s: missing access-log line: client %v, server %v", p, c, s)
		}
		var ck h2Check
		ck.eq("client", c, "websocket_close_code", 1001)
		ck.closedBy(t, "client", c, "upstream")
		ck.eq("server", s, "protocol", "HTTP/2")
		ck.eq("server", s, "websocket_close_code", 1001)
		if d := logStr(s, "connection_termination_details"); !strings.Contains(d, "1001") {
			ck.errs = append(ck.errs, "server connection_termination_details "+d)
		}
		ck.report(t, p, c, s)
	}
	m.waitConnections(t, "client", 0)

	// A new server sidecar on the same port: new WebSockets go over a new
	// HTTP/2 connection.
	m.startSidecar(t, "server")
	m.waitReady(t, "server")
	out := runProcess(t, "", 120*time.Second, pythonBin, "-c", pyH2Client, strconv.Itoa(m.egressPort), "many", "3", "3", "-")
	if out.ExitCode != 0 || !strings.Contains(out.Stdout, "ECHOED 3\nCLOSED 3 [1000]\n") {
		t.Fatalf("after the restart: exit %d\n%s\n%s", out.ExitCode, out.Stdout, out.Stderr)
	}
	st := m.h2Stats(t, "client")
	if st.H2Pool.Dialed != 2 || st.H2Pool.Endpoints[ep].StreamsOpened != n+3 {
		t.Errorf("client sidecar h2_pool after the restart: %+v, want 2 dialed and %d streams opened", st.H2Pool, n+3)
	}
	for _, s := range m.waitLogLines(t, "server", 3) {
		if logStr(s, "protocol") != "HTTP/2" || logStr(s, "response_flags") != "-" {
			t.Errorf("new server sidecar line:\n%s", dumpLogLines([]map[string]any{s}))
		}
	}
}

// TestH2PeerDies: kill -9 of the server sidecar ends every WebSocket
// tunnelled to it: the clients hear close 1014 (Bad Gateway) from the
// client sidecar instead of a bare connection drop (1006), each is
// logged by the client sidecar, and nothing stays open there.
func TestH2PeerDies(t *testing.T) {
	const n = 5
	m := newMesh(t, meshOptions{h2: true, allowConnect: true})
	py := startProcess(t, pythonBin, "-c", pyH2Client, strconv.Itoa(m.egressPort), "hold", strconv.Itoa(n))
	waitOutput(t, py, fmt.Sprintf("OPEN %d\n", n), 90*time.Second)
	m.h2WaitStats(t, "client", 10*time.Second, fmt.Sprintf("%d open connections", n), func(s h2Stats) bool { return s.OpenConnections == n })

	if err := syscall.Kill(m.pid("server"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitProcess(t, m.procs["server"], 30*time.Second)
	waitOutput(t, py, fmt.Sprintf("CLOSED %d [1014]\n", n), 60*time.Second)
	if code := waitProcess(t, py, 30*time.Second); code != 0 {
		t.Fatalf("python client exit %d:\n%s", code, processOutput(py))
	}
	cl := logsByPath(t, "client", m.waitLogLines(t, "client", n))
	if len(cl) != n {
		t.Fatalf("client access log has %d lines, want %d", len(cl), n)
	}
	for i := range n {
		p := fmt.Sprintf("/h/%03d", i)
		c := cl[p]
		var ck h2Check
		ck.eq("client", c, "response_code", 101)
		ck.eq("client", c, "response_flags", "UC")
		ck.eq("client", c, "websocket_close_code", 1014) // what the client sidecar told the client
		ck.eq("client", c, "websocket_closed_by", "upstream")
		ck.report(t, p, c)
	}
	m.h2WaitStats(t, "client", 15*time.Second, "no open connection and no HTTP/2 connection", func(s h2Stats) bool {
		ep := s.H2Pool.Endpoints["127.0.0.1:"+strconv.Itoa(m.inboundPort)]
		return s.OpenConnections == 0 && ep.Conns == 0 && ep.ActiveStreams == 0
	})
	m.waitConnections(t, "client", 0)
}

// TestH2RapidResetFlood: a client that opens streams and resets them at
// once (CVE-2023-44487) gets GOAWAY ENHANCE_YOUR_CALM from the server
// sidecar's inbound port, and the sidecar keeps serving everyone else.
func TestH2RapidResetFlood(t *testing.T) {
	m := newMesh(t, meshOptions{h2: true, allowConnect: true, app: "echo"})
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(m.inboundPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(90 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriterSize(c, 64<<10)
	fr := http2.NewFramer(bw, bufio.NewReader(c))
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	bw.Flush()

	type goAway struct {
		code http2.ErrCode
		err  error
	}
	got := make(chan goAway, 1)
	var readerDone sync.WaitGroup
	readerDone.Add(1)
	go func() {
		defer readerDone.Done()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				got <- goAway{err: err}
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				got <- goAway{code: ga.ErrCode}
				return
			}
		}
	}()

	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	var sent int
	var result *goAway
	deadline := time.Now().Add(60 * time.Second)
flood:
	for id := uint32(1); id < 1<<30 && time.Now().Before(deadline); id += 2 {
		hbuf.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: "/flood"}, {Name: ":authority", Value: m.authority()}} {
			enc.WriteField(f)
		}
		// HEADERS without END_STREAM (an open stream), then RST_STREAM.
		werr := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true})
		if werr == nil {
			werr = fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
		sent++
		if werr == nil && sent%50 == 0 {
			werr = bw.Flush()
		}
		if werr != nil {
			break // the server closed the connection; its GOAWAY is read below
		}
		select {
		case g := <-got:
			result = &g
			break flood
		default:
		}
	}
	bw.Flush()
	if result == nil {
		select {
		case g := <-got:
			result = &g
		case <-time.After(30 * time.Second):
			t.Fatalf("no GOAWAY after %d HEADERS+RST_STREAM pairs", sent)
		}
	}
	if result.err != nil || result.code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("after %d HEADERS+RST_STREAM pairs: GOAWAY %v, read error %v; want GOAWAY ENHANCE_YOUR_CALM", sent, result.code, result.err)
	}
	t.Logf("GOAWAY ENHANCE_YOUR_CALM after %d HEADERS+RST_STREAM pairs", sent)
	// The connection is then closed.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	readerDone.Wait()
	if _, err := io.Copy(io.Discard, c); isNetTimeout(err) {
		t.Errorf("the flooding connection is still open 30s after GOAWAY")
	}
	c.Close()

	// The sidecar still serves other peers.
	if !processRunning(m.procs["server"]) {
		t.Fatalf("server sidecar exited:\n%s", m.logOutput("server"))
	}
	res := runProcess(t, "", 120*time.Second, pythonBin, "-c", pyH2Client, strconv.Itoa(m.egressPort), "many", "20", "3", "-")
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "ECHOED 20\nCLOSED 20 [1000]\n") {
		t.Fatalf("after the flood: exit %d\n%s\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	lines := m.accessLog(t, "server")
	var ws int
	for _, l := range lines {
		if strings.HasPrefix(logStr(l, "path"), "/m/") {
			ws++
			if logStr(l, "protocol") != "HTTP/2" || logNum(l, "response_code") != 101 || logStr(l, "response_flags") != "-" {
				t.Errorf("server line after the flood:\n%s", dumpLogLines([]map[string]any{l}))
			}
		}
	}
	t.Logf("server sidecar access log: %d lines, %d of them flood streams", len(lines), len(lines)-ws)
	if ws != 20 {
		t.Errorf("server sidecar logged %d WebSockets after the flood, want 20", ws)
	}
}
