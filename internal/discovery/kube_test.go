package discovery

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/rest"
	clienttesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/wsmesh/wsmesh/internal/config"
)

// The first layer of KubeSource's tests: client-go's fake dynamic client
// and fake discovery. test/e2e/kube_test.go runs the same against a real
// kube-apiserver and etcd.

var (
	gvrService       = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	gvrPod           = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	gvrConfigMap     = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	gvrSlice         = schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
	gvrDeployment    = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	gvrDestRule      = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1beta1", Resource: "destinationrules"}
	gvrEnvoyFilter   = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1alpha3", Resource: "envoyfilters"}
	gvrServiceEntry  = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1beta1", Resource: "serviceentries"}
	gvrWorkloadEntry = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1beta1", Resource: "workloadentries"}
	gvrSidecar       = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1beta1", Resource: "sidecars"}
)

var fakeListKinds = map[schema.GroupVersionResource]string{
	gvrService: "ServiceList", gvrPod: "PodList", gvrConfigMap: "ConfigMapList",
	gvrSlice: "EndpointSliceList", gvrDeployment: "DeploymentList",
	gvrDestRule: "DestinationRuleList", gvrEnvoyFilter: "EnvoyFilterList",
	gvrServiceEntry: "ServiceEntryList", gvrWorkloadEntry: "WorkloadEntryList", gvrSidecar: "SidecarList",
}

func apiResources(gv string, withIstio bool, res ...metav1.APIResource) *metav1.APIResourceList {
	verbs := metav1.Verbs{"get", "list", "watch", "create", "update", "delete"}
	for i := range res {
		res[i].Verbs = verbs
		res[i].Namespaced = true
	}
	return &metav1.APIResourceList{GroupVersion: gv, APIResources: res}
}

func fakeDiscovery(istio bool) *fakediscovery.FakeDiscovery {
	lists := []*metav1.APIResourceList{
		apiResources("v1", false,
			metav1.APIResource{Name: "services", Kind: "Service"},
			metav1.APIResource{Name: "pods", Kind: "Pod"},
			metav1.APIResource{Name: "configmaps", Kind: "ConfigMap"}),
		apiResources("discovery.k8s.io/v1", false, metav1.APIResource{Name: "endpointslices", Kind: "EndpointSlice"}),
		apiResources("apps/v1", false, metav1.APIResource{Name: "deployments", Kind: "Deployment"}),
	}
	if istio {
		lists = append(lists,
			apiResources("networking.istio.io/v1beta1", true,
				metav1.APIResource{Name: "destinationrules", Kind: "DestinationRule"},
				metav1.APIResource{Name: "serviceentries", Kind: "ServiceEntry"},
				metav1.APIResource{Name: "workloadentries", Kind: "WorkloadEntry"},
				metav1.APIResource{Name: "sidecars", Kind: "Sidecar"}),
			apiResources("networking.istio.io/v1alpha3", true,
				metav1.APIResource{Name: "destinationrules", Kind: "DestinationRule"},
				metav1.APIResource{Name: "envoyfilters", Kind: "EnvoyFilter"}))
	}
	return &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{Resources: lists}}
}

// obj parses one YAML manifest into an unstructured object.
func obj(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("test manifest: %v", err)
	}
	return &unstructured.Unstructured{Object: m}
}

const (
	svcYAML = `
apiVersion: v1
kind: Service
metadata: {name: websockets-server, namespace: default, labels: {app: websockets-server}, resourceVersion: "1"}
spec:
  type: ClusterIP
  clusterIP: 10.96.0.20
  ports: [{port: 8080, targetPort: 80, name: http-websocket}]
  selector: {app: websockets-server}
`
	sliceYAML = `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: websockets-server-abc
  namespace: default
  labels: {kubernetes.io/service-name: websockets-server}
addressType: IPv4
ports: [{name: http-websocket, port: 80, protocol: TCP}]
endpoints:
- addresses: [10.244.0.7]
  conditions: {ready: true}
`
	podYAML = `
apiVersion: v1
kind: Pod
metadata: {name: websockets-server-7d9f, namespace: default, labels: {app: websockets-server}}
spec:
  serviceAccountName: wsmesh
  containers: [{name: app, image: example}]
status:
  phase: Running
  podIP: 10.244.0.7
  conditions: [{type: Ready, status: "True"}]
`
	deployYAML = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: websockets-server, namespace: default, labels: {app: websockets-server}}
spec:
  selector: {matchLabels: {app: websockets-server}}
  template:
    metadata: {labels: {app: websockets-server}}
    spec: {containers: [{name: app, image: example}]}
`
	drYAML = `
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: websockets-server, namespace: default}
spec:
  host: websockets-server
  trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}
