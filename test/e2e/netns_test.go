package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	k8syaml "sigs.k8s.io/yaml"
)

// This file runs the guide in "pods" made of network namespaces, with
// transparent interception only: no Sidecar resource, no changed URL. The
// client app runs the guide's exact command
//
//	python3 -m websockets ws://websockets-server.default.svc.cluster.local:8080
//
// in its pod; the name resolves (through /etc/netns/POD/hosts) to the
// Service's cluster IP; iptables (wsmesh init-iptables) sends the
// connection to the client sidecar's outbound port 15001, which routes by
// the original destination to the server pod; there iptables sends it to
// the server sidecar's inbound port 15006, which hands it to the echo app
// on port 80. Both sidecars run as uid 1337, as injected.
//
// Topology (all addresses exist only inside namespaces the test creates):
//
//	node:   bridge br0
//	client: eth0 10.250.0.11/24 (veth to br0), route 10.251.0.0/24 (services) via eth0
//	server: eth0 10.250.0.12/24 (veth to br0), echo app on :80
//	Service websockets-server: clusterIP 10.251.0.10, port 8080 -> targetPort 80
//
// Needs root, ip (iproute2), iptables, setpriv (util-linux) and the Python
// websockets library. Not root: skipped. Root with a tool missing:
// skipped, except on CI (CI=true) where it fails.

const (
	clientPodIP   = "10.250.0.11"
	serverPodIP   = "10.250.0.12"
	serverSvcIP   = "10.251.0.10"
	clientSvcIP   = "10.251.0.11"
	serviceCIDR   = "10.251.0.0/24"
	proxyUID      = "1337"
	nsSetupTimout = 10 * time.Second
)

// requireNetnsTools skips (or fails on CI) unless the test can build pods
// out of network namespaces.
func requireNetnsTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth links and iptables rules")
	}
	var missing []string
	for _, tool := range []string{"ip", "iptables-restore", "iptables-save", "setpriv"} {
		if _, err := lookSbin(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if out, err := exec.Command(pythonBin, "-c", "import websockets").CombinedOutput(); err != nil {
		missing = append(missing, fmt.Sprintf("%s websockets (%v: %s)", pythonBin, err, strings.TrimSpace(string(out))))
	}
	probe := fmt.Sprintf("wsme2e-probe-%d", os.Getpid())
	if len(missing) == 0 {
		if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
			missing = append(missing, fmt.Sprintf("ip netns add (%v: %s)", err, strings.TrimSpace(string(out))))
		} else {
			_ = exec.Command("ip", "netns", "del", probe).Run()
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "missing for the network-namespace test (Debian packages iproute2, iptables, util-linux, python3-websockets): " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name), nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// run runs a setup command, failing the test with its output on error.
func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// addNetns creates a network namespace with lo up, deleted when the test
// ends (after the processes in it are killed: cleanups run in reverse).
func addNetns(t *testing.T, name string) {
	t.Helper()
	_ = exec.Command("ip", "netns", "del", name).Run() // leftover of a killed run
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
}

// writeNetnsHosts writes /etc/netns/NS/hosts, which ip netns exec mounts
// over /etc/hosts for the processes it starts in NS; removed at the end.
func writeNetnsHosts(t *testing.T, ns, hosts string) {
	t.Helper()
	_, statErr := os.Stat("/etc/netns")
	createdRoot := os.IsNotExist(statErr)
	dir := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing %s: %v", dir, err)
		}
		if createdRoot {
			_ = os.Remove("/etc/netns") // only if empty
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
}

// nsDial connects to addr from inside network namespace ns: the socket is
// created on an OS thread switched into ns.
func nsDial(ns, addr string, timeout time.Duration) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, timeout)
		ch <- result{c, err}
		// Back to the original namespace; if that fails the thread stays
		// locked and the runtime discards it with this goroutine.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	r := <-ch
	return r.c, r.err
}

