package e2e

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/testutil"
)

// This file builds a local-mode mesh for the sidecar tests: a
// configuration directory written only in Kubernetes and Istio kinds (as
// examples/http1, or examples/http2), the guide's websockets-server
// application, and the two sidecars (websockets-server's and
// websockets-client's) as real wsmesh processes with their access logs in
// files. It also tests that invalid configuration stops "wsmesh sidecar"
// with an error naming the file, the document and the field.

// meshHost is the guide's service name, as the client application uses it.
const meshHost = "websockets-server.default.svc.cluster.local"

// meshOptions chooses what newMesh starts.
type meshOptions struct {
	// app is the websockets-server application: "python" (pyMeshServer, the
	// default), "echo" (wsmesh echo), "go" (appHandler served in the test
	// process) or "none" (nothing listens at the app port).
	app        string
	appHandler http.Handler
	// h2 writes the guide's DestinationRule for HTTP/2 (h2UpgradePolicy
	// UPGRADE, examples/http2) instead of the one for HTTP/1.1.
	h2 bool
	// allowConnect adds the guide's EnvoyFilter (examples/http2/envoyfilter.yaml).
	allowConnect bool
	// noServerSidecar leaves the server's sidecar stopped (its inbound port
	// refuses connections).
	noServerSidecar bool
	// endpointPort, when set, is the inbound port: the websockets-server
	// endpoint the client sidecar connects to (another server, such as
	// HAProxy, can listen there when noServerSidecar is set).
	endpointPort int
	// clientFlags and serverFlags are extra "wsmesh sidecar" flags.
	clientFlags, serverFlags []string
}

// mesh is a running local-mode mesh.
type mesh struct {
	dir string // configuration directory
	// egressPort: the client sidecar's outbound listener, which is also the
	// Service websockets-server's port (the port the client app connects to).
	egressPort int
	// inboundPort: the server sidecar's inbound listener, the endpoint of
	// websockets-server (WorkloadEntry ports.http-websocket).
	inboundPort int
	appPort     int // the application (ingress defaultEndpoint)

	admin         map[string]string    // side ("client"/"server") -> admin host:port
	accessLogFile map[string]string    // side -> access-log file
	procs         map[string]*exec.Cmd // side -> sidecar process
	app           *exec.Cmd            // nil unless the app is a process
	started       time.Time
}

// authority is the Host the client application sends.
func (m *mesh) authority() string { return meshHost + ":" + strconv.Itoa(m.egressPort) }

// url is the guide's URL for path ("/" when empty).
func (m *mesh) url(path string) string {
	if path == "" {
		path = "/"
	}
	return "ws://" + m.authority() + path
}

// egress is where the client application connects.
func (m *mesh) egress() string { return "127.0.0.1:" + strconv.Itoa(m.egressPort) }

// pid returns the PID of a sidecar ("client" or "server").
func (m *mesh) pid(side string) int { return m.procs[side].Process.Pid }

// meshDocs describes the guide's mesh configuration as the tests write it
// (meshDocs.yaml): its two Services, one WorkloadEntry per workload and, in
// local mode, one Sidecar per workload.
type meshDocs struct {
	// servicePort is websockets-server's Service port (8080 when 0). In
	// local mode it is the client sidecar's egress port.
	servicePort int
	// serverIP and clientIP are the Services' cluster IPs (none when empty).
	serverIP, clientIP string
	// serverAddr and clientAddr are the workloads' addresses, such as pod
	// IPs (127.0.0.1 when empty).
	serverAddr, clientAddr string
	// inboundPort, when set, is WorkloadEntry websockets-server's port
	// http-websocket: the server sidecar's inbound port in local mode.
	// Otherwise the Service's targetPort 80 applies.
	inboundPort int
	// appPort, when set, makes local mode: Sidecar websockets-server sends
	// inboundPort to the application at 127.0.0.1:appPort, and Sidecar
	// websockets-client listens on 127.0.0.1:servicePort for every host.
	appPort int
}

