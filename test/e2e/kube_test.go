package e2e

// TestKubeAPIServer runs discovery.KubeSource against a real kube-apiserver
// backed by a real etcd, both on loopback: the Istio CRDs (from the
// istio.io/api module), the guide's Services and Deployments, its
// DestinationRule and EnvoyFilter, EndpointSlices and a Pod written as a
// controller would (there is no controller-manager), then an update and a
// delete, each seen by the source.
//
// kube-apiserver is built from the k8s.io/kubernetes module by
// scripts/kube-apiserver.sh into a cache directory outside the repository
// (10 to 40 minutes, once per machine and version). The test runs when that
// binary exists, or with WSMESH_KUBE_APISERVER=1, which builds it:
//
//	WSMESH_KUBE_APISERVER=1 go test -timeout 60m -run TestKubeAPIServer ./test/e2e
//
// Otherwise it is skipped. etcd is Debian's etcd-server (the script installs
// it when missing and it runs as root). TestKubeInject uses the same etcd
// and kube-apiserver, started once for both (kubeShared).

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/config"
	"github.com/wsmesh/wsmesh/internal/discovery"
	"github.com/wsmesh/wsmesh/internal/sidecar"
	"github.com/wsmesh/wsmesh/internal/testutil"
)

// kubeVersion is the kube-apiserver version the test uses; it matches the
// k8s.io/client-go version in go.mod (v0.N.M for v1.N.M).
const kubeVersion = "v1.37.2"

// istioAPIVersion is the istio.io/api module whose CRDs are applied.
const istioAPIVersion = "v1.31.4"

func kubeAPIServerPath() string {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "wsmesh", "kube-apiserver-"+kubeVersion, "kube-apiserver")
}

func moduleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// requireKubeAPIServer returns the kube-apiserver and etcd binaries, or
// skips the test when they are not available and not asked for.
func requireKubeAPIServer(t *testing.T) (apiserver, etcd string) {
	t.Helper()
	bin := kubeAPIServerPath()
	_, statErr := os.Stat(bin)
	asked := os.Getenv("WSMESH_KUBE_APISERVER") == "1"
	if statErr != nil && !asked {
		t.Skipf("kube-apiserver %s is not built (%s); to build it once (10 to 40 minutes) and run this test: "+
			"WSMESH_KUBE_APISERVER=1 go test -timeout 60m -run TestKubeAPIServer ./test/e2e", kubeVersion, bin)
	}
	script := filepath.Join(moduleRoot(t), "scripts", "kube-apiserver.sh")
	cmd := exec.Command("bash", script, kubeVersion)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/kube-apiserver.sh: %v\n%s", err, stderr.String())
	}
	apiserver = strings.TrimSpace(string(out))
	etcd, err = exec.LookPath("etcd")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/etcd"); serr == nil {
			etcd = "/usr/bin/etcd"
		} else if asked || os.Getenv("CI") == "true" {
			t.Fatalf("etcd not found (install Debian's etcd-server): %v", err)
		} else {
			t.Skipf("etcd not found (install Debian's etcd-server): %v", err)
		}
	}
	return apiserver, etcd
}

// kubeCluster is a test's view of the shared etcd and kube-apiserver (see
// kubeShared): what create and deleteAtEnd record is deleted when the test
// that called startKubeCluster ends, its subtests included.
type kubeCluster struct {
	rest   *rest.Config // system:masters
	dyn    dynamic.Interface
	saRest *rest.Config // the ServiceAccount default/wsmesh

	mu      sync.Mutex
	created []kubeObject
}

// kubeObject is an object a test created, to delete when it ends.
type kubeObject struct {
	ri         dynamic.ResourceInterface
	kind, name string
}

// kubeShared is the etcd and kube-apiserver that TestKubeAPIServer and
// TestKubeInject share: started by the first of them to run, stopped by
// PID in TestMain once every test has run, passed or failed. The tests
// keep to their own namespaces (TestKubeAPIServer: default, istio-system
// and local, and the cluster-wide objects of deploy/kubernetes/rbac.yaml;
// TestKubeInject: inject-*) and delete what they created when they end,
// so neither sees the other's objects nor those of its own earlier runs
// (-count). Namespaces and CustomResourceDefinitions are created when
// missing and kept: without a controller-manager a deleted namespace stays
// Terminating, and the Istio CRDs are the same for every run.
var kubeShared kubeFixture

// kubeFixture starts etcd and kube-apiserver once and stops them by PID.
type kubeFixture struct {
	once    sync.Once
	cluster *kubeCluster // rest, dyn and saRest only
	err     error

	mu    sync.Mutex
	dir   string
	procs []*kubeProcess
}