`
	efYAML = `
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: h2-upgrade-wss, namespace: default}
spec:
  workloadSelector: {labels: {app: websockets-server}}
  configPatches:
  - applyTo: NETWORK_FILTER
    match:
      context: SIDECAR_INBOUND
      listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}
    patch:
      operation: MERGE
      value:
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          http2_protocol_options: {allow_connect: true}
`
	meshYAML = `
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    connectTimeout: 3s
`
)

func newFakeSource(t *testing.T, istio bool, objs ...*unstructured.Unstructured) (*KubeSource, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	ros := make([]runtime.Object, len(objs))
	for i, o := range objs {
		ros[i] = o
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), fakeListKinds, ros...)
	src, err := newKubeSource(KubeConfig{Debounce: 20 * time.Millisecond, SyncTimeout: 10 * time.Second, DiscoveryInterval: -1},
		nil, dyn, fakeDiscovery(istio))
	if err != nil {
		t.Fatalf("newKubeSource: %v", err)
	}
	t.Cleanup(src.Close)
	return src, dyn
}

func runSource(t *testing.T, src *KubeSource) <-chan *config.Snapshot {
	t.Helper()
	ch := src.Subscribe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = src.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

// waitSnap waits for a snapshot for which ok is true.
func waitSnap(t *testing.T, src *KubeSource, what string, ok func(*config.Snapshot) bool) *config.Snapshot {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s := src.Current(); ok(s) {
			return s
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; snapshot %s files %v rejected %v", what, src.Current().Version, src.Current().Files(), src.Rejected())
	return nil
}

func clusterFor(t *testing.T, s *config.Snapshot) *config.Cluster {
	t.Helper()
	c, err := s.Route(8080, "websockets-server")
	if err != nil {
		t.Fatalf("route websockets-server:8080: %v", err)
	}
	return c
}

func TestKubeSourceFake(t *testing.T) {
	src, dyn := newFakeSource(t, true, obj(t, svcYAML), obj(t, sliceYAML), obj(t, podYAML), obj(t, deployYAML),
		obj(t, drYAML), obj(t, efYAML), obj(t, meshYAML))
	snap := src.Current()
	if w := src.Watching(); len(w) != 10 {
		t.Errorf("watching %v, want 10 kinds", w)
	}
	c := clusterFor(t, snap)
	if len(c.Endpoints) != 1 || c.Endpoints[0].Address != "10.244.0.7:80" {
		t.Errorf("endpoints %+v, want 10.244.0.7:80", c.Endpoints)
	}
	if c.Policy.H2Upgrade != true {
		t.Errorf("h2 upgrade = %v (%s), want true", c.Policy.H2Upgrade, c.Policy.H2UpgradeSource)
	}
	if got := snap.Mesh().ConnectTimeout; got != 3*time.Second {
		t.Errorf("mesh connectTimeout %v, want 3s", got)
	}
	for _, name := range []string{"default/websockets-server", "default/websockets-server-7d9f"} {
		w, err := snap.Workload(name)
		if err != nil {
			t.Fatalf("workload %s: %v", name, err)
		}
		if allow, src := snap.AllowConnect(w); !allow {
			t.Errorf("allow_connect for %s = false (%s)", name, src)
		}
	}
	pod, _ := snap.Workload("default/websockets-server-7d9f")
	if pod.Address != "10.244.0.7" || pod.ServiceAccount != "wsmesh" {
		t.Errorf("pod workload %+v", pod)
	}
	wantFile := "kubernetes:Service/default/websockets-server"
	if files := snap.Files(); !contains(files, wantFile) {
		t.Errorf("files %v lack %s", files, wantFile)
	}

	ch := runSource(t, src)
	ctx := context.Background()

	// Update: DO_NOT_UPGRADE.
	dr := obj(t, strings.Replace(drYAML, "UPGRADE}", "DO_NOT_UPGRADE}", 1))
	if _, err := dyn.Resource(gvrDestRule).Namespace("default").Update(ctx, dr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-ch:
		if s == nil {
			t.Fatal("subscriber channel closed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot published after the DestinationRule update")
	}
	waitSnap(t, src, "h2UpgradePolicy DO_NOT_UPGRADE", func(s *config.Snapshot) bool {
		c, err := s.Route(8080, "websockets-server")
		return err == nil && !c.Policy.H2Upgrade
	})

	// Delete the EnvoyFilter: allow_connect off.
	if err := dyn.Resource(gvrEnvoyFilter).Namespace("default").Delete(ctx, "h2-upgrade-wss", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSnap(t, src, "allow_connect off", func(s *config.Snapshot) bool {
		w, err := s.Workload("default/websockets-server")
		if err != nil {
			return false
		}
		allow, _ := s.AllowConnect(w)
		return !allow
	})

	// An invalid update of an accepted object keeps its accepted version.
	bad := obj(t, strings.Replace(drYAML, "UPGRADE}", "UPGRAED}", 1))
	if _, err := dyn.Resource(gvrDestRule).Namespace("default").Update(ctx, bad, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	drName := "kubernetes:DestinationRule/default/websockets-server"
	deadline := time.Now().Add(10 * time.Second)
	for src.Rejected()[drName] == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	msg := src.Rejected()[drName]
	if !strings.Contains(msg, drName) || !strings.Contains(msg, `unknown value "UPGRAED"`) {
		t.Fatalf("rejection of %s = %q", drName, msg)
	}
	if c := clusterFor(t, src.Current()); c.Policy.H2Upgrade || c.Policy.DestinationRule == "" {
		t.Errorf("after an invalid update the accepted DestinationRule (DO_NOT_UPGRADE) must stay: %+v", c.Policy)
	}

	// An invalid new object is left out; the rest applies.
	badSvc := obj(t, strings.NewReplacer("websockets-server", "other", "targetPort: 80", "targetPort: -1").Replace(svcYAML))
	if _, err := dyn.Resource(gvrService).Namespace("default").Create(ctx, badSvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	slice2 := obj(t, strings.Replace(strings.Replace(sliceYAML, "10.244.0.7", "10.244.0.8", 1), "websockets-server-abc", "websockets-server-def", 1))
	if _, err := dyn.Resource(gvrSlice).Namespace("default").Create(ctx, slice2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSnap(t, src, "two endpoints", func(s *config.Snapshot) bool {
		c, err := s.Route(8080, "websockets-server")
		return err == nil && len(c.Endpoints) == 2
	})
	if msg := src.Rejected()["kubernetes:Service/default/other"]; msg == "" {
		t.Errorf("invalid Service not reported; rejected %v", src.Rejected())
	}
}

func TestKubeSourceWithoutIstioCRDs(t *testing.T) {
	src, dyn := newFakeSource(t, false, obj(t, svcYAML), obj(t, sliceYAML), obj(t, podYAML))
	w := src.Watching()
	if _, ok := w["DestinationRule"]; ok {
		t.Errorf("watching DestinationRule without the CRD: %v", w)
	}
	if _, ok := w["Service"]; !ok {
		t.Errorf("not watching Service: %v", w)
	}
	c := clusterFor(t, src.Current())
	if c.Policy.H2Upgrade {
		t.Errorf("h2 upgrade without a DestinationRule")
	}
	runSource(t, src)
	pod := obj(t, strings.Replace(strings.Replace(podYAML, "7d9f", "aaaa", 1), "10.244.0.7", "10.244.0.9", 1))
	if _, err := dyn.Resource(gvrPod).Namespace("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSnap(t, src, "new pod", func(s *config.Snapshot) bool {
		_, err := s.Workload("default/websockets-server-aaaa")
		return err == nil
	})
}

func TestKubeSourceRequiresCoreKinds(t *testing.T) {
	disco := &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), fakeListKinds)
	_, err := newKubeSource(KubeConfig{SyncTimeout: 5 * time.Second}, nil, dyn, disco)
	if err == nil || !strings.Contains(err.Error(), "does not serve Service") {
		t.Fatalf("err = %v, want: does not serve Service", err)
	}
}

func TestLeanObject(t *testing.T) {
	u := obj(t, podYAML)
	u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "kubectl"}})
	u.SetAnnotations(map[string]string{lastApplied: "{}", "keep": "me"})
	out, err := leanObject("Pod")(u)
	if err != nil {
		t.Fatal(err)
	}
	data, err := kubeObjectYAML(out.(*unstructured.Unstructured), gvrPod, "Pod")
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: v1
kind: Pod
metadata:
  annotations:
    keep: me
  labels:
    app: websockets-server
  name: websockets-server-7d9f
  namespace: default
spec:
  serviceAccountName: wsmesh
status:
  podIP: 10.244.0.7
`
	if string(data) != want {
		t.Errorf("lean pod:\n%s\nwant:\n%s", data, want)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestHTTPDiscovery(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/prefix/api/v1":
			_, _ = w.Write([]byte(`{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"services","kind":"Service","namespaced":true,"verbs":["list","watch"]}]}`))
		case "/prefix/apis/networking.istio.io/v1":
			_, _ = w.Write([]byte(`{"kind":"APIResourceList","groupVersion":"networking.istio.io/v1","resources":[]}`))
		case "/prefix/apis/broken/v1":
			http.Error(w, "boom", http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	d, err := newHTTPDiscovery(&rest.Config{Host: srv.URL + "/prefix"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := d.ServerResourcesForGroupVersion("v1")
	if err != nil || len(list.APIResources) != 1 || list.APIResources[0].Kind != "Service" {
		t.Errorf("v1: %+v %v", list, err)
	}
	if _, err := d.ServerResourcesForGroupVersion("networking.istio.io/v1"); err != nil {
		t.Errorf("istio v1: %v", err)
	}
	if _, err := d.ServerResourcesForGroupVersion("networking.istio.io/v1alpha3"); !apierrors.IsNotFound(err) {
		t.Errorf("not served: err %v, want NotFound", err)
	}
	if _, err := d.ServerResourcesForGroupVersion("broken/v1"); err == nil || apierrors.IsNotFound(err) || !strings.Contains(err.Error(), "500") {
		t.Errorf("broken: err %v", err)
	}
}
