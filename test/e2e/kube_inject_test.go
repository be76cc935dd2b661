package e2e

// TestKubeInject checks that what `wsmesh inject` writes is accepted by a
// real kube-apiserver (the one TestKubeAPIServer uses, which
// startKubeCluster starts once for both, under the same gate; this test
// keeps to the namespaces inject-* and deletes the workloads it stores when
// it ends): every manifest in deploy/kubernetes and examples is injected by
// the wsmesh binary, twice (the second output must equal the first), and
// every object of an injected file is created with a server-side dry run,
// with strict field validation. The objects the API server returns,
// defaulted and validated as it would store them, must still carry the
// wsmesh-proxy and wsmesh-init containers with everything inject sets. Pod
// templates are also updated and server-side applied (dry run) over the
// un-injected object, as `kubectl apply` of the injected file over a running
// workload does. Finally, broken variants of an injected Deployment must be
// rejected, so the check can fail.

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// injectExpect is what the injected containers must hold.
type injectExpect struct {
	image, pullPolicy string
	configMap         string // "" when injected with --config-map=""
	workloadFromPod   bool
	sidecarArgs       []string
	initArgs          []string
}

// injectDefaults is what `wsmesh inject` without flags gives.
var injectDefaults = injectExpect{image: "wsmesh:latest", pullPolicy: "IfNotPresent", configMap: "wsmesh-config"}

// injectKindsYAML has the other kinds inject handles: a bare Pod with its
// own init container and volume, a List of StatefulSet, DaemonSet and
// ReplicaSet, and what it must leave alone (a Job, an opted-out
// Deployment).
const injectKindsYAML = `# Pods of every kind wsmesh inject handles.
apiVersion: v1
kind: Pod
metadata:
  name: echo-pod
  labels: {app: echo-pod}
spec:
  securityContext:
    fsGroup: 2000
  initContainers:
  - name: prepare
    image: example.invalid/busybox:1.36
    command: [sh, -c, "true"]
  containers:
  - name: echo
    image: example.invalid/echo:1.0
    ports:
    - {name: http, containerPort: 8080}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
  volumes:
  - name: scratch
    emptyDir: {}
---
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: echo-sts}
  spec:
    serviceName: echo-sts
    selector: {matchLabels: {app: echo-sts}}
    template:
      metadata: {labels: {app: echo-sts}}
      spec:
        containers: [{name: echo, image: example.invalid/echo:1.0}]
- apiVersion: apps/v1
  kind: DaemonSet
  metadata: {name: echo-ds}
  spec:
    selector: {matchLabels: {app: echo-ds}}
    template:
      metadata: {labels: {app: echo-ds}}
      spec:
        containers: [{name: echo, image: example.invalid/echo:1.0}]
- apiVersion: apps/v1
  kind: ReplicaSet
  metadata: {name: echo-rs}
  spec:
    replicas: 2
    selector: {matchLabels: {app: echo-rs}}
    template:
      metadata: {labels: {app: echo-rs}}
      spec:
        containers: [{name: echo, image: example.invalid/echo:1.0}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: echo-job}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: run, image: example.invalid/echo:1.0}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo-opt-out}
spec:
  selector: {matchLabels: {app: echo-opt-out}}
  template:
    metadata:
      labels: {app: echo-opt-out}
      annotations: {sidecar.wsmesh.io/inject: "false"}
    spec:
      containers: [{name: echo, image: example.invalid/echo:1.0}]
`

// injectResources maps the kinds this test submits to their resources.
var injectResources = map[string]string{
	"Service": "services", "Pod": "pods", "Deployment": "deployments", "StatefulSet": "statefulsets",
	"DaemonSet": "daemonsets", "ReplicaSet": "replicasets", "Job": "jobs", "Namespace": "namespaces",
}

func injectResource(t *testing.T, c *kubeCluster, ns string, u *unstructured.Unstructured) dynamic.ResourceInterface {
	t.Helper()
	gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
	if err != nil {
		t.Fatal(err)
	}
	res, ok := injectResources[u.GetKind()]
	if !ok {
		t.Fatalf("no resource known for kind %s", u.GetKind())
	}
	return c.dyn.Resource(gv.WithResource(res)).Namespace(ns)
}

var injectDryRun = []string{metav1.DryRunAll}