// kubeProcess is etcd or kube-apiserver, run by kubeFixture.
type kubeProcess struct {
	cmd  *exec.Cmd
	out  *testutil.Lines // standard output and standard error
	done chan struct{}   // closed once the process has been waited for
}

func (p *kubeProcess) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// waitHTTP is waitHTTP for a process of the fixture, which no test owns.
func (p *kubeProcess) waitHTTP(url string, hdr http.Header, timeout time.Duration) error {
	if err := pollHTTP(url, hdr, timeout, p.running); err != nil {
		return fmt.Errorf("%s (pid %d): %v\n%s", p.cmd.Path, p.cmd.Process.Pid, err, tail(p.out.String(), 4000))
	}
	return nil
}

// startKubeCluster returns the shared etcd and kube-apiserver, starting
// them if no test has yet, or skips the test when they are not available
// and not asked for (requireKubeAPIServer). If the test fails, the output
// the two processes wrote while it ran is logged.
func startKubeCluster(t *testing.T) *kubeCluster {
	t.Helper()
	apiserverBin, etcdBin := requireKubeAPIServer(t)
	kubeShared.mu.Lock()
	from := map[*kubeProcess]int{}
	for _, p := range kubeShared.procs {
		from[p] = len(p.out.String())
	}
	kubeShared.mu.Unlock()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		kubeShared.mu.Lock()
		defer kubeShared.mu.Unlock()
		for _, p := range kubeShared.procs {
			t.Logf("output of %q (pid %d) while the test ran:\n%s", p.cmd.Args[:1], p.cmd.Process.Pid, p.out.String()[from[p]:])
		}
	})
	shared, err := kubeShared.get(t, apiserverBin, etcdBin)
	if err != nil {
		t.Fatalf("etcd and kube-apiserver: %v", err)
	}
	c := &kubeCluster{rest: shared.rest, dyn: shared.dyn, saRest: shared.saRest}
	t.Cleanup(func() { c.deleteCreated(t) })
	return c
}

// get starts etcd and kube-apiserver the first time it is called and
// returns them, or why they did not start, every time.
func (f *kubeFixture) get(t *testing.T, apiserverBin, etcdBin string) (*kubeCluster, error) {
	f.once.Do(func() {
		// What is left if start ends the test that called it.
		f.err = errors.New("the test that started them ended before they were ready")
		f.cluster, f.err = f.start(t, apiserverBin, etcdBin)
		if f.err != nil {
			f.stop()
		}
	})
	return f.cluster, f.err
}

func (f *kubeFixture) start(t *testing.T, apiserverBin, etcdBin string) (*kubeCluster, error) {
	dir, err := os.MkdirTemp("", "wsmesh-kube-")
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.dir = dir
	f.mu.Unlock()

	// etcd on loopback.
	clientPort, peerPort := freePort(t), freePort(t)
	clientURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	etcd, err := f.run(etcdBin,
		"--name", "wsmesh-test",
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "wsmesh-test="+peerURL,
		"--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if err := etcd.waitHTTP(clientURL+"/health", nil, 30*time.Second); err != nil {
		return nil, err
	}

	// Service-account signing key, generated here.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saKey := filepath.Join(dir, "sa.key")
	saPub := filepath.Join(dir, "sa.pub")
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}

	// Bearer tokens: the tests' own (system:masters) and one for the
	// ServiceAccount default/wsmesh of deploy/kubernetes/rbac.yaml, as a
	// sidecar's in-cluster token would authenticate.
	token, saToken := randomToken(), randomToken()
	tokens := filepath.Join(dir, "tokens.csv")
	if err := errors.Join(
		os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600),
		os.WriteFile(saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600),
		os.WriteFile(tokens, []byte(token+`,wsmesh-test,wsmesh-test,"system:masters"`+"\n"+
			saToken+`,system:serviceaccount:default:wsmesh,wsmesh-sa,"system:serviceaccounts,system:serviceaccounts:default"`+"\n"), 0o600),
	); err != nil {
		return nil, err
	}

	port := freePort(t)
	certDir := filepath.Join(dir, "certs")
	apiserver, err := f.run(apiserverBin,
		"--etcd-servers", clientURL,
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		// A loopback advertise address is refused by the endpoint
		// reconciler of the "kubernetes" Service; nothing needs it here.
		"--endpoint-reconciler-type", "none",
		"--secure-port", strconv.Itoa(port),
		"--cert-dir", certDir,
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--service-account-key-file", saPub,
		"--service-account-signing-key-file", saKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--token-auth-file", tokens,
		"--authorization-mode", "RBAC",
		// No controller-manager creates the default ServiceAccounts.
		"--disable-admission-plugins", "ServiceAccount",
		"--enable-priority-and-fairness=false",
		"--v", "1")
	if err != nil {
		return nil, err
	}
	base := "https://127.0.0.1:" + strconv.Itoa(port)
	hdr := http.Header{"Authorization": {"Bearer " + token}}
	if err := apiserver.waitHTTP(base+"/readyz", hdr, 90*time.Second); err != nil {
		return nil, err
	}

	rc := &rest.Config{
		Host:        base,
		BearerToken: token,
		// The serving certificate is the one kube-apiserver generated for
		// itself in --cert-dir, on loopback.
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             50, Burst: 100,
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	sa := rest.CopyConfig(rc)
	sa.BearerToken = saToken
	return &kubeCluster{rest: rc, dyn: dyn, saRest: sa}, nil
}

