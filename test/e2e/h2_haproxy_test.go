package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// This file tests HTTP/2 interoperability with HAProxy 2.6, which speaks
// RFC 8441 on both sides: as the HTTP/2 client of a server sidecar's
// inbound port, and as the HTTP/2 server a client sidecar's outbound
// carries WebSockets to.

const haproxyBin = "/usr/sbin/haproxy"

func requireHAProxy(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(haproxyBin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v", haproxyBin, err)
		}
		t.Skipf("%s: %v", haproxyBin, err)
	}
}

// startHAProxy writes cfg (after the common global and defaults sections)
// into a temporary directory, checks it, starts HAProxy in the foreground
// (-db; killed by PID when the test ends) and waits for listen.
func startHAProxy(t *testing.T, listen, cfg string) *exec.Cmd {
	t.Helper()
	requireHAProxy(t)
	full := `global
    maxconn 4000
    no strict-limits
    log stdout format raw local0

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout tunnel 120s

` + cfg
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	if res := runProcess(t, "", 30*time.Second, haproxyBin, "-c", "-f", path); res.ExitCode != 0 {
		t.Fatalf("haproxy -c:\n%s%s\n%s", res.Stdout, res.Stderr, full)
	}
	cmd := startProcess(t, haproxyBin, "-f", path, "-db")
	waitForPort(t, listen)
	return cmd
}

// TestH2HAProxyClientToInbound: HAProxy as the HTTP/2 client of our server
// sidecar. Python client → HAProxy (HTTP/1.1 frontend) → backend "proto
// h2" (RFC 8441 extended CONNECT, since the sidecar advertises
// SETTINGS_ENABLE_CONNECT_PROTOCOL under the guide's EnvoyFilter) → server
// sidecar → Python echo server.
func TestH2HAProxyClientToInbound(t *testing.T) {
	m := newMesh(t, meshOptions{h2: true, allowConnect: true})
	fe := freePort(t)
	feAddr := "127.0.0.1:" + strconv.Itoa(fe)
	hap := startHAProxy(t, feAddr, fmt.Sprintf(`frontend fe
    bind %s
    default_backend be

backend be
    server s1 127.0.0.1:%d proto h2
`, feAddr, m.inboundPort))

	res := runProcess(t, "", 90*time.Second, pythonBin, "-c", pyMeshClient, strconv.Itoa(fe), "echo")
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, pyEchoOutput) {
		t.Fatalf("echo through HAProxy (h2 backend) and the server sidecar: exit %d\n%s\n%s\nHAProxy:\n%s", res.ExitCode, res.Stdout, res.Stderr, processOutput(hap))
	}
	up, down := pyBytes(t, res.Stdout)
	s := m.waitLogLines(t, "server", 1)[0]
	var ck h2Check
	ck.eq("server", s, "protocol", "HTTP/2")
	ck.eq("server", s, "method", "GET")
	ck.eq("server", s, "path", "/echo")
	ck.eq("server", s, "response_code", 101)
	ck.eq("server", s, "response_flags", "-")
	ck.eq("server", s, "response_code_details", "via_upstream")
	ck.eq("server", s, "upstream_host", "127.0.0.1:"+strconv.Itoa(m.appPort))
	ck.eq("server", s, "bytes_received", up)
	ck.eq("server", s, "bytes_sent", down)
	ck.eq("server", s, "websocket_messages_downstream", 8)
	ck.eq("server", s, "websocket_messages_upstream", 8)
	ck.eq("server", s, "websocket_close_code", 1000)
	ck.closedBy(t, "server", s, "downstream")
	ck.report(t, "server sidecar behind HAProxy", s)
	if lines := m.accessLog(t, "client"); len(lines) != 0 {
		t.Errorf("the client sidecar was not on the path, but logged:\n%s", dumpLogLines(lines))
	}
	t.Logf("HAProxy log:\n%s", processOutput(hap))
	m.waitConnections(t, "server", 0)
}

// TestH2OutboundToHAProxy: our client sidecar's HTTP/2 upstream is an
// HAProxy h2c frontend ("bind ... proto h2", prior knowledge; RFC 8441 is
// on by default in 2.6), whose backend speaks HTTP/1.1 to the echo app.
func TestH2OutboundToHAProxy(t *testing.T) {
	requireHAProxy(t)
	fe := freePort(t)
	feAddr := "127.0.0.1:" + strconv.Itoa(fe)
	m := newMesh(t, meshOptions{h2: true, noServerSidecar: true, endpointPort: fe})
	hap := startHAProxy(t, feAddr, fmt.Sprintf(`frontend fe
    bind %s proto h2
    default_backend be

backend be
    server app 127.0.0.1:%d
`, feAddr, m.appPort))

	out := runPyClient(t, m, 90*time.Second, "echo")
	if !strings.Contains(out, pyEchoOutput) {
		t.Fatalf("echo through the client sidecar and HAProxy (h2 frontend):\n%s\nwant:\n%s", out, pyEchoOutput)
	}
	up, down := pyBytes(t, out)
	c := m.waitLogLines(t, "client", 1)[0]
	var ck h2Check
	ck.eq("client", c, "protocol", "HTTP/1.1")
	ck.eq("client", c, "method", "GET")
	ck.eq("client", c, "path", "/echo")
	ck.eq("client", c, "response_code", 101)
	ck.eq("client", c, "response_flags", "-")
	// Not "via_upstream;http1_fallback:...": HAProxy allowed extended CONNECT.
	ck.eq("client", c, "response_code_details", "via_upstream")
	ck.eq("client", c, "upstream_host", feAddr)
	ck.eq("client", c, "bytes_received", up)
	ck.eq("client", c, "bytes_sent", down)
	ck.eq("client", c, "websocket_close_code", 1000)
	ck.report(t, "client sidecar in front of HAProxy", c)

	st := m.h2Stats(t, "client")
	if ep := st.H2Pool.Endpoints[feAddr]; st.H2Pool.Dialed != 1 || ep.StreamsOpened != 1 {
		t.Errorf("client sidecar h2_pool: %+v, want one HTTP/2 connection to %s with one stream", st.H2Pool, feAddr)
	}
	// HAProxy's own log line: the request arrived over HTTP/2.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(processOutput(hap), "HTTP/2.0") {
		if time.Now().After(deadline) {
			t.Errorf("HAProxy's log has no HTTP/2.0 request line:\n%s", processOutput(hap))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("HAProxy log:\n%s", processOutput(hap))
	m.waitConnections(t, "client", 0)
}