func TestKubeInject(t *testing.T) {
	start := time.Now()
	c := startKubeCluster(t)
	t.Logf("etcd and kube-apiserver ready after %s", time.Since(start).Round(time.Millisecond))
	root := moduleRoot(t)

	type injectCase struct {
		name   string
		file   string // injected with -f FILE, else input with -f -
		input  []byte
		flags  []string
		expect injectExpect
		// skipped are the workloads inject must leave alone, with the
		// start of the reason it gives.
		skipped []string
	}
	var cases []injectCase
	var files []string
	for _, pattern := range []string{"deploy/kubernetes/*.yaml", "deploy/kubernetes/*.yml", "examples/*.yaml", "examples/*/*.yaml", "examples/*/*.yml"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, f)
		cases = append(cases, injectCase{name: rel, file: f, input: data, expect: injectDefaults})
	}
	cases = append(cases, injectCase{
		name: "kinds", input: []byte(injectKindsYAML),
		flags: []string{"--image", "registry.example/wsmesh:v0.1.0", "--image-pull-policy", "Always", "--config-map=",
			"--workload-from-pod", "--sidecar-arg=--log-level=debug", "--init-arg=--exclude-outbound-cidrs=169.254.169.254/32"},
		expect: injectExpect{image: "registry.example/wsmesh:v0.1.0", pullPolicy: "Always", workloadFromPod: true,
			sidecarArgs: []string{"--log-level=debug"}, initArgs: []string{"--exclude-outbound-cidrs=169.254.169.254/32"}},
		skipped: []string{"Job echo-job: a Job would never complete", "Deployment echo-opt-out: sidecar.wsmesh.io/inject is false"},
	})

	var workloads []string // injected and accepted, for the log
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Inject, then inject the output again.
			args := append([]string{wsmeshBin, "inject", "-f", "-"}, tc.flags...)
			stdin := string(tc.input)
			if tc.file != "" {
				args[3], stdin = tc.file, ""
			}
			first := runProcess(t, stdin, 30*time.Second, args...)
			if first.ExitCode != 0 {
				t.Fatalf("wsmesh inject: exit %d\n%s", first.ExitCode, first.Stderr)
			}
			args[3] = "-"
			second := runProcess(t, first.Stdout, 30*time.Second, args...)
			if second.ExitCode != 0 {
				t.Fatalf("wsmesh inject (again): exit %d\n%s", second.ExitCode, second.Stderr)
			}
			if second.Stdout != first.Stdout {
				t.Errorf("injecting twice changed the output:\nfirst:\n%s\nsecond:\n%s", first.Stdout, second.Stdout)
			}
			injected := injectReported(first.Stderr, "injected")
			// Every Pod and pod template of the input is injected, except
			// the ones the case says are skipped.
			var wantInjected []string
			for _, u := range injectExpandLists(splitYAML(t, tc.input)) {
				id := u.GetKind() + " " + u.GetName()
				if injectPodSpec(u) != nil && !slices.ContainsFunc(tc.skipped, func(s string) bool { return strings.HasPrefix(s, id+":") }) {
					wantInjected = append(wantInjected, id)
				}
			}
			if !slices.Equal(injected, wantInjected) {
				t.Errorf("wsmesh inject injected %q, want %q:\n%s", injected, wantInjected, first.Stderr)
			}
			for _, want := range tc.skipped {
				if !slices.ContainsFunc(injectReported(first.Stderr, "skipped"), func(s string) bool { return strings.HasPrefix(s, want) }) {
					t.Errorf("wsmesh inject did not report skipping %q:\n%s", want, first.Stderr)
				}
			}
			if again := injectReported(second.Stderr, "injected"); len(again) > 0 {
				t.Errorf("second injection injected %v again", again)
			}
			for _, w := range injected {
				if !slices.Contains(injectReported(second.Stderr, "skipped"), w+": already injected (sidecar.wsmesh.io/status)") {
					t.Errorf("second injection did not report %s as already injected:\n%s", w, second.Stderr)
				}
			}
			if len(injected) == 0 {
				// Nothing to inject: the file is copied byte for byte.
				if first.Stdout != string(tc.input) {
					t.Errorf("no workload injected, but the output differs from the input:\n%s", first.Stdout)
				}
				return
			}

			ns := "inject-" + strconv.Itoa(i)
			c.create(t, "", &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}})
			originals := map[string]*unstructured.Unstructured{}
			for _, u := range injectExpandLists(splitYAML(t, tc.input)) {
				originals[u.GetKind()+" "+u.GetName()] = u
			}
			var seen []string
			for _, u := range injectExpandLists(splitYAML(t, []byte(first.Stdout))) {
				id := u.GetKind() + " " + u.GetName()
				orig := originals[id]
				if orig == nil {
					t.Fatalf("%s is in the output but not in the input", id)
				}
				_, isInjected := injectPodAnnotations(u)["sidecar.wsmesh.io/status"]
				if isInjected {
					seen = append(seen, id)
				}
				ri := injectResource(t, c, ns, u)
				got, err := ri.Create(context.Background(), u.DeepCopy(), metav1.CreateOptions{DryRun: injectDryRun, FieldValidation: "Strict"})
				if err != nil {
					t.Errorf("dry-run create of %s rejected: %v", id, err)
					continue
				}
				checkInjectSubset(t, "dry-run create of "+id, u.Object, got.Object)
				if !isInjected {
					checkNotInjected(t, id, got)
					continue
				}
				checkInjected(t, "dry-run create of "+id, got, orig, tc.expect)
				if u.GetKind() == "Pod" {
					// A Pod's containers cannot change once it exists:
					// an injected Pod replaces the old one.
					workloads = append(workloads, tc.name+": "+id)
					continue
				}

				// Over the un-injected workload, as `kubectl apply` of
				// the injected file does: an update and a server-side
				// apply, both dry runs.
				live, err := ri.Create(context.Background(), orig.DeepCopy(), metav1.CreateOptions{FieldValidation: "Strict"})
				if err != nil {
					t.Fatalf("create of the un-injected %s: %v", id, err)
				}
				c.deleteAtEnd(ri, u.GetKind(), live.GetName())
				upd := u.DeepCopy()
				upd.SetResourceVersion(live.GetResourceVersion())
				got, err = ri.Update(context.Background(), upd, metav1.UpdateOptions{DryRun: injectDryRun, FieldValidation: "Strict"})
				if err != nil {
					t.Errorf("dry-run update of %s rejected: %v", id, err)
				} else {
					checkInjectSubset(t, "dry-run update of "+id, u.Object, got.Object)
					checkInjected(t, "dry-run update of "+id, got, orig, tc.expect)
				}
				got, err = ri.Apply(context.Background(), u.GetName(), u.DeepCopy(),
					metav1.ApplyOptions{DryRun: injectDryRun, FieldManager: "wsmesh-inject-test", Force: true})
				if err != nil {
					t.Errorf("dry-run server-side apply of %s rejected: %v", id, err)
				} else {
					checkInjectSubset(t, "dry-run apply of "+id, u.Object, got.Object)
					checkInjected(t, "dry-run apply of "+id, got, orig, tc.expect)
				}
				// The dry runs stored nothing.
				stored, err := ri.Get(context.Background(), u.GetName(), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if stored.GetResourceVersion() != live.GetResourceVersion() {
					t.Errorf("%s changed by dry runs: resourceVersion %s, was %s", id, stored.GetResourceVersion(), live.GetResourceVersion())
				}
				checkNotInjected(t, "stored "+id, stored)
				workloads = append(workloads, tc.name+": "+id)
			}
			sort.Strings(seen)
			sort.Strings(injected)
			if !slices.Equal(seen, injected) {
				t.Errorf("wsmesh inject reported injecting %v; annotated in its output: %v", injected, seen)
			}
		})
	}
	if len(workloads) == 0 {
		t.Fatal("no injected workload was submitted")
	}
	t.Logf("injected workloads accepted by kube-apiserver %s (dry runs):\n  %s", kubeVersion, strings.Join(workloads, "\n  "))

	t.Run("rejected", func(t *testing.T) { kubeInjectRejected(t, c, root) })
}

