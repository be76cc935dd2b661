package inject

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	k8syaml "sigs.k8s.io/yaml"
)

// docs parses multi-document YAML as Kubernetes tools do (sigs.k8s.io/yaml)
// into generic objects, skipping empty documents.
func docs(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, d := range splitDocuments(b) {
		var m map[string]any
		if err := k8syaml.Unmarshal([]byte(d.body), &m); err != nil {
			t.Fatalf("output does not parse: %v\n%s", err, d.body)
		}
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

// at walks a generic object by keys and list indexes.
func at(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("at %v: %T is not an object", path, v)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("at %v: no item %d in %v", path, k, v)
			}
			v = l[k]
		}
	}
	return v
}

func named(t *testing.T, list any, name string) map[string]any {
	t.Helper()
	l, _ := list.([]any)
	for _, it := range l {
		if m, ok := it.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	t.Fatalf("no item named %q in %v", name, list)
	return nil
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestInjectGuideManifests(t *testing.T) {
	for _, file := range []string{"../../examples/http1/websockets-server.yaml", "../../examples/http1/websockets-client.yaml"} {
		in, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		opts := DefaultOptions()
		opts.Image = "registry.example/wsmesh:1.0"
		res, err := Inject(in, opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Injected) != 1 || !strings.HasPrefix(res.Injected[0], "Deployment ") {
			t.Errorf("%s: injected %v", file, res.Injected)
		}
		// The Service document passes through byte for byte.
		inDocs, outDocs := splitDocuments(in), splitDocuments(res.Output)
		if len(inDocs) != len(outDocs) || inDocs[0] != outDocs[0] || outDocs[1].separator != "---\n" {
			t.Errorf("%s: Service document or separator changed:\n%s", file, res.Output)
		}
		objs := docs(t, res.Output)
		if len(objs) != 2 || objs[0]["kind"] != "Service" || objs[1]["kind"] != "Deployment" {
			t.Fatalf("%s: output objects %v", file, objs)
		}
		dep := objs[1]
		name := at(t, dep, "metadata", "name").(string)
		pod := at(t, dep, "spec", "template")
		spec := at(t, pod, "spec")

		// The user's container is untouched and first.
		app := at(t, spec, "containers", 0).(map[string]any)
		if strings.HasPrefix(app["name"].(string), "wsmesh") {
			t.Errorf("app container not first: %v", app)
		}

		proxy := named(t, at(t, spec, "containers"), ProxyContainer)
		if proxy["image"] != "registry.example/wsmesh:1.0" {
			t.Errorf("proxy image %v", proxy["image"])
		}
		wantArgs := []string{"sidecar", "--workload", "$(POD_NAMESPACE)/" + name, "--intercept", "--admin", "0.0.0.0:15000", "--config", "/etc/wsmesh/config"}
		if got := strs(proxy["args"]); !slices.Equal(got, wantArgs) {
			t.Errorf("proxy args %q, want %q", got, wantArgs)
		}
		if e := named(t, proxy["env"], "POD_NAME"); at(t, e, "valueFrom", "fieldRef", "fieldPath") != "metadata.name" {
			t.Errorf("POD_NAME %v", e)
		}
		if e := named(t, proxy["env"], "POD_NAMESPACE"); at(t, e, "valueFrom", "fieldRef", "fieldPath") != "metadata.namespace" {
			t.Errorf("POD_NAMESPACE %v", e)
		}
		ports := map[string]float64{}
		for _, p := range proxy["ports"].([]any) {
			pm := p.(map[string]any)
			ports[pm["name"].(string)] = pm["containerPort"].(float64)
			if n := pm["name"].(string); !regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$`).MatchString(n) {
				t.Errorf("port name %q is not an IANA_SVC_NAME (15 characters at most)", n)
			}
		}
		if ports["wsmesh-outbound"] != 15001 || ports["wsmesh-inbound"] != 15006 || ports["wsmesh-admin"] != 15000 {
			t.Errorf("proxy ports %v", ports)
		}
		if at(t, proxy, "readinessProbe", "httpGet", "path") != "/ready" || at(t, proxy, "readinessProbe", "httpGet", "port") != float64(15000) {
			t.Errorf("readinessProbe %v", proxy["readinessProbe"])
		}
		if at(t, proxy, "securityContext", "runAsUser") != float64(1337) || at(t, proxy, "securityContext", "runAsNonRoot") != true {
			t.Errorf("proxy securityContext %v", proxy["securityContext"])
		}
		if m := named(t, proxy["volumeMounts"], ConfigVolume); m["mountPath"] != ConfigMountPath || m["readOnly"] != true {
			t.Errorf("volumeMount %v", m)
		}

		initc := named(t, at(t, spec, "initContainers"), InitContainer)
		if args := strs(initc["args"]); args[0] != "init-iptables" || !slices.Contains(args, "--proxy-uid") || !slices.Contains(args, "1337") {
			t.Errorf("init args %q", args)
		}
		if at(t, initc, "securityContext", "runAsUser") != float64(0) {
			t.Errorf("init runAsUser %v", at(t, initc, "securityContext"))
		}
		if add := strs(at(t, initc, "securityContext", "capabilities", "add")); !slices.Equal(add, []string{"NET_ADMIN", "NET_RAW"}) {
			t.Errorf("init capabilities %q", add)
		}
		if v := named(t, at(t, spec, "volumes"), ConfigVolume); at(t, v, "configMap", "name") != "wsmesh-config" {
			t.Errorf("volume %v", v)
		}

		status := at(t, pod, "metadata", "annotations", StatusAnnotation).(string)
		var st map[string]any
		if err := json.Unmarshal([]byte(status), &st); err != nil || st["image"] != "registry.example/wsmesh:1.0" {
			t.Errorf("status annotation %q: %v", status, err)
		}
		// The user's labels are kept.
		if at(t, pod, "metadata", "labels", "app") == nil {
			t.Error("template labels lost")
		}

		// Idempotent: injecting the output again changes nothing.
		again, err := Inject(res.Output, opts)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Output, res.Output) || len(again.Injected) != 0 || len(again.Skipped) != 1 {
			t.Errorf("second injection changed the output or injected %v (skipped %v)", again.Injected, again.Skipped)
		}
	}
}

const userManifest = `# top comment, kept
kind: Deployment
apiVersion: apps/v1
metadata:
  name: web
  namespace: shop
  annotations:
    note: "keep me"   # trailing comment
spec:
  replicas: 2
  x-unknown-field: {a: 1, b: [x, y]}
  template:
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: nginx
        args: ["on", "yes", '0755', "1e3"]
        futureField: true
      volumes:
      - name: data
        emptyDir: {}
    metadata:
      annotations:
        existing: "1"
      labels: {app: web}
`

func TestInjectKeepsUserFields(t *testing.T) {
	res, err := Inject([]byte(userManifest), DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	out := string(res.Output)
	for _, want := range []string{
		"# top comment, kept\nkind: Deployment\napiVersion: apps/v1\n",
		"# trailing comment",
		"x-unknown-field: {a: 1, b: [x, y]}",
		"futureField: true",
		`args: ["on", "yes", '0755', "1e3"]`,
		"terminationGracePeriodSeconds: 5",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lost %q:\n%s", want, out)
		}
	}
	// Order: spec before metadata in the template, as written.
	if strings.Index(out, "    spec:\n      terminationGracePeriodSeconds") > strings.Index(out, "    metadata:\n      annotations:\n        existing") {
		t.Errorf("template key order changed:\n%s", out)
	}
	objs := docs(t, res.Output)
	spec := at(t, objs[0], "spec", "template", "spec")
	if vols := at(t, spec, "volumes").([]any); len(vols) != 2 || named(t, vols, "data") == nil {
		t.Errorf("volumes %v", vols)
	}
	ann := at(t, objs[0], "spec", "template", "metadata", "annotations").(map[string]any)
	if ann["existing"] != "1" || ann[StatusAnnotation] == nil {
		t.Errorf("annotations %v", ann)
	}
	if got := strs(at(t, spec, "containers", 0, "args")); !slices.Equal(got, []string{"on", "yes", "0755", "1e3"}) {
		t.Errorf("user args changed: %q", got)
	}
	if at(t, objs[0], "spec", "replicas") != float64(2) {
		t.Error("replicas lost")
	}
}

func TestInjectKinds(t *testing.T) {
	in := `apiVersion: v1
kind: Pod
metadata:
  name: solo
spec:
  containers: []
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {a: "b"}
---
# only a comment
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      containers: [{name: c, image: busybox}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  template:
    spec:
      hostNetwork: true
      containers: [{name: c, image: busybox}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  template:
    metadata:
      annotations:
        sidecar.wsmesh.io/inject: "false"
    spec:
      containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: ReplicaSet
  metadata: {name: rs}
  spec:
    template:
      spec:
        containers:
        - {name: c, image: busybox}
`
	opts := DefaultOptions()
	opts.ConfigMap = ""
	opts.SidecarArgs = []string{"--log-level", "debug"}
	opts.InitArgs = []string{"--exclude-outbound-cidrs", "169.254.169.254/32"}
	res, err := Inject([]byte(in), opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"Pod solo", "ReplicaSet rs"}; !slices.Equal(res.Injected, want) {
		t.Errorf("injected %q, want %q", res.Injected, want)
	}
	if len(res.Skipped) != 3 {
		t.Errorf("skipped %q, want the Job, the hostNetwork DaemonSet and the opted-out StatefulSet", res.Skipped)
	}
	in2, out2 := splitDocuments([]byte(in)), splitDocuments(res.Output)
	if len(in2) != len(out2) {
		t.Fatalf("%d documents in, %d out", len(in2), len(out2))
	}
	for i := 1; i <= 5; i++ {
		if in2[i] != out2[i] {
			t.Errorf("document %d changed:\n%s", i+1, out2[i].body)
		}
	}
	objs := docs(t, res.Output)
	pod := objs[0]
	proxy := named(t, at(t, pod, "spec", "containers"), ProxyContainer)
	if got := strs(proxy["args"]); !slices.Equal(got, []string{"sidecar", "--workload", "$(POD_NAMESPACE)/$(POD_NAME)", "--intercept", "--admin", "0.0.0.0:15000", "--log-level", "debug"}) {
		t.Errorf("Pod proxy args %q", got)
	}
	if _, ok := at(t, pod, "spec").(map[string]any)["volumes"]; ok {
		t.Error("volume added without a ConfigMap")
	}
	initc := named(t, at(t, pod, "spec", "initContainers"), InitContainer)
	if args := strs(initc["args"]); !slices.Contains(args, "169.254.169.254/32") {
		t.Errorf("init args %q", args)
	}
	rs := at(t, objs[len(objs)-1], "items", 0)
	named(t, at(t, rs, "spec", "template", "spec", "containers"), ProxyContainer)

	again, err := Inject(res.Output, opts)
	if err != nil || !bytes.Equal(again.Output, res.Output) {
		t.Errorf("second injection changed the output (%v)", err)
	}
}

func TestInjectWorkloadFromPod(t *testing.T) {
	in, _ := os.ReadFile("../../examples/http1/websockets-server.yaml")
	opts := DefaultOptions()
	opts.WorkloadFromPod = true
	res, err := Inject(in, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.Output), "- $(POD_NAMESPACE)/$(POD_NAME)\n") {
		t.Errorf("workload not from the pod:\n%s", res.Output)
	}
}

func TestInjectErrors(t *testing.T) {
	for name, in := range map[string]string{
		"bad yaml":           "kind: Pod\nmetadata: [\n",
		"no pod spec":        "kind: Pod\nmetadata: {name: p}\n",
		"no template":        "kind: Deployment\nmetadata: {name: d}\nspec: {}\n",
		"containers not seq": "kind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n",
	} {
		if _, err := Inject([]byte("kind: ConfigMap\n---\n"+in), DefaultOptions()); err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.Contains(err.Error(), "document 2") {
			t.Errorf("%s: error does not name the document: %v", name, err)
		}
	}
	// Empty input and comments only pass through.
	for _, in := range []string{"", "# nothing\n", "---\n---\n"} {
		res, err := Inject([]byte(in), DefaultOptions())
		if err != nil || string(res.Output) != in {
			t.Errorf("Inject(%q) = %q, %v", in, res.Output, err)
		}
	}
}

func TestSplitDocuments(t *testing.T) {
	in := "a: 1\n---\nb: 2\n--- # c\nc: 3\n----\nd: 4\n---"
	got := splitDocuments([]byte(in))
	want := []document{{"", "a: 1\n"}, {"---\n", "b: 2\n"}, {"--- # c\n", "c: 3\n----\nd: 4\n"}, {"---", ""}}
	if !slices.Equal(got, want) {
		t.Errorf("splitDocuments = %q, want %q", got, want)
	}
	var joined strings.Builder
	for _, d := range got {
		joined.WriteString(d.separator + d.body)
	}
	if joined.String() != in {
		t.Error("split does not join back to the input")
	}
}