// run starts a process of the fixture, which stop kills.
func (f *kubeFixture) run(args ...string) (*kubeProcess, error) {
	p := &kubeProcess{cmd: exec.Command(args[0], args[1:]...), out: &testutil.Lines{}, done: make(chan struct{})}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %q: %v", args, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return p, nil
}

// stop kills the processes of the fixture by PID, kube-apiserver first,
// waits for them and removes their files. It does nothing when they were
// never started or are stopped already.
func (f *kubeFixture) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.procs) - 1; i >= 0; i-- {
		p := f.procs[i]
		if p.running() {
			_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
		}
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			fmt.Fprintf(os.Stderr, "e2e: %s (pid %d) still running 30s after SIGKILL\n", p.cmd.Path, p.cmd.Process.Pid)
		}
	}
	if f.dir != "" {
		os.RemoveAll(f.dir)
		f.dir = ""
	}
}

// deleteAtEnd records an object created through ri, to be deleted when
// the test that started c ends.
func (c *kubeCluster) deleteAtEnd(ri dynamic.ResourceInterface, kind, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.created = append(c.created, kubeObject{ri: ri, kind: kind, name: name})
}

// deleteCreated deletes what deleteAtEnd recorded, the last created first,
// at once (no grace period; no controller-manager collects dependents).
func (c *kubeCluster) deleteCreated(t *testing.T) {
	c.mu.Lock()
	created := c.created
	c.created = nil
	c.mu.Unlock()
	zero := int64(0)
	background := metav1.DeletePropagationBackground
	for i := len(created) - 1; i >= 0; i-- {
		o := created[i]
		err := o.ri.Delete(context.Background(), o.name, metav1.DeleteOptions{GracePeriodSeconds: &zero, PropagationPolicy: &background})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting %s %s from the shared kube-apiserver: %v", o.kind, o.name, err)
		}
	}
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitHTTP polls url until it answers 200 (TLS not verified: loopback),
// failing the test if proc exits first or time runs out.
func waitHTTP(t *testing.T, proc *exec.Cmd, url string, hdr http.Header, timeout time.Duration) {
	t.Helper()
	if err := pollHTTP(url, hdr, timeout, func() bool { return processRunning(proc) }); err != nil {
		t.Fatalf("%s: %v\n%s", proc.Path, err, tail(processOutput(proc), 4000))
	}
}

// pollHTTP polls url until it answers 200 (TLS not verified: loopback). It
// gives up when running reports that the server has exited, or after
// timeout.
func pollHTTP(url string, hdr http.Header, timeout time.Duration, running func() bool) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if !running() {
			return fmt.Errorf("exited while waiting for %s", url)
		}
		req, _ := http.NewRequest("GET", url, nil)
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err == nil {
			body := make([]byte, 512)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body[:n])
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %s: %s", url, timeout, last)
}

func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// kubeResources maps the kinds the test applies to their resources.
var kubeResources = map[string]string{
	"Namespace": "namespaces", "Service": "services", "Deployment": "deployments", "Pod": "pods",
	"EndpointSlice": "endpointslices", "ConfigMap": "configmaps", "ServiceAccount": "serviceaccounts",
	"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
	"CustomResourceDefinition": "customresourcedefinitions",
	"DestinationRule":          "destinationrules", "EnvoyFilter": "envoyfilters", "ServiceEntry": "serviceentries",
	"WorkloadEntry": "workloadentries", "Sidecar": "sidecars",
}

func gvrOf(t *testing.T, u *unstructured.Unstructured) schema.GroupVersionResource {
	t.Helper()
	gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
	if err != nil {
		t.Fatal(err)
	}
	res, ok := kubeResources[u.GetKind()]
	if !ok {
		t.Fatalf("no resource known for kind %s", u.GetKind())
	}
	return gv.WithResource(res)
}