// kubeInjectRejected changes an injected Deployment in ways the API server
// must refuse, proving the dry run checks what inject writes.
func kubeInjectRejected(t *testing.T, c *kubeCluster, root string) {
	res := runProcess(t, "", 30*time.Second, wsmeshBin, "inject", "-q", "-f",
		filepath.Join(root, "deploy", "kubernetes", "websockets-server.yaml"))
	if res.ExitCode != 0 {
		t.Fatalf("wsmesh inject: exit %d\n%s", res.ExitCode, res.Stderr)
	}
	var dep *unstructured.Unstructured
	for _, u := range splitYAML(t, []byte(res.Stdout)) {
		if u.GetKind() == "Deployment" {
			dep = u
		}
	}
	if dep == nil {
		t.Fatalf("no Deployment in the output:\n%s", res.Stdout)
	}
	sidecar := func(u *unstructured.Unstructured) map[string]any {
		return injectNamed(injectPodSpec(u)["containers"], "wsmesh-proxy")
	}
	cases := []struct {
		name   string
		change func(u *unstructured.Unstructured)
		want   string // in the error message
		check  func(error) bool
	}{
		{"invalid container name", func(u *unstructured.Unstructured) {
			sidecar(u)["name"] = "wsmesh_proxy"
		}, `spec.template.spec.containers[1].name: Invalid value: "wsmesh_proxy"`, apierrors.IsInvalid},
		{"sidecar injected twice", func(u *unstructured.Unstructured) {
			spec := injectPodSpec(u)
			spec["containers"] = append(spec["containers"].([]any), sidecar(u))
		}, `spec.template.spec.containers[2].name: Duplicate value: "wsmesh-proxy"`, apierrors.IsInvalid},
		{"port name over 15 characters", func(u *unstructured.Unstructured) {
			sidecar(u)["ports"].([]any)[0].(map[string]any)["name"] = "wsmesh-outbound-tcp"
		}, `spec.template.spec.containers[1].ports[0].name: Invalid value: "wsmesh-outbound-tcp"`, apierrors.IsInvalid},
		{"unknown field", func(u *unstructured.Unstructured) {
			sidecar(u)["securityContext"].(map[string]any)["runAsUsr"] = int64(1337)
		}, `unknown field "spec.template.spec.containers[1].securityContext.runAsUsr"`, apierrors.IsBadRequest},
	}
	ns := "inject-rejected"
	c.create(t, "", &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}})
	ri := injectResource(t, c, ns, dep)
	for _, tc := range cases {
		u := dep.DeepCopy()
		tc.change(u)
		_, err := ri.Create(context.Background(), u, metav1.CreateOptions{DryRun: injectDryRun, FieldValidation: "Strict"})
		switch {
		case err == nil:
			t.Errorf("%s: accepted by the dry run", tc.name)
		case !tc.check(err) || !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: rejected with %v (reason %s), want %q", tc.name, err, apierrors.ReasonForError(err), tc.want)
		default:
			t.Logf("%s: rejected as expected: %v", tc.name, err)
		}
	}
	// The unchanged object passes in the same place.
	if _, err := ri.Create(context.Background(), dep, metav1.CreateOptions{DryRun: injectDryRun, FieldValidation: "Strict"}); err != nil {
		t.Errorf("unchanged injected Deployment rejected: %v", err)
	}
}

