package inject

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	k8syaml "sigs.k8s.io/yaml"

	"github.com/wsmesh/wsmesh/internal/config"
)

// This file checks deploy/kubernetes: every manifest parses, the guide's
// manifests are the guide's, the ConfigMaps hold a valid wsmesh
// configuration in which the injected workloads resolve, and the RBAC
// grants what the brief lists.

const deployDir = "../../deploy/kubernetes"

func readDeploy(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDeployManifestsParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(deployDir, "*.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("manifests in %s: %v %v", deployDir, files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range docs(t, b) {
			if obj["apiVersion"] == nil || obj["kind"] == nil || at(t, obj, "metadata", "name") == nil {
				t.Errorf("%s: object without apiVersion, kind or metadata.name: %v", f, obj)
			}
		}
	}
}

func TestDeployGuideManifests(t *testing.T) {
	for _, name := range []string{"websockets-server.yaml", "websockets-client.yaml"} {
		example, err := os.ReadFile(filepath.Join("../../examples/http1", name))
		if err != nil {
			t.Fatal(err)
		}
		// Same objects as the guide's (comments aside).
		got, want := docs(t, readDeploy(t, name)), docs(t, example)
		gj, _ := k8syaml.Marshal(got)
		wj, _ := k8syaml.Marshal(want)
		if string(gj) != string(wj) {
			t.Errorf("%s differs from the guide's:\n%s\nwant:\n%s", name, gj, wj)
		}
	}
}

func TestDeployConfigMaps(t *testing.T) {
	for _, mode := range []string{"http1", "http2"} {
		t.Run(mode, func(t *testing.T) {
			objs := docs(t, readDeploy(t, "wsmesh-config-"+mode+".yaml"))
			if len(objs) != 1 || objs[0]["kind"] != "ConfigMap" || at(t, objs[0], "metadata", "name") != ConfigVolume {
				t.Fatalf("want one ConfigMap %s: %v", ConfigVolume, objs)
			}
			dir := t.TempDir()
			data := at(t, objs[0], "data").(map[string]any)
			for k, v := range data {
				if err := os.WriteFile(filepath.Join(dir, k), []byte(v.(string)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			snap, err := config.Load(dir)
			if err != nil {
				t.Fatalf("ConfigMap %s does not hold a valid configuration: %v", mode, err)
			}
			// The workloads the injected sidecars name.
			for _, f := range []string{"websockets-server.yaml", "websockets-client.yaml"} {
				res, err := Inject(readDeploy(t, f), DefaultOptions())
				if err != nil {
					t.Fatal(err)
				}
				var dep map[string]any
				for _, o := range docs(t, res.Output) {
					if o["kind"] == "Deployment" {
						dep = o
					}
				}
				proxy := named(t, at(t, dep, "spec", "template", "spec", "containers"), ProxyContainer)
				args := strs(proxy["args"])
				w := args[slices.Index(args, "--workload")+1]
				w = strings.ReplaceAll(w, "$(POD_NAMESPACE)", "default")
				if _, err := snap.Workload(w); err != nil {
					t.Errorf("injected --workload %s does not resolve in the ConfigMap: %v", w, err)
				}
			}
			server, err := snap.Workload("default/websockets-server")
			if err != nil {
				t.Fatal(err)
			}
			allow, _ := snap.AllowConnect(server)
			var upgrade bool
			for _, c := range snap.Clusters() {
				if c.Service == "websockets-server" {
					upgrade = c.Policy.H2Upgrade
				}
			}
			if want := mode == "http2"; allow != want || upgrade != want {
				t.Errorf("allow_connect %v, h2 upgrade %v; want both %v", allow, upgrade, want)
			}
		})
	}
}

func TestDeployRBAC(t *testing.T) {
	objs := docs(t, readDeploy(t, "rbac.yaml"))
	kinds := map[string]map[string]any{}
	for _, o := range objs {
		kinds[o["kind"].(string)] = o
	}
	if kinds["ServiceAccount"] == nil || at(t, kinds["ServiceAccount"], "metadata", "name") != "wsmesh" {
		t.Fatalf("no ServiceAccount wsmesh: %v", objs)
	}
	granted := map[string][]string{} // group/resource -> verbs
	for _, r := range at(t, kinds["ClusterRole"], "rules").([]any) {
		rule := r.(map[string]any)
		for _, g := range strs(rule["apiGroups"]) {
			for _, res := range strs(rule["resources"]) {
				granted[g+"/"+res] = strs(rule["verbs"])
			}
		}
	}
	for _, want := range []string{
		"/services", "/pods", "discovery.k8s.io/endpointslices",
		"networking.istio.io/destinationrules", "networking.istio.io/envoyfilters", "networking.istio.io/serviceentries",
		"networking.istio.io/workloadentries", "networking.istio.io/sidecars",
	} {
		if v := granted[want]; !slices.Equal(v, []string{"get", "list", "watch"}) {
			t.Errorf("ClusterRole grants %s: %v, want get, list, watch", want, v)
		}
	}
	for k, v := range granted {
		if slices.ContainsFunc(v, func(s string) bool { return s != "get" && s != "list" && s != "watch" }) {
			t.Errorf("ClusterRole grants more than read on %s: %v", k, v)
		}
	}
	b := kinds["ClusterRoleBinding"]
	if at(t, b, "roleRef", "name") != "wsmesh" || at(t, b, "subjects", 0, "name") != "wsmesh" || at(t, b, "subjects", 0, "kind") != "ServiceAccount" {
		t.Errorf("ClusterRoleBinding %v", b)
	}
}

func TestDockerfile(t *testing.T) {
	df := string(readDeploy(t, "Dockerfile"))
	for _, want := range []string{
		"FROM golang:", " AS build", "go build", "./cmd/wsmesh", "CGO_ENABLED=0",
		"FROM debian:bookworm-slim", "iptables", "COPY --from=build", `ENTRYPOINT ["/usr/local/bin/wsmesh"]`, "USER 1337",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