// nsWaitPort waits until addr accepts connections inside ns.
func nsWaitPort(t *testing.T, ns, addr string, proc *exec.Cmd) {
	t.Helper()
	deadline := time.Now().Add(nsSetupTimout)
	for {
		c, err := nsDial(ns, addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if proc != nil && !processRunning(proc) {
			t.Fatalf("%s in %s: process exited before listening:\n%s", addr, ns, processOutput(proc))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s not accepting connections after %v: %v", addr, ns, nsSetupTimout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nsHTTPGet fetches url from inside ns.
func nsHTTPGet(ns, url string) (int, string, error) {
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return nsDial(ns, addr, time.Second)
			},
			DisableKeepAlives: true,
		},
	}
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// pod is one network namespace playing a Kubernetes pod.
type pod struct {
	ns, ip string
}

// netnsMesh is the test's network: two pods on a bridge in a node
// namespace.
type netnsMesh struct {
	node           string
	client, server pod
	dir            string // world-readable: wsmesh binary and configuration for uid 1337
	bin            string
}

func newNetnsMesh(t *testing.T) *netnsMesh {
	t.Helper()
	id := os.Getpid() % 100000
	m := &netnsMesh{
		node:   fmt.Sprintf("wsme2e-%d-node", id),
		client: pod{fmt.Sprintf("wsme2e-%d-client", id), clientPodIP},
		server: pod{fmt.Sprintf("wsme2e-%d-server", id), serverPodIP},
	}
	addNetns(t, m.node)
	addNetns(t, m.client.ns)
	addNetns(t, m.server.ns)
	run(t, "ip", "-n", m.node, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", m.node, "link", "set", "br0", "up")
	for i, p := range []pod{m.client, m.server} {
		port := fmt.Sprintf("veth%d", i)
		run(t, "ip", "-n", m.node, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		run(t, "ip", "-n", m.node, "link", "set", port, "master", "br0", "up")
		run(t, "ip", "-n", p.ns, "addr", "add", p.ip+"/24", "dev", "eth0")
		run(t, "ip", "-n", p.ns, "link", "set", "eth0", "up")
		// Service cluster IPs: routed out of eth0, as kube-proxy's
		// addresses are; interception redirects them before they leave.
		run(t, "ip", "-n", p.ns, "route", "add", serviceCIDR, "dev", "eth0")
		writeNetnsHosts(t, p.ns, fmt.Sprintf("127.0.0.1 localhost\n%s %s websockets-server.default.svc websockets-server.default websockets-server\n%s websockets-client.default.svc.cluster.local\n", serverSvcIP, meshHost, clientSvcIP))
	}

	// uid 1337 must read the binary and the configuration.
	dir, err := os.MkdirTemp("", "wsmesh-netns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m.dir = dir
	m.bin = filepath.Join(dir, "wsmesh")
	data, err := os.ReadFile(wsmeshBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return m
}

// exec returns the argv running args inside pod ns (as root).
func (m *netnsMesh) exec(ns string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, args...)
}

// execAsProxy returns the argv running args inside ns as uid and gid 1337.
func (m *netnsMesh) execAsProxy(ns string, args ...string) []string {
	return m.exec(ns, append([]string{"setpriv", "--reuid", proxyUID, "--regid", proxyUID, "--clear-groups"}, args...)...)
}

// initIptables runs wsmesh init-iptables in p, as the injected init
// container does, and removes the rules with --cleanup when the test ends.
func (m *netnsMesh) initIptables(t *testing.T, p pod) {
	t.Helper()
	res := runProcess(t, "", 30*time.Second, m.exec(p.ns, m.bin, "init-iptables")...)
	if res.ExitCode != 0 {
		t.Fatalf("init-iptables in %s: exit %d\n%s%s", p.ns, res.ExitCode, res.Stdout, res.Stderr)
	}
	t.Cleanup(func() {
		res := runProcess(t, "", 30*time.Second, m.exec(p.ns, m.bin, "init-iptables", "--cleanup")...)
		if res.ExitCode != 0 {
			t.Errorf("init-iptables --cleanup in %s: exit %d\n%s%s", p.ns, res.ExitCode, res.Stdout, res.Stderr)
			return
		}
		if nat := m.natTable(t, p); strings.Contains(nat, "WSMESH") {
			t.Errorf("rules left in %s after --cleanup:\n%s", p.ns, nat)
		}
	})
	if !strings.Contains(res.Stdout, "-A WSMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001") {
		t.Errorf("init-iptables output does not show the rules:\n%s", res.Stdout)
	}
}

// natTable is the IPv4 nat table of p in both backends (nft and legacy).
func (m *netnsMesh) natTable(t *testing.T, p pod) string {
	t.Helper()
	var all strings.Builder
	saves := []string{"iptables-nft-save", "iptables-legacy-save"}
	if _, err := lookSbin(saves[0]); err != nil {
		if _, err := lookSbin(saves[1]); err != nil {
			saves = []string{"iptables-save"} // one flavour only, unnamed
		}
	}
	for _, save := range saves {
		if _, err := lookSbin(save); err != nil {
			continue
		}
		out, _ := exec.Command("ip", "netns", "exec", p.ns, save, "-t", "nat").CombinedOutput()
		all.Write(out)
	}
	return all.String()
}

// interceptDocs is the mesh configuration in interception mode: the
// guide's Services with the cluster IPs the pods' hosts files use, and
// WorkloadEntries placing each workload at its pod address (the Service's
// targetPort 80 applies). There is no Sidecar resource.
var interceptDocs = meshDocs{serverIP: serverSvcIP, clientIP: clientSvcIP, serverAddr: serverPodIP, clientAddr: clientPodIP}

// writeConfig writes the configuration for mode (http1 or http2: the
// guide's DestinationRule, and for http2 its EnvoyFilter, from examples/).
func (m *netnsMesh) writeConfig(t *testing.T, mode string) string {
	t.Helper()
	dir := filepath.Join(m.dir, "config-"+mode)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	examples := []string{mode + "/destinationrule.yaml"}
	if mode == "http2" {
		examples = append(examples, "http2/envoyfilter.yaml")
	}
	writeMeshConfig(t, dir, interceptDocs.yaml(), examples...)
	return dir
}

// startSidecar runs wsmesh sidecar --intercept for workload in p as uid
// 1337 and waits until it is ready.
func (m *netnsMesh) startSidecar(t *testing.T, p pod, config, workload string) *exec.Cmd {
	t.Helper()
	cmd := startProcess(t, m.execAsProxy(p.ns, m.bin, "sidecar", "--config", config, "--workload", workload, "--intercept", "--log-level", "debug")...)
	for _, port := range []string{"15001", "15006"} {
		nsWaitPort(t, p.ns, "0.0.0.0:"+port, cmd)
	}
	nsWaitPort(t, p.ns, "127.0.0.1:15000", cmd)
	deadline := time.Now().Add(nsSetupTimout)
	for {
		code, body, err := nsHTTPGet(p.ns, "http://127.0.0.1:15000/ready")
		if err == nil && code == http.StatusOK {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar %s in %s not ready: %d %q %v\n%s", workload, p.ns, code, body, err, processOutput(cmd))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkFields compares access-log fields: a string value ending in "*"
// is a prefix.
func checkFields(t *testing.T, who string, rec map[string]any, want map[string]any) {
	t.Helper()
	for k, w := range want {
		got := rec[k]
		if ws, ok := w.(string); ok && strings.HasSuffix(ws, "*") {
			if gs, ok := got.(string); !ok || !strings.HasPrefix(gs, strings.TrimSuffix(ws, "*")) {
				t.Errorf("%s access log %q = %v, want %s", who, k, got, ws)
			}
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("%s access log %q = %v, want %v", who, k, got, w)
		}
	}
}

func TestInterceptionInNetns(t *testing.T) {
	requireNetnsTools(t)
	m := newNetnsMesh(t)

	t.Run("init-iptables without privilege", func(t *testing.T) {
		res := runProcess(t, "", 30*time.Second, m.exec(m.server.ns, "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", m.bin, "init-iptables")...)
		want := "wsmesh init-iptables needs CAP_NET_ADMIN (run as root or in an init container with NET_ADMIN)"
		if res.ExitCode == 0 || !strings.Contains(res.Stderr, want) {
			t.Errorf("exit %d, stderr %q; want a failure saying %q", res.ExitCode, res.Stderr, want)
		}
		if nat := m.natTable(t, m.server); strings.Contains(nat, "WSMESH") {
			t.Errorf("rules installed without privilege:\n%s", nat)
		}
	})

	m.initIptables(t, m.client)
	m.initIptables(t, m.server)
	// Running it again (an init container restarted) leaves one set of rules.
	m.initIptables(t, m.server)
	if nat := m.natTable(t, m.server); strings.Count(nat, "-j WSMESH_INBOUND") != 1 || strings.Count(nat, "-j WSMESH_OUTPUT") != 1 {
		t.Fatalf("server nat table after two runs:\n%s", nat)
	}

	// The guide's server app: wsmesh echo on port 80 of the server pod.
	echo := startProcess(t, m.exec(m.server.ns, m.bin, "echo", "--listen", "0.0.0.0:80")...)
	nsWaitPort(t, m.server.ns, "127.0.0.1:80", echo)

	for _, mode := range []string{"http1", "http2"} {
		t.Run(mode, func(t *testing.T) {
			config := m.writeConfig(t, mode)
			server := m.startSidecar(t, m.server, config, "websockets-server")
			client := m.startSidecar(t, m.client, config, "websockets-client")
			clientLog, serverLog := m.guideSession(t, client, server)
			checkFields(t, "client", clientLog, map[string]any{
				"protocol":                  "HTTP/1.1",
				"method":                    "GET",
				"response_code":             101,
				"authority":                 meshHost + ":8080",
				"upstream_host":             serverPodIP + ":80",
				"upstream_cluster":          "outbound|8080||" + meshHost,
				"downstream_local_address":  serverSvcIP + ":8080",
				"downstream_remote_address": clientPodIP + ":*",
				"upstream_local_address":    clientPodIP + ":*",
			})
			serverProto := "HTTP/1.1"
			if mode == "http2" {
				serverProto = "HTTP/2"
			}
			checkFields(t, "server", serverLog, map[string]any{
				"protocol":                  serverProto,
				"method":                    "GET",
				"response_code":             101,
				"authority":                 meshHost + ":8080",
				"downstream_local_address":  serverPodIP + ":80",
				"downstream_remote_address": clientPodIP + ":*",
				"upstream_local_address":    "127.0.0.*",
			})
		})
	}

	// The ConfigMap shipped in deploy/kubernetes, with the workload names
	// wsmesh inject gives the guide's Deployments. It has no cluster IPs
	// or pod addresses (Kubernetes assigns them), so the client sidecar
	// routes the request by its Host to the service's cluster and, having
	// no endpoints for it, sends it to the original destination, which
	// kube-proxy translates (Envoy's ORIGINAL_DST); a DNAT rule in the
	// client pod plays kube-proxy here. The server sidecar sees HTTP/1.1.
	t.Run("deploy-configmap", func(t *testing.T) {
		config := m.writeDeployConfigMap(t, "wsmesh-config-http1.yaml")
		m.kubeProxyDNAT(t, m.client, serverSvcIP+":8080", serverPodIP+":80")
		server := m.startSidecar(t, m.server, config, "default/websockets-server")
		client := m.startSidecar(t, m.client, config, "default/websockets-client-sleep")
		clientLog, serverLog := m.guideSession(t, client, server)
		checkFields(t, "client", clientLog, map[string]any{
			"upstream_cluster":         "outbound|8080||websockets-server.default.svc.cluster.local",
			"upstream_host":            serverSvcIP + ":8080",
			"downstream_local_address": serverSvcIP + ":8080",
		})
		checkFields(t, "server", serverLog, map[string]any{
			"protocol":                 "HTTP/1.1",
			"method":                   "GET",
			"response_code":            101,
			"downstream_local_address": serverPodIP + ":80",
		})
	})
}

// guideSession types the guide's session into python3 -m websockets on a
// terminal in the client pod, checks the screen, and returns the one
// access-log line each of the client and server sidecars writes for it.
func (m *netnsMesh) guideSession(t *testing.T, client, server *exec.Cmd) (clientLog, serverLog map[string]any) {
	t.Helper()
	url := "ws://" + meshHost + ":8080"
	checkGuideTerminal(t, url, m.exec(m.client.ns, pythonBin, "-m", "websockets", url)...)
	clientLog = processLines(client).Wait(t, 1)[0]
	serverLog = processLines(server).Wait(t, 1)[0]
	t.Logf("client sidecar: %v", clientLog)
	t.Logf("server sidecar: %v", serverLog)
	return clientLog, serverLog
}

// writeDeployConfigMap writes the files of a ConfigMap manifest from
// deploy/kubernetes into a directory, as its volume mount would show them.
func (m *netnsMesh) writeDeployConfigMap(t *testing.T, manifest string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", manifest))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	if err := k8syaml.Unmarshal(data, &cm); err != nil || cm.Kind != "ConfigMap" || len(cm.Data) == 0 {
		t.Fatalf("%s: not a ConfigMap with data: %v", manifest, err)
	}
	dir := filepath.Join(m.dir, "configmap")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// kubeProxyDNAT translates a cluster IP to a pod address in p's nat OUTPUT
// chain, after wsmesh's jump (so only the sidecar's own connections, which
// wsmesh's chain returns, reach it), and removes the rule at the end.
func (m *netnsMesh) kubeProxyDNAT(t *testing.T, p pod, from, to string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(from)
	rule := []string{"OUTPUT", "-d", host + "/32", "-p", "tcp", "--dport", port, "-j", "DNAT", "--to-destination", to}
	ipt, err := lookSbin("iptables")
	if err != nil {
		t.Fatal(err)
	}
	run(t, m.exec(p.ns, append([]string{ipt, "-t", "nat", "-A"}, rule...)...)...)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", m.exec(p.ns, append([]string{ipt, "-t", "nat", "-D"}, rule...)...)[1:]...).CombinedOutput(); err != nil {
			t.Errorf("removing the DNAT rule: %v: %s", err, out)
		}
	})
}