// injectReported returns what `wsmesh inject` listed on standard error as
// "wsmesh inject: VERB ...".
func injectReported(stderr, verb string) []string {
	var out []string
	for _, line := range strings.Split(stderr, "\n") {
		if s, ok := strings.CutPrefix(line, "wsmesh inject: "+verb+" "); ok {
			out = append(out, s)
		}
	}
	return out
}

// injectExpandLists replaces each List by its items, as kubectl does.
func injectExpandLists(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() != "List" {
			out = append(out, u)
			continue
		}
		items, _ := u.Object["items"].([]any)
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				out = append(out, &unstructured.Unstructured{Object: m})
			}
		}
	}
	return out
}

// injectPodTemplate returns the pod (template) of a Pod or workload, or nil.
func injectPodTemplate(u *unstructured.Unstructured) map[string]any {
	if u.GetKind() == "Pod" {
		return u.Object
	}
	tmpl, _, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "template")
	m, _ := tmpl.(map[string]any)
	return m
}

func injectPodSpec(u *unstructured.Unstructured) map[string]any {
	spec, _ := injectPodTemplate(u)["spec"].(map[string]any)
	return spec
}

// injectPodAnnotations returns the annotations of the pod (template), or nil.
func injectPodAnnotations(u *unstructured.Unstructured) map[string]any {
	ann, _, _ := unstructured.NestedFieldNoCopy(injectPodTemplate(u), "metadata", "annotations")
	m, _ := ann.(map[string]any)
	return m
}