// splitYAML parses multi-document YAML into objects.
func splitYAML(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split("\n"+string(data), "\n---") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("YAML: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out
}

// kubeKept are the kinds create keeps in the shared cluster (see
// kubeShared): one that exists already is used as it is.
var kubeKept = map[string]bool{"Namespace": true, "CustomResourceDefinition": true}

// create creates u in namespace ns (else its own) and has it deleted when
// the test ends, except for the kinds of kubeKept.
func (c *kubeCluster) create(t *testing.T, ns string, u *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	gvr := gvrOf(t, u)
	if ns == "" {
		ns = u.GetNamespace()
	}
	var ri dynamic.ResourceInterface = c.dyn.Resource(gvr)
	if ns != "" {
		ri = c.dyn.Resource(gvr).Namespace(ns)
	}
	got, err := ri.Create(context.Background(), u, metav1.CreateOptions{})
	switch {
	case kubeKept[u.GetKind()] && apierrors.IsAlreadyExists(err):
		got, err = ri.Get(context.Background(), u.GetName(), metav1.GetOptions{})
	case err == nil && !kubeKept[u.GetKind()]:
		c.deleteAtEnd(ri, u.GetKind(), got.GetName())
	}
	if err != nil {
		t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return got
}

func (c *kubeCluster) applyFile(t *testing.T, ns, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range splitYAML(t, data) {
		c.create(t, ns, u)
	}
}

// istioCRDs returns the CustomResourceDefinitions of the five Istio kinds
// wsmesh reads: from the istio.io/api module when the module proxy serves
// it, else minimal ones that keep every field.
func istioCRDs(t *testing.T) ([]*unstructured.Unstructured, string) {
	t.Helper()
	want := map[string]bool{
		"destinationrules.networking.istio.io": true, "envoyfilters.networking.istio.io": true,
		"serviceentries.networking.istio.io": true, "workloadentries.networking.istio.io": true,
		"sidecars.networking.istio.io": true,
	}
	cmd := exec.Command("go", "mod", "download", "-json", "istio.io/api@"+istioAPIVersion)
	cmd.Dir = t.TempDir() // outside the module: go.mod is not touched
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if err == nil {
		err = json.Unmarshal(out, &info)
	}
	if err == nil && info.Dir != "" {
		data, rerr := os.ReadFile(filepath.Join(info.Dir, "kubernetes", "customresourcedefinitions.gen.yaml"))
		if rerr == nil {
			var crds []*unstructured.Unstructured
			for _, u := range splitYAML(t, data) {
				if want[u.GetName()] {
					crds = append(crds, u)
				}
			}
			if len(crds) == len(want) {
				return crds, "istio.io/api " + istioAPIVersion
			}
		}
		err = rerr
	}
	t.Logf("istio.io/api %s not available (%v %s); using minimal CRDs", istioAPIVersion, err, info.Error)
	var crds []*unstructured.Unstructured
	for _, k := range []struct{ kind, plural string }{
		{"DestinationRule", "destinationrules"}, {"EnvoyFilter", "envoyfilters"},
		{"ServiceEntry", "serviceentries"}, {"WorkloadEntry", "workloadentries"}, {"Sidecar", "sidecars"},
	} {
		versions := []any{}
		for _, v := range []string{"v1alpha3", "v1beta1", "v1"} {
			if k.kind == "EnvoyFilter" && v != "v1alpha3" {
				continue
			}
			versions = append(versions, map[string]any{
				"name": v, "served": true, "storage": v == "v1alpha3",
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
			})
		}
		crds = append(crds, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": k.plural + ".networking.istio.io"},
			"spec": map[string]any{
				"group": "networking.istio.io", "scope": "Namespaced", "versions": versions,
				"names": map[string]any{"kind": k.kind, "listKind": k.kind + "List", "plural": k.plural, "singular": strings.ToLower(k.kind)},
			},
		}})
	}
	return crds, "minimal CRDs"
}

