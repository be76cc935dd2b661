package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file sends bad input straight at the client sidecar's egress port:
// malformed requests, oversize heads, invalid upgrades, slow clients and
// abandoned connections. The sidecar must answer as Envoy does, log each
// refusal, keep running and leak no file descriptors.

func TestSidecarBadInput(t *testing.T) {
	m := newMesh(t, meshOptions{app: "echo", clientFlags: []string{"--header-read-timeout", "1s"}})
	host := "Host: " + m.authority() + "\r\n"
	upgrade := "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	key := "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	big := "X-Big: " + strings.Repeat("a", 70<<10) + "\r\n" // beyond the default 60 KiB

	cases := []struct {
		name, request string
		status        int
		flags         string
		details       string
		body          string // substring of the response body
	}{
		{"malformed request line", "NOT A REQUEST\r\n\r\n", 400, "DPE", "http1.codec_error", "malformed request line"},
		{"unknown method syntax", "hello world\r\n\r\n", 400, "DPE", "http1.codec_error", ""},
		{"bad header line", "GET / HTTP/1.1\r\n" + host + "No colon here\r\n\r\n", 400, "DPE", "", ""},
		{"oversize headers", "GET / HTTP/1.1\r\n" + host + big + "\r\n", 431, "DPE", "http1.headers_too_large", ""},
		{"upgrade without key", "GET /ws HTTP/1.1\r\n" + host + upgrade + "Sec-WebSocket-Version: 13\r\n\r\n", 400, "DPE", "http1.invalid_upgrade", "Sec-WebSocket-Key"},
		{"upgrade on HTTP/1.0", "GET /ws HTTP/1.0\r\n" + host + upgrade + key + "Sec-WebSocket-Version: 13\r\n\r\n", 400, "DPE", "http1.invalid_upgrade", ""},
		{"upgrade with a body", "GET /ws HTTP/1.1\r\n" + host + upgrade + key + "Sec-WebSocket-Version: 13\r\nContent-Length: 5\r\n\r\nhello", 400, "DPE", "http1.invalid_upgrade", "body"},
		// The application refuses a version it does not speak; the sidecar forwards its answer.
		{"upgrade with version 8", "GET /ws HTTP/1.1\r\n" + host + upgrade + key + "Sec-WebSocket-Version: 8\r\n\r\n", 400, "-", "via_upstream", "only 13 is supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(m.accessLog(t, "client"))
			resp, body, closed := rawHTTPExchange(t, m.egress(), tc.request)
			if resp == nil {
				t.Fatalf("no response: %s", body)
			}
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("got %d %q, want %d with %q", resp.StatusCode, body, tc.status, tc.body)
			}
			if !closed {
				t.Errorf("connection left open after %d", resp.StatusCode)
			}
			lines := m.waitLogLines(t, "client", before+1)
			checkLocalReply(t, "client", lines[len(lines)-1], int64(tc.status), tc.flags, tc.details)
		})
	}

	t.Run("slow client holding headers", func(t *testing.T) {
		before := len(m.accessLog(t, "client"))
		c, err := net.DialTimeout("tcp", m.egress(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		io.WriteString(c, "GET /slow HTTP/1.1\r\n"+host)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // one header byte every 200ms, never finishing
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
					if _, err := io.WriteString(c, "X"); err != nil {
						return
					}
				}
			}
		}()
		defer func() { close(stop); wg.Wait() }()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no 408 after %v: %v", time.Since(start), err)
		}
		io.ReadAll(resp.Body) // Close would not drain: the connection is closing
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != 408 || took < 900*time.Millisecond || took > 4*time.Second {
			t.Fatalf("got %d after %v, want 408 after about 1s", resp.StatusCode, took)
		}
		if _, err := br.ReadByte(); err == nil || isNetTimeout(err) {
			t.Fatalf("connection not closed after 408: %v", err)
		}
		lines := m.waitLogLines(t, "client", before+1)
		checkLocalReply(t, "client", lines[len(lines)-1], 408, "DPE", "request_header_timeout")
	})

	t.Run("no crash and no fd leak after bursts", func(t *testing.T) {
		pid := m.pid("client")
		// Warm up every path once so lazily opened resources are counted.
		for _, tc := range cases {
			rawHTTPExchange(t, m.egress(), tc.request)
		}
		time.Sleep(300 * time.Millisecond)
		base := procFDCount(t, pid)
		baseSrv := procFDCount(t, m.pid("server"))

		const rounds = 40
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		run := func(f func()) {
			wg.Add(1)
			sem <- struct{}{}
			go func() { defer wg.Done(); defer func() { <-sem }(); f() }()
		}
		dial := func() net.Conn {
			c, err := net.DialTimeout("tcp", m.egress(), 5*time.Second)
			if err != nil {
				t.Error(err)
				return nil
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			return c
		}
		for range rounds {
			for _, tc := range cases {
				run(func() {
					if c := dial(); c != nil {
						defer c.Close()
						go io.WriteString(c, tc.request)
						io.Copy(io.Discard, c)
					}
				})
			}
			run(func() { // connect and leave
				if c := dial(); c != nil {
					c.Close()
				}
			})
			run(func() { // half a head, then leave
				if c := dial(); c != nil {
					io.WriteString(c, "GET / HTTP/1.1\r\nHost: x")
					time.Sleep(10 * time.Millisecond)
					c.Close()
				}
			})
			run(func() { // half a head, then reset
				if c := dial(); c != nil {
					io.WriteString(c, "GET / HTTP/1.1\r\n"+host+"X-A:")
					time.Sleep(10 * time.Millisecond)
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
			})
			run(func() { // a WebSocket opened and reset without a close frame
				if c := dial(); c != nil {
					fmt.Fprintf(c, "GET /burst HTTP/1.1\r\n%s%s%sSec-WebSocket-Version: 13\r\n\r\n", host, upgrade, key)
					if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 101 {
						t.Errorf("burst WebSocket: %v %v", resp, err)
					}
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
			})
		}
		// Bytes that are not HTTP at all: binary garbage and a TLS hello.
		for _, junk := range []string{"\x00\x01\x02\x03garbage\r\n\r\n", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"} {
			for range rounds / 4 {
				run(func() {
					if c := dial(); c != nil {
						defer c.Close()
						io.WriteString(c, junk)
						c.(*net.TCPConn).CloseWrite()
						io.Copy(io.Discard, c)
					}
				})
			}
		}
		// A few slow clients at once, cut by the header timeout.
		for range 10 {
			run(func() {
				if c := dial(); c != nil {
					defer c.Close()
					io.WriteString(c, "GET /slow HTTP/1.1\r\n")
					io.Copy(io.Discard, c)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}

		if !processRunning(m.procs["client"]) {
			t.Fatalf("client sidecar exited:\n%s", m.logOutput("client"))
		}
		if code, body, err := m.adminGet("client", "/ready"); code != 200 || body != "LIVE\n" {
			t.Fatalf("/ready after bursts: %d %q %v", code, body, err)
		}
		m.waitConnections(t, "client", 0)
		deadline := time.Now().Add(15 * time.Second)
		for {
			n, ns := procFDCount(t, pid), procFDCount(t, m.pid("server"))
			if n <= base+4 && ns <= baseSrv+4 {
				t.Logf("fds: client %d -> %d, server %d -> %d", base, n, baseSrv, ns)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("fd leak: client sidecar %d fds before bursts, %d after; server sidecar %d, %d", base, n, baseSrv, ns)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, side := range []string{"client", "server"} {
			if out := m.logOutput(side); strings.Contains(out, "panic") || strings.Contains(out, "DATA RACE") {
				t.Fatalf("%s sidecar log:\n%s", side, out)
			}
		}
		// It still proxies WebSockets.
		res := runProcess(t, "hello\nworld\n", 30*time.Second, wsmeshBin, "client", "--connect-to", m.authority()+"="+m.egress(), m.url(""))
		if res.ExitCode != 0 || !strings.Contains(res.Stdout, "< hello\n< world\nConnection closed: 1000 (OK).\n") {
			t.Fatalf("after bursts: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
		}
	})
}

// TestSidecarHeaderLimitFlag checks --max-request-headers-kb.
func TestSidecarHeaderLimitFlag(t *testing.T) {
	m := newMesh(t, meshOptions{app: "echo", clientFlags: []string{"--max-request-headers-kb", "4"}})
	req := func(n int) *http.Response {
		resp, _, _ := rawHTTPExchange(t, m.egress(), "GET /healthz HTTP/1.1\r\nHost: "+m.authority()+"\r\nX-Pad: "+strings.Repeat("p", n)+"\r\nConnection: close\r\n\r\n")
		if resp == nil {
			t.Fatalf("no response with a %d-byte header", n)
		}
		return resp
	}
	if r := req(2000); r.StatusCode != 200 {
		t.Fatalf("2 KB header: %d", r.StatusCode)
	}
	if r := req(5000); r.StatusCode != 431 {
		t.Fatalf("5 KB header with a 4 KiB limit: %d, want 431", r.StatusCode)
	}
}