// injectNamed returns the item of a list of objects with that name, or nil.
func injectNamed(list any, name string) map[string]any {
	l, _ := list.([]any)
	for _, it := range l {
		if m, ok := it.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	return nil
}

func injectNames(list any) []string {
	l, _ := list.([]any)
	out := []string{}
	for _, it := range l {
		if m, ok := it.(map[string]any); ok {
			n, _ := m["name"].(string)
			out = append(out, n)
		}
	}
	return out
}

// injectJSON renders v as JSON, numbers alike whether int64 or float64.
func injectJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// checkInjectSubset reports every field of want (the object submitted) that got
// (what the API server returned) lacks or holds differently: the server may
// add defaults, but must keep everything inject wrote. Lists must have the
// same items.
func checkInjectSubset(t *testing.T, where string, want, got map[string]any) {
	t.Helper()
	var diffs []string
	var walk func(path string, w, g any)
	walk = func(path string, w, g any) {
		switch wv := w.(type) {
		case map[string]any:
			gv, ok := g.(map[string]any)
			if !ok {
				diffs = append(diffs, path+": "+injectJSON(g)+", want an object")
				return
			}
			for k, v := range wv {
				walk(path+"."+k, v, gv[k])
			}
		case []any:
			gv, ok := g.([]any)
			if !ok || len(gv) != len(wv) {
				diffs = append(diffs, path+": "+injectJSON(g)+", want "+injectJSON(w))
				return
			}
			for i := range wv {
				walk(path+"["+strconv.Itoa(i)+"]", wv[i], gv[i])
			}
		default:
			if injectJSON(w) != injectJSON(g) {
				diffs = append(diffs, path+": "+injectJSON(g)+", want "+injectJSON(w))
			}
		}
	}
	walk("", want, got)
	for _, d := range diffs {
		t.Errorf("%s: returned object differs from the submitted one at %s", where, d)
	}
}

func checkNotInjected(t *testing.T, where string, u *unstructured.Unstructured) {
	t.Helper()
	spec := injectPodSpec(u)
	if slices.Contains(injectNames(spec["containers"]), "wsmesh-proxy") || slices.Contains(injectNames(spec["initContainers"]), "wsmesh-init") {
		t.Errorf("%s: has wsmesh containers, want none", where)
	}
}

// checkInjected checks, in an object the API server returned, the
// containers, volume and annotation wsmesh inject adds to orig.
func checkInjected(t *testing.T, where string, got, orig *unstructured.Unstructured, want injectExpect) {
	t.Helper()
	spec, origSpec := injectPodSpec(got), injectPodSpec(orig)
	if spec == nil {
		t.Errorf("%s: no pod spec", where)
		return
	}
	// The pod's own containers first, unchanged in order; wsmesh's last.
	if n, w := injectNames(spec["containers"]), append(injectNames(origSpec["containers"]), "wsmesh-proxy"); !slices.Equal(n, w) {
		t.Errorf("%s: containers %q, want %q", where, n, w)
	}
	if n, w := injectNames(spec["initContainers"]), append(injectNames(origSpec["initContainers"]), "wsmesh-init"); !slices.Equal(n, w) {
		t.Errorf("%s: initContainers %q, want %q", where, n, w)
	}

	workload := "$(POD_NAMESPACE)/$(POD_NAME)"
	if got.GetKind() != "Pod" && !want.workloadFromPod {
		workload = "$(POD_NAMESPACE)/" + got.GetName()
	}
	proxyArgs := []string{"sidecar", "--workload", workload, "--intercept", "--admin", "0.0.0.0:15000"}
	if want.configMap != "" {
		proxyArgs = append(proxyArgs, "--config", "/etc/wsmesh/config")
	}
	proxyArgs = append(proxyArgs, want.sidecarArgs...)
	initArgs := append([]string{"init-iptables", "--proxy-uid", "1337", "--outbound-port", "15001",
		"--inbound-port", "15006", "--exclude-inbound-ports", "15000"}, want.initArgs...)
	var mounts any
	if want.configMap != "" {
		mounts = []any{map[string]any{"name": "wsmesh-config", "mountPath": "/etc/wsmesh/config", "readOnly": true}}
	}

	type field struct {
		path []string
		want any // nil: absent
	}
	check := func(what string, obj map[string]any, fields []field) {
		t.Helper()
		if obj == nil {
			t.Errorf("%s: no %s", where, what)
			return
		}
		for _, f := range fields {
			v, _, _ := unstructured.NestedFieldNoCopy(obj, f.path...)
			if injectJSON(v) != injectJSON(f.want) {
				t.Errorf("%s: %s %s = %s, want %s", where, what, strings.Join(f.path, "."), injectJSON(v), injectJSON(f.want))
			}
		}
	}
	proxy := injectNamed(spec["containers"], "wsmesh-proxy")
	check("wsmesh-proxy", proxy, []field{
		{[]string{"image"}, want.image},
		{[]string{"imagePullPolicy"}, want.pullPolicy},
		{[]string{"args"}, proxyArgs},
		{[]string{"securityContext", "runAsUser"}, 1337},
		{[]string{"securityContext", "runAsGroup"}, 1337},
		{[]string{"securityContext", "runAsNonRoot"}, true},
		{[]string{"securityContext", "readOnlyRootFilesystem"}, true},
		{[]string{"securityContext", "privileged"}, false},
		{[]string{"securityContext", "allowPrivilegeEscalation"}, false},
		{[]string{"securityContext", "capabilities"}, map[string]any{"drop": []string{"ALL"}}},
		{[]string{"readinessProbe", "httpGet", "path"}, "/ready"},
		{[]string{"readinessProbe", "httpGet", "port"}, 15000},
		{[]string{"resources", "requests"}, map[string]string{"cpu": "10m", "memory": "32Mi"}},
		{[]string{"volumeMounts"}, mounts},
	})
	if proxy != nil {
		check("wsmesh-proxy env POD_NAME", injectNamed(proxy["env"], "POD_NAME"), []field{
			{[]string{"valueFrom", "fieldRef", "fieldPath"}, "metadata.name"}})
		check("wsmesh-proxy env POD_NAMESPACE", injectNamed(proxy["env"], "POD_NAMESPACE"), []field{
			{[]string{"valueFrom", "fieldRef", "fieldPath"}, "metadata.namespace"}})
		for name, port := range map[string]int{"wsmesh-outbound": 15001, "wsmesh-inbound": 15006, "wsmesh-admin": 15000} {
			check("wsmesh-proxy port "+name, injectNamed(proxy["ports"], name), []field{
				{[]string{"containerPort"}, port}, {[]string{"protocol"}, "TCP"}})
		}
	}
	check("wsmesh-init", injectNamed(spec["initContainers"], "wsmesh-init"), []field{
		{[]string{"image"}, want.image},
		{[]string{"imagePullPolicy"}, want.pullPolicy},
		{[]string{"args"}, initArgs},
		{[]string{"securityContext", "runAsUser"}, 0},
		{[]string{"securityContext", "runAsGroup"}, 0},
		{[]string{"securityContext", "runAsNonRoot"}, false},
		{[]string{"securityContext", "privileged"}, false},
		{[]string{"securityContext", "capabilities"}, map[string]any{"add": []string{"NET_ADMIN", "NET_RAW"}, "drop": []string{"ALL"}}},
		{[]string{"resources", "requests"}, map[string]string{"cpu": "10m", "memory": "16Mi"}},
	})

	vol := injectNamed(spec["volumes"], "wsmesh-config")
	status := map[string]any{"initContainers": []string{"wsmesh-init"}, "containers": []string{"wsmesh-proxy"}, "image": want.image}
	if want.configMap != "" {
		check("volume wsmesh-config", vol, []field{{[]string{"configMap", "name"}, want.configMap}})
		status["volumes"] = []string{"wsmesh-config"}
	} else if vol != nil {
		t.Errorf("%s: volume wsmesh-config %v, want none with --config-map=\"\"", where, vol)
	}
	var gotStatus any
	ann, _ := injectPodAnnotations(got)["sidecar.wsmesh.io/status"].(string)
	if err := json.Unmarshal([]byte(ann), &gotStatus); err != nil || injectJSON(gotStatus) != injectJSON(status) {
		t.Errorf("%s: annotation sidecar.wsmesh.io/status %q (%v), want %s", where, ann, err, injectJSON(status))
	}
}