func (c *kubeCluster) installCRDs(t *testing.T) string {
	t.Helper()
	crds, from := istioCRDs(t)
	for _, crd := range crds {
		c.create(t, "", crd)
	}
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	deadline := time.Now().Add(30 * time.Second)
	for _, crd := range crds {
		for {
			got, err := c.dyn.Resource(gvr).Get(context.Background(), crd.GetName(), metav1.GetOptions{})
			if err == nil && crdEstablished(got) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not established: %v", crd.GetName(), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return from
}

func crdEstablished(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// waitKube waits for the source's snapshot to satisfy ok.
func waitKube(t *testing.T, src *discovery.KubeSource, what string, ok func(*config.Snapshot) (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < 20*time.Second {
		var good bool
		if good, last = ok(src.Current()); good {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s: %s (snapshot %s, rejected %v)", what, last, src.Current().Version, src.Rejected())
	return 0
}

func allowConnect(s *config.Snapshot, workload string) (bool, string) {
	w, err := s.Workload(workload)
	if err != nil {
		return false, err.Error()
	}
	return s.AllowConnect(w)
}

func TestKubeAPIServer(t *testing.T) {
	c := startKubeCluster(t)
	root := moduleRoot(t)
	ctx := context.Background()

	crdSource := c.installCRDs(t)
	t.Logf("Istio CRDs from %s", crdSource)

	// The guide's Services and Deployments, and its HTTP/2 DestinationRule
	// and EnvoyFilter, as `kubectl apply -n default -f` would.
	c.applyFile(t, "default", filepath.Join(root, "deploy", "kubernetes", "websockets-server.yaml"))
	c.applyFile(t, "default", filepath.Join(root, "deploy", "kubernetes", "websockets-client.yaml"))
	c.applyFile(t, "default", filepath.Join(root, "examples", "http2", "destinationrule.yaml"))
	c.applyFile(t, "default", filepath.Join(root, "examples", "http2", "envoyfilter.yaml"))
	c.create(t, "", &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "istio-system"}}})
	c.create(t, "istio-system", &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "istio", "namespace": "istio-system"},
		"data": map[string]any{"mesh": "connectTimeout: 4s\n"}}})

	// What the endpoint-slice controller and the kubelet would write.
	c.create(t, "default", splitYAML(t, []byte(`
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: websockets-server-x1
  labels: {kubernetes.io/service-name: websockets-server, endpointslice.kubernetes.io/managed-by: wsmesh-test}
addressType: IPv4
ports: [{name: http-websocket, port: 80, protocol: TCP}]
endpoints:
- addresses: [10.244.1.7]
  conditions: {ready: true}
- addresses: [10.244.1.8]
  conditions: {ready: false}
`))[0])
	pod := c.create(t, "default", splitYAML(t, []byte(`
apiVersion: v1
kind: Pod
metadata:
  name: websockets-server-5f7c9-x2x7q
  labels: {app: websockets-server}
spec:
  containers: [{name: websockets-test, image: example.invalid/websockets-test:1.0}]
`))[0])
	_ = unstructured.SetNestedField(pod.Object, "10.244.1.7", "status", "podIP")
	if _, err := c.dyn.Resource(gvrOf(t, pod)).Namespace("default").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("pod status: %v", err)
	}

	var logBuf lockedBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("KubeSource log:\n%s", logBuf.String())
		}
	})
	started := time.Now()
	src, err := discovery.NewKubeSource(discovery.KubeConfig{REST: c.rest, DiscoveryInterval: time.Second}, log)
	if err != nil {
		t.Fatalf("NewKubeSource: %v", err)
	}
	t.Logf("first snapshot after %s; watching %v", time.Since(started).Round(time.Millisecond), src.Watching())
	for _, kind := range []string{"Service", "EndpointSlice", "Pod", "Deployment", "ConfigMap",
		"DestinationRule", "EnvoyFilter", "ServiceEntry", "WorkloadEntry", "Sidecar"} {
		if _, ok := src.Watching()[kind]; !ok {
			t.Errorf("not watching %s: %v", kind, src.Watching())
		}
	}
	if v := src.Watching()["DestinationRule"].Version; v != "v1" {
		t.Errorf("DestinationRule watched at %s, want v1 (the preferred version)", v)
	}
	updates := src.Subscribe()
	runCtx, cancel := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- src.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
	})

	snap := src.Current()
	if len(src.Rejected()) > 0 {
		t.Errorf("rejected objects: %v", src.Rejected())
	}
	for _, f := range []string{"kubernetes:Service/default/websockets-server", "kubernetes:EnvoyFilter/default/h2-upgrade-wss",
		"kubernetes:ConfigMap/istio-system/istio"} {
		if !containsString(snap.Files(), f) {
			t.Errorf("snapshot lacks %s: %v", f, snap.Files())
		}
	}
	// The Service, with the cluster IP the API server assigned.
	svc, err := c.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "services"}).Namespace("default").
		Get(ctx, "websockets-server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clusterIP, _, _ := unstructured.NestedString(svc.Object, "spec", "clusterIP")
	ip, err := netip.ParseAddr(clusterIP)
	if err != nil {
		t.Fatalf("cluster IP %q: %v", clusterIP, err)
	}
	cl, err := snap.ClusterForAddress(ip, 8080)
	if err != nil {
		t.Fatalf("cluster for %s:8080: %v", ip, err)
	}
	if cl.Service != "websockets-server" || cl.Namespace != "default" {
		t.Errorf("cluster %s for %s:8080 (service %s/%s)", cl.Name, ip, cl.Namespace, cl.Service)
	}
	// Its endpoints: the ready one of the EndpointSlice.
	if len(cl.Endpoints) != 1 || cl.Endpoints[0].Address != "10.244.1.7:80" {
		t.Errorf("endpoints %+v, want the ready 10.244.1.7:80", cl.Endpoints)
	}
	// The DestinationRule's h2UpgradePolicy: UPGRADE.
	if !cl.Policy.H2Upgrade {
		t.Errorf("h2 upgrade off (%s), want UPGRADE from the DestinationRule", cl.Policy.H2UpgradeSource)
	}
	if got := snap.Mesh().ConnectTimeout; got != 4*time.Second {
		t.Errorf("mesh connectTimeout %s, want 4s from istio-system/istio", got)
	}
	// The EnvoyFilter's allow_connect for app=websockets-server: the
	// Deployment and the Pod, not the client.
	for w, want := range map[string]bool{
		"default/websockets-server": true, "default/websockets-server-5f7c9-x2x7q": true, "default/websockets-client-sleep": false,
	} {
		if got, why := allowConnect(snap, w); got != want {
			t.Errorf("allow_connect for %s = %v (%s), want %v", w, got, why, want)
		}
	}
	if w, err := snap.Workload("default/websockets-server-5f7c9-x2x7q"); err != nil || w.Address != "10.244.1.7" {
		t.Errorf("pod workload %+v %v, want address 10.244.1.7", w, err)
	}

	// Update: the DestinationRule to DO_NOT_UPGRADE (written at v1beta1,
	// read at v1: the API server converts).
	drGVR := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1beta1", Resource: "destinationrules"}
	dr, err := c.dyn.Resource(drGVR).Namespace("default").Get(ctx, "websockets-server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(dr.Object, "DO_NOT_UPGRADE", "spec", "trafficPolicy", "connectionPool", "http", "h2UpgradePolicy")
	if _, err := c.dyn.Resource(drGVR).Namespace("default").Update(ctx, dr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := waitKube(t, src, "h2UpgradePolicy DO_NOT_UPGRADE", func(s *config.Snapshot) (bool, string) {
		cl, err := s.ClusterForAddress(ip, 8080)
		if err != nil {
			return false, err.Error()
		}
		return !cl.Policy.H2Upgrade, cl.Policy.H2UpgradeSource
	})
	t.Logf("DestinationRule update seen after %s", d.Round(time.Millisecond))
	select {
	case s := <-updates:
		if s == nil {
			t.Fatal("subscriber channel closed")
		}
	case <-time.After(5 * time.Second):
		t.Error("no snapshot published to the subscriber after the update")
	}

	// Delete: the EnvoyFilter; allow_connect goes off.
	efGVR := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1alpha3", Resource: "envoyfilters"}
	if err := c.dyn.Resource(efGVR).Namespace("default").Delete(ctx, "h2-upgrade-wss", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	d = waitKube(t, src, "allow_connect off after the EnvoyFilter's deletion", func(s *config.Snapshot) (bool, string) {
		got, why := allowConnect(s, "default/websockets-server")
		return !got, why
	})
	t.Logf("EnvoyFilter delete seen after %s", d.Round(time.Millisecond))

	// Endpoints follow the EndpointSlice.
	sliceGVR := schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
	sl, err := c.dyn.Resource(sliceGVR).Namespace("default").Get(ctx, "websockets-server-x1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eps, _, _ := unstructured.NestedSlice(sl.Object, "endpoints")
	_ = unstructured.SetNestedField(eps[1].(map[string]any), true, "conditions", "ready")
	_ = unstructured.SetNestedSlice(sl.Object, eps, "endpoints")
	if _, err := c.dyn.Resource(sliceGVR).Namespace("default").Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitKube(t, src, "two ready endpoints", func(s *config.Snapshot) (bool, string) {
		cl, err := s.ClusterForAddress(ip, 8080)
		if err != nil {
			return false, err.Error()
		}
		return len(cl.Endpoints) == 2, fmt.Sprint(cl.Endpoints)
	})

	// An object the API server accepts but wsmesh does not: a
	// DestinationRule with UPGRADE and useClientProtocol (an error in
	// Istio too). It is left out and reported; the rest stays.
	c.create(t, "default", splitYAML(t, []byte(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: websockets-client}
spec:
  host: websockets-client
  trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}
`))[0])
	badName := "kubernetes:DestinationRule/default/websockets-client"
	deadline := time.Now().Add(20 * time.Second)
	for src.Rejected()[badName] == "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if msg := src.Rejected()[badName]; !strings.Contains(msg, badName+": document 1 (DestinationRule websockets-client)") {
		t.Errorf("invalid DestinationRule: rejection %q", msg)
	} else {
		t.Logf("rejected as expected: %s", msg)
	}
	if cl, err := src.Current().ClusterForAddress(ip, 8080); err != nil || len(cl.Endpoints) != 2 {
		t.Errorf("websockets-server changed by an invalid object elsewhere: %v %v", cl, err)
	}

	// With only the permissions of deploy/kubernetes/rbac.yaml, as a
	// sidecar running as the ServiceAccount wsmesh: the source starts, and
	// sees the Service and its endpoints.
	c.applyFile(t, "", filepath.Join(root, "deploy", "kubernetes", "rbac.yaml"))
	var saLog lockedBuffer
	var saSrc *discovery.KubeSource
	deadline = time.Now().Add(20 * time.Second)
	for {
		// RBAC caches may take a moment to see the new binding.
		saSrc, err = discovery.NewKubeSource(discovery.KubeConfig{REST: c.saRest, SyncTimeout: 20 * time.Second},
			slog.New(slog.NewTextHandler(&saLog, nil)))
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("NewKubeSource as ServiceAccount wsmesh: %v", err)
	}
	saSrc.Close()
	if cl, err := saSrc.Current().ClusterForAddress(ip, 8080); err != nil || len(cl.Endpoints) != 2 {
		t.Errorf("as ServiceAccount wsmesh: cluster %v, %v", cl, err)
	}
	t.Logf("as ServiceAccount wsmesh (rbac.yaml): watching %v", saSrc.Watching())
	for _, line := range strings.Split(saLog.String(), "\n") {
		if strings.Contains(line, "not watched") {
			t.Logf("  %s", line)
		}
	}

	t.Run("sidecars", func(t *testing.T) { kubeSidecars(t, c) })
	t.Run("cli", func(t *testing.T) { kubeCLI(t, c) })

	// Run stops the informers and closes the subscriber channel.
	cancel()
	select {
	case err := <-runDone:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		runDone <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	for range updates {
	}
}

// kubeSidecars runs the guide's two sidecars in this process, in local
// mode, each with a KubeSource limited to the namespace "local": the
// local-mode WorkloadEntries and Sidecars, the guide's Service,
// DestinationRule (UPGRADE) and EnvoyFilter come from the API server. A
// WebSocket crosses them over HTTP/2; the DestinationRule is then changed to
// DO_NOT_UPGRADE: the open WebSocket goes on, and a new one uses HTTP/1.1.
func kubeSidecars(t *testing.T, c *kubeCluster) {
	root := moduleRoot(t)
	egress, inbound, app := freePort(t), freePort(t), freePort(t)
	c.create(t, "", &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "local"}}})
	for _, u := range splitYAML(t, []byte(meshYAML(egress, inbound, app))) {
		c.create(t, "local", u)
	}
	c.applyFile(t, "local", filepath.Join(root, "examples", "http2", "destinationrule.yaml"))
	c.applyFile(t, "local", filepath.Join(root, "examples", "http2", "envoyfilter.yaml"))
	appAddr := "127.0.0.1:" + strconv.Itoa(app)
	startProcess(t, wsmeshBin, "echo", "--listen", appAddr)
	waitForPort(t, appAddr)

	access := map[string]*lockedBuffer{}
	var clientSrc *discovery.KubeSource
	for _, side := range []string{"server", "client"} {
		var logBuf lockedBuffer
		log := slog.New(slog.NewTextHandler(&logBuf, nil))
		src, err := discovery.NewKubeSource(discovery.KubeConfig{REST: c.rest, Namespaces: []string{"local"}, MeshConfigMap: "-"}, log)
		if err != nil {
			t.Fatalf("%s: NewKubeSource: %v", side, err)
		}
		access[side] = &lockedBuffer{}
		sc, err := sidecar.New(sidecar.Options{
			Source: src, Workload: "local/websockets-" + side, Access: accesslog.New(access[side]),
			Logger: log, ObserveWebSocket: true,
		})
		if err != nil {
			src.Close()
			t.Fatalf("%s: sidecar.New: %v", side, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		srcDone, scDone := make(chan struct{}), make(chan struct{})
		go func() { _ = src.Run(ctx); close(srcDone) }()
		go func() { _ = sc.Run(ctx); close(scDone) }()
		t.Cleanup(func() {
			cancel()
			<-scDone
			<-srcDone
			if t.Failed() {
				t.Logf("%s sidecar log:\n%s\naccess log:\n%s", side, logBuf.String(), access[side].String())
			}
		})
		select {
		case <-sc.Ready():
		case <-time.After(20 * time.Second):
			t.Fatalf("%s sidecar not ready", side)
		}
		if side == "client" {
			clientSrc = src
		}
	}
	waitForPort(t, "127.0.0.1:"+strconv.Itoa(egress))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := "ws://127.0.0.1:" + strconv.Itoa(egress) + "/"
	echo := func(conn *websocket.Conn, msg string) {
		t.Helper()
		if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("write %q: %v", msg, err)
		}
		_, got, err := conn.Read(ctx)
		if err != nil || string(got) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
	first, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("WebSocket through the sidecars: %v", err)
	}
	echo(first, "hello")

	// DestinationRule to DO_NOT_UPGRADE, while the WebSocket is open.
	drGVR := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
	dr, err := c.dyn.Resource(drGVR).Namespace("local").Get(ctx, "websockets-server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(dr.Object, "DO_NOT_UPGRADE", "spec", "trafficPolicy", "connectionPool", "http", "h2UpgradePolicy")
	if _, err := c.dyn.Resource(drGVR).Namespace("local").Update(ctx, dr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitKube(t, clientSrc, "DO_NOT_UPGRADE in the client sidecar's source", func(s *config.Snapshot) (bool, string) {
		cl, err := s.Route(egress, "websockets-server.local.svc.cluster.local")
		if err != nil {
			return false, err.Error()
		}
		return !cl.Policy.H2Upgrade, cl.Policy.H2UpgradeSource
	})
	time.Sleep(200 * time.Millisecond) // the sidecar applies what its source publishes

	second, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("WebSocket after the change: %v", err)
	}
	echo(second, "after")
	echo(first, "still open")

	// The server sidecar's access log, one line per WebSocket as it
	// closes: the new one over HTTP/1.1, the one open across the change
	// over HTTP/2, both closed normally (1000) by the client.
	serverLines := func(n int) []map[string]any {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var recs []map[string]any
			for _, line := range strings.Split(strings.TrimSpace(access["server"].String()), "\n") {
				var rec map[string]any
				if json.Unmarshal([]byte(line), &rec) == nil {
					recs = append(recs, rec)
				}
			}
			if len(recs) >= n || time.Now().After(deadline) {
				if len(recs) != n {
					t.Fatalf("server access log has %d lines, want %d:\n%s", len(recs), n, access["server"].String())
				}
				return recs
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	_ = second.Close(websocket.StatusNormalClosure, "")
	rec := serverLines(1)[0]
	if rec["protocol"] != "HTTP/1.1" || rec["websocket_close_code"] != float64(1000) {
		t.Errorf("new WebSocket after the change: protocol %v close %v, want HTTP/1.1 and 1000", rec["protocol"], rec["websocket_close_code"])
	}
	echo(first, "once more")
	_ = first.Close(websocket.StatusNormalClosure, "")
	rec = serverLines(2)[1]
	if rec["protocol"] != "HTTP/2" || rec["websocket_close_code"] != float64(1000) {
		t.Errorf("WebSocket open across the change: protocol %v close %v, want HTTP/2 and 1000", rec["protocol"], rec["websocket_close_code"])
	}
	t.Logf("server sidecar access log:\n%s", access["server"].String())
}

// kubeCLI runs `wsmesh sidecar --discovery kubernetes --kubeconfig FILE`
// when the binary has that flag, and checks its /config_dump.
func kubeCLI(t *testing.T, c *kubeCluster) {
	help, _ := exec.Command(wsmeshBin, "sidecar", "--help").CombinedOutput()
	if !strings.Contains(string(help), "--discovery") {
		t.Skip("wsmesh sidecar has no --discovery flag yet")
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	writeFile(t, kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: test, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
`, c.rest.Host, c.rest.BearerToken)))
	admin := "127.0.0.1:" + strconv.Itoa(freePort(t))
	proc := startProcess(t, wsmeshBin, "sidecar", "--discovery", "kubernetes", "--kubeconfig", kubeconfig,
		"--workload", "local/websockets-client", "--admin", admin, "--access-log", os.DevNull)
	waitHTTP(t, proc, "http://"+admin+"/ready", nil, 30*time.Second)
	resp, err := http.Get("http://" + admin + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dump struct {
		Config struct{ Files []string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		t.Fatal(err)
	}
	if !containsString(dump.Config.Files, "kubernetes:Sidecar/local/websockets-client") {
		t.Errorf("config_dump files %v lack kubernetes:Sidecar/local/websockets-client", dump.Config.Files)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