// meshYAML is the local-mode configuration of the guide with the given
// ports: the guide's two Services (websockets-server's port moved to
// egress), one WorkloadEntry per workload, one Sidecar per workload.
func meshYAML(egress, inbound, app int) string {
	return meshDocs{servicePort: egress, inboundPort: inbound, appPort: app}.yaml()
}

// yaml returns the configuration d describes, as one multi-document file.
func (d meshDocs) yaml() string {
	port := cmp.Or(d.servicePort, 8080)
	var b strings.Builder
	if port != 8080 {
		fmt.Fprintf(&b, "# The guide's websockets-server Service, with port %d (the client\n# sidecar's egress port) instead of 8080.\n", port)
	}
	if d.serverIP != "" || d.clientIP != "" {
		b.WriteString("# The guide's Services, with cluster IPs.\n")
	}
	service := func(name string, port int, portName, clusterIP string) {
		fmt.Fprintf(&b, `apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  labels:
    app: %[1]s
spec:
  type: ClusterIP
`, name)
		if clusterIP != "" {
			fmt.Fprintf(&b, "  clusterIP: %s\n", clusterIP)
		}
		fmt.Fprintf(&b, `  ports:
    - port: %d
      targetPort: 80
      name: %s
  selector:
    app: %s
---
`, port, portName, name)
	}
	service("websockets-server", port, "http-websocket", d.serverIP)
	service("websockets-client", 8080, "http-websockets-client", d.clientIP)
	if d.inboundPort == 0 {
		b.WriteString("# Where each workload is (the Service's targetPort 80 applies).\n")
	}
	workloadEntry := func(name, addr string, port int) {
		fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata:
  name: %[1]s
  labels:
    app: %[1]s
spec:
  address: %[2]s
`, name, cmp.Or(addr, "127.0.0.1"))
		if port != 0 {
			fmt.Fprintf(&b, "  ports:\n    http-websocket: %d\n", port)
		}
		fmt.Fprintf(&b, "  labels:\n    app: %s\n", name)
	}
	workloadEntry("websockets-server", d.serverAddr, d.inboundPort)
	b.WriteString("---\n")
	workloadEntry("websockets-client", d.clientAddr, 0)
	if d.appPort == 0 {
		return b.String()
	}
	fmt.Fprintf(&b, `---
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata:
  name: websockets-server
spec:
  workloadSelector:
    labels:
      app: websockets-server
  ingress:
  - port:
      number: %[2]d
      protocol: HTTP
      name: http-websocket
    defaultEndpoint: 127.0.0.1:%[3]d
---
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata:
  name: websockets-client
spec:
  workloadSelector:
    labels:
      app: websockets-client
  egress:
  - port:
      number: %[1]d
      protocol: HTTP
      name: http-websocket
    bind: 127.0.0.1
    hosts:
    - "*/*"
`, port, d.inboundPort, d.appPort)
	return b.String()
}

// destinationRuleYAML is the guide's DestinationRule for HTTP/1.1.
const destinationRuleYAML = `apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  labels:
    provider: asm
  name: websockets-server
spec:
  host: websockets-server
  trafficPolicy:
    connectionPool:
      http:
        h2UpgradePolicy: DO_NOT_UPGRADE
`

// writeConfigFile writes a file atomically (temporary file and rename), so that a
// watching sidecar never reads it half written.
func writeConfigFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// writeMeshConfig writes a configuration directory: docs as mesh.yaml and
// the files of examples/ named by examples (such as
// "http2/envoyfilter.yaml"), verbatim, under their own names.
func writeMeshConfig(t testing.TB, dir, docs string, examples ...string) {
	t.Helper()
	writeConfigFile(t, filepath.Join(dir, "mesh.yaml"), docs)
	for _, f := range examples {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", f))
		if err != nil {
			t.Fatalf("reading examples/%s: %v", f, err)
		}
		writeConfigFile(t, filepath.Join(dir, filepath.Base(f)), string(b))
	}
}

// newMesh writes the configuration (the local-mode documents, the guide's
// DestinationRule and, if asked, its EnvoyFilter), starts the application
// and the sidecars and waits until they answer /ready with LIVE.
func newMesh(t *testing.T, opts meshOptions) *mesh {
	t.Helper()
	if opts.app == "" {
		opts.app = "python"
	}
	m := &mesh{
		dir:           t.TempDir(),
		egressPort:    freePort(t),
		inboundPort:   opts.endpointPort,
		admin:         map[string]string{},
		accessLogFile: map[string]string{},
		procs:         map[string]*exec.Cmd{},
		started:       time.Now(),
	}
	if m.inboundPort == 0 {
		m.inboundPort = freePort(t)
	}

	switch opts.app {
	case "python":
		requirePythonWebsockets(t)
		m.appPort = freePort(t)
		m.app = startProcess(t, pythonBin, "-c", pyMeshServer, strconv.Itoa(m.appPort))
	case "echo":
		m.appPort = freePort(t)
		m.app = startProcess(t, wsmeshBin, "echo", "--listen", "127.0.0.1:"+strconv.Itoa(m.appPort))
	case "go":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: opts.appHandler, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		m.appPort = ln.Addr().(*net.TCPAddr).Port
	case "none":
		m.appPort = freePort(t)
	default:
		t.Fatalf("newMesh: unknown app %q", opts.app)
	}

	examples := []string{"http1/destinationrule.yaml"}
	if opts.h2 {
		examples = []string{"http2/destinationrule.yaml"}
	}
	if opts.allowConnect {
		examples = append(examples, "http2/envoyfilter.yaml")
	}
	writeMeshConfig(t, m.dir, meshYAML(m.egressPort, m.inboundPort, m.appPort), examples...)

	if m.app != nil {
		waitForPort(t, "127.0.0.1:"+strconv.Itoa(m.appPort))
	}
	sides := []string{"server", "client"}
	if opts.noServerSidecar {
		sides = sides[1:]
	}
	for _, side := range sides {
		if side == "client" {
			m.startSidecar(t, side, opts.clientFlags...)
		} else {
			m.startSidecar(t, side, opts.serverFlags...)
		}
	}
	for _, side := range sides {
		m.waitReady(t, side)
	}
	return m
}

// startSidecar starts (or starts again) the sidecar of one side with a new
// admin port and a new access-log file. It does not wait for it.
func (m *mesh) startSidecar(t *testing.T, side string, flags ...string) {
	t.Helper()
	m.admin[side] = "127.0.0.1:" + strconv.Itoa(freePort(t))
	m.accessLogFile[side] = filepath.Join(t.TempDir(), side+"-access.log")
	args := []string{wsmeshBin, "sidecar", "--config", m.dir,
		"--workload", "websockets-" + side,
		"--admin", m.admin[side], "--access-log", m.accessLogFile[side]}
	m.procs[side] = startProcess(t, append(args, flags...)...)
}

// waitReady waits up to 15 seconds for GET /ready to answer 200 LIVE.
func (m *mesh) waitReady(t testing.TB, side string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body, err := m.adminGet(side, "/ready")
		if err == nil && code == 200 && body == "LIVE\n" {
			return
		}
		if !processRunning(m.procs[side]) {
			t.Fatalf("%s sidecar exited before ready:\n%s", side, processOutput(m.procs[side]))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sidecar not ready after 15s: %d %q %v\n%s", side, code, body, err, processOutput(m.procs[side]))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// adminGet fetches path from a sidecar's admin port.
func (m *mesh) adminGet(side, path string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + m.admin[side] + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// adminJSON fetches path from a sidecar's admin port and decodes it.
func (m *mesh) adminJSON(t testing.TB, side, path string) map[string]any {
	t.Helper()
	code, body, err := m.adminGet(side, path)
	if err != nil || code != 200 {
		t.Fatalf("%s sidecar GET %s: %d %v\n%s", side, path, code, err, body)
	}
	var v map[string]any
	d := json.NewDecoder(strings.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%s sidecar GET %s: %v\n%s", side, path, err, body)
	}
	return v
}

// connections returns a sidecar's open connections (admin /connections).
func (m *mesh) connections(t testing.TB, side string) []map[string]any {
	t.Helper()
	v := m.adminJSON(t, side, "/connections")
	list, _ := v["connections"].([]any)
	out := make([]map[string]any, 0, len(list))
	for _, c := range list {
		out = append(out, c.(map[string]any))
	}
	return out
}

// waitConnections waits up to 10 seconds until a sidecar has n open
// connections and returns them.
func (m *mesh) waitConnections(t testing.TB, side string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cs := m.connections(t, side)
		if len(cs) == n {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sidecar has %d open connections, want %d: %v", side, len(cs), n, cs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// accessLog returns the complete lines of a sidecar's access log, decoded
// (numbers as json.Number).
func (m *mesh) accessLog(t testing.TB, side string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(m.accessLogFile[side])
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	lines, err := testutil.LineFormat{UseNumber: true}.Decode(b)
	if err != nil {
		t.Fatalf("%s access log: %v", side, err)
	}
	return lines
}

// waitLogLines waits up to 20 seconds until a sidecar's access log has at
// least n lines and returns them all.
func (m *mesh) waitLogLines(t testing.TB, side string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		lines := m.accessLog(t, side)
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s access log has %d lines after 20s, want %d:\n%s", side, len(lines), n, dumpLogLines(lines))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// logOutput returns what a sidecar has written to stderr so far.
func (m *mesh) logOutput(side string) string { return processOutput(m.procs[side]) }

// waitLog waits up to 10 seconds until a sidecar's own log contains text
// at least n times.
func (m *mesh) waitLog(t testing.TB, side, text string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(m.logOutput(side), text) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s sidecar log has %d × %q, want %d:\n%s", side, strings.Count(m.logOutput(side), text), text, n, m.logOutput(side))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// procFDCount returns how many file descriptors process pid has open.
func procFDCount(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatalf("counting fds of %d: %v", pid, err)
	}
	return len(ents)
}

func dumpLogLines(lines []map[string]any) string {
	var b strings.Builder
	for _, l := range lines {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// logStr returns a string field of an access-log line ("" for null).
func logStr(rec map[string]any, key string) string {
	v, ok := rec[key]
	if !ok || v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// logNum returns a numeric field of an access-log line (-1 for null or absent;
// numbers written as strings, like upstream_service_time, are parsed).
func logNum(rec map[string]any, key string) int64 {
	switch v := rec[key].(type) {
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			return -2
		}
		return n
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return -2
		}
		return n
	default:
		return -1
	}
}

// rawHTTPExchange sends request on a new connection to addr and reads one
// response (nil when the connection ends first); it returns the response,
// its body, and whether the connection was closed by the peer after it.
func rawHTTPExchange(t testing.TB, addr, request string) (*http.Response, string, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(c, request) // may fail once the peer answers and closes
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err.Error(), true
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = br.ReadByte()
	closed := err != nil && !isNetTimeout(err)
	return resp, string(b), closed
}

func isNetTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestSidecarRejectsInvalidConfig checks that wsmesh sidecar refuses to
// start on invalid configuration, naming the file, the document and the
// field, and that the valid mesh configuration starts.
func TestSidecarRejectsInvalidConfig(t *testing.T) {
	egress, inbound, app := freePort(t), freePort(t), freePort(t)
	base := meshYAML(egress, inbound, app)
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of stderr; "$DIR" is the config directory
	}{
		{
			name: "h2UpgradePolicy typo",
			files: map[string]string{"destinationrule.yaml": destinationRuleYAML + "---\n" + strings.NewReplacer(
				"DO_NOT_UPGRADE", "UPGRAED", "name: websockets-server", "name: typo").Replace(destinationRuleYAML)},
			want: []string{"$DIR/destinationrule.yaml", "document 2", "DestinationRule typo",
				"spec.trafficPolicy.connectionPool.http.h2UpgradePolicy", `"UPGRAED"`},
		},
		{
			name:  "YAML syntax error",
			files: map[string]string{"broken.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n spec: [\n"},
			want:  []string{"$DIR/broken.yaml", "document 1", "YAML"},
		},
		{
			name:  "YAML syntax error in a later document",
			files: map[string]string{"broken.yaml": destinationRuleYAML + "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [x\n"},
			want:  []string{"$DIR/broken.yaml", "document 2", "YAML"},
		},
		{
			name: "Service port out of range",
			files: map[string]string{"other.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: other\nspec:\n" +
				"  ports:\n  - port: 99999\n    name: http\n  selector:\n    app: other\n"},
			want: []string{"$DIR/other.yaml", "document 1", "Service other", "spec.ports[0].port", "99999"},
		},
		{
			name:  "Sidecar egress port is not a number",
			files: map[string]string{"mesh.yaml": strings.Replace(base, "number: "+strconv.Itoa(egress), "number: eighty", 1)},
			want:  []string{"$DIR/mesh.yaml", "document 6", "Sidecar websockets-client", "spec.egress[0].port.number"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{"mesh.yaml": base, "destinationrule.yaml": destinationRuleYAML}
			for k, v := range tt.files {
				files[k] = v
			}
			for k, v := range files {
				writeConfigFile(t, filepath.Join(dir, k), v)
			}
			admin := "127.0.0.1:" + strconv.Itoa(freePort(t))
			res := runProcess(t, "", 30*time.Second, wsmeshBin, "sidecar", "--config", dir,
				"--workload", "websockets-client", "--admin", admin, "--access-log", filepath.Join(t.TempDir(), "access.log"))
			if res.ExitCode == 0 {
				t.Fatalf("wsmesh sidecar exited 0 on invalid configuration\nstderr:\n%s", res.Stderr)
			}
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, "$DIR", dir)
				if !strings.Contains(res.Stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, res.Stderr)
				}
			}
			// wsmesh validate says the same.
			v := runProcess(t, "", 30*time.Second, wsmeshBin, "validate", "--config", dir)
			if v.ExitCode == 0 {
				t.Errorf("wsmesh validate exited 0\nstdout:\n%s\nstderr:\n%s", v.Stdout, v.Stderr)
			}
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, "$DIR", dir)
				if !strings.Contains(v.Stdout+v.Stderr, w) {
					t.Errorf("wsmesh validate output does not contain %q:\n%s%s", w, v.Stdout, v.Stderr)
				}
			}
		})
	}

	t.Run("unknown workload", func(t *testing.T) {
		dir := t.TempDir()
		writeConfigFile(t, filepath.Join(dir, "mesh.yaml"), base)
		res := runProcess(t, "", 30*time.Second, wsmeshBin, "sidecar", "--config", dir,
			"--workload", "websockets-nobody", "--admin", "127.0.0.1:"+strconv.Itoa(freePort(t)), "--access-log", os.DevNull)
		if res.ExitCode == 0 || !strings.Contains(res.Stderr, `"websockets-nobody"`) || !strings.Contains(res.Stderr, "websockets-server") {
			t.Fatalf("exit %d, stderr:\n%s", res.ExitCode, res.Stderr)
		}
	})

	t.Run("valid", func(t *testing.T) {
		dir := t.TempDir()
		writeConfigFile(t, filepath.Join(dir, "mesh.yaml"), base)
		writeConfigFile(t, filepath.Join(dir, "destinationrule.yaml"), destinationRuleYAML)
		v := runProcess(t, "", 30*time.Second, wsmeshBin, "validate", "--config", dir)
		if v.ExitCode != 0 {
			t.Fatalf("wsmesh validate: exit %d\n%s%s", v.ExitCode, v.Stdout, v.Stderr)
		}
	})
}
