package config_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/config"
)

// guide files are the guide's YAML documents, verbatim.
var guideFiles = []string{
	"testdata/guide/websockets-server.yaml",
	"testdata/guide/websockets-client.yaml",
	"testdata/guide/destinationrule-do-not-upgrade.yaml",
	"testdata/guide/destinationrule-upgrade.yaml",
	"testdata/guide/envoyfilter-h2-upgrade-wss.yaml",
}

func TestGuideDocumentsLoadCleanly(t *testing.T) {
	for _, f := range guideFiles {
		t.Run(filepath.Base(f), func(t *testing.T) {
			s, err := config.Load(f)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(s.Warnings) != 0 {
				t.Fatalf("warnings: %q", s.Warnings)
			}
		})
	}
}

func TestGuideHTTP2(t *testing.T) {
	s, err := config.Load(guideFiles[0], guideFiles[1], guideFiles[3], guideFiles[4])
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Warnings) != 0 {
		t.Fatalf("warnings: %q", s.Warnings)
	}
	c, err := s.Route(8080, "websockets-server.default.svc.cluster.local:8080")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "outbound|8080||websockets-server.default.svc.cluster.local" || c.Protocol != config.ProtocolHTTP || c.PortName != "http-websocket" {
		t.Fatalf("cluster %+v", c)
	}
	if !c.Policy.H2Upgrade || c.Policy.H2UpgradeSource != "DestinationRule default/websockets-server" {
		t.Fatalf("policy %+v", c.Policy)
	}
	if c.Policy.ConnectTimeout != 10*time.Second || c.Policy.LoadBalancer != "ROUND_ROBIN" {
		t.Fatalf("defaults %+v", c.Policy)
	}
	w, err := s.Workload("websockets-server")
	if err != nil {
		t.Fatal(err)
	}
	if w.Kind != "Deployment" || w.Labels["app"] != "websockets-server" {
		t.Fatalf("workload %+v", w)
	}
	if ok, src := s.AllowConnect(w); !ok || src != "EnvoyFilter default/h2-upgrade-wss" {
		t.Fatalf("AllowConnect = %v %q", ok, src)
	}
	client, err := s.Workload("default/websockets-client-sleep")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.AllowConnect(client); ok {
		t.Fatal("client must not allow CONNECT")
	}
}

func TestGuideHTTP1(t *testing.T) {
	s, err := config.Load(guideFiles[0], guideFiles[1], guideFiles[2])
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Route(8080, "websockets-server")
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.H2Upgrade || c.Policy.H2UpgradeSource != "DestinationRule default/websockets-server" {
		t.Fatalf("policy %+v", c.Policy)
	}
}

func TestExamplesLoadCleanly(t *testing.T) {
	for _, tc := range []struct {
		dir     string
		upgrade bool
	}{{"../../examples/http1", false}, {"../../examples/http2", true}} {
		t.Run(filepath.Base(tc.dir), func(t *testing.T) {
			s, err := config.Load(tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Warnings) != 0 {
				t.Fatalf("warnings: %q", s.Warnings)
			}
			client, err := s.Workload("websockets-client")
			if err != nil {
				t.Fatal(err)
			}
			out, in := s.Listeners(client)
			if len(in) != 0 || len(out) != 1 || out[0].Bind != "127.0.0.1" || out[0].Port != 8080 || out[0].Protocol != config.ProtocolHTTP {
				t.Fatalf("client listeners out=%+v in=%+v", out, in)
			}
			for _, auth := range []string{"websockets-server.default.svc.cluster.local:8080", "127.0.0.1:8080", "localhost", ""} {
				c, err := s.RouteFrom(client, 8080, auth)
				if err != nil {
					t.Fatalf("RouteFrom(%q): %v", auth, err)
				}
				if c.Service != "websockets-server" || len(c.Endpoints) != 1 || c.Endpoints[0].Address != "127.0.0.1:15006" {
					t.Fatalf("RouteFrom(%q) = %+v", auth, c)
				}
				if c.Policy.H2Upgrade != tc.upgrade {
					t.Fatalf("H2Upgrade = %v", c.Policy.H2Upgrade)
				}
			}
			server, err := s.Workload("websockets-server")
			if err != nil {
				t.Fatal(err)
			}
			if server.Kind != "WorkloadEntry" || server.Address != "127.0.0.1" {
				t.Fatalf("server %+v", server)
			}
			app, l, ok := s.InboundTarget(server, 15006)
			if !ok || app != "127.0.0.1:18080" || l.Bind != "127.0.0.1" || l.Name != "127.0.0.1_15006" {
				t.Fatalf("InboundTarget = %q %+v %v", app, l, ok)
			}
			if ok, _ := s.AllowConnect(server); ok != tc.upgrade {
				t.Fatalf("AllowConnect = %v", ok)
			}
			if _, err := json.Marshal(s.Dump()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// errorsOf returns the individual messages of a joined error.
func errorsOf(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

const svcDoc = `apiVersion: v1
kind: Service
metadata:
  name: websockets-server
spec:
  ports:
  - port: 8080
    targetPort: 80
    name: http-websocket
  selector:
    app: websockets-server
`

func TestBriefExampleError(t *testing.T) {
	data := svcDoc + `---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: websockets-server
spec:
  template:
    metadata:
      labels:
        app: websockets-server
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: websockets-server
spec:
  host: websockets-server
  trafficPolicy:
    connectionPool:
      http:
        h2UpgradePolicy: UPGRAED
`
	_, err := config.Parse("examples/http1/mesh.yaml", []byte(data))
	want := `examples/http1/mesh.yaml: document 3 (DestinationRule websockets-server): spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: unknown value "UPGRAED" (want DEFAULT, DO_NOT_UPGRADE or UPGRADE)`
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Document != 3 || fe.Kind != "DestinationRule" || fe.Field != "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy" {
		t.Fatalf("FieldError %+v", fe)
	}
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must appear in one error message
	}{
		{
			name: "yaml syntax names document and file line",
			yaml: svcDoc + "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [broken\n",
			want: []string{"t.yaml: document 2: invalid YAML: ", "line 1"},
		},
		{
			name: "not a mapping",
			yaml: "- a\n- b\n",
			want: []string{"t.yaml: document 1: want a Kubernetes resource"},
		},
		{
			name: "missing kind",
			yaml: "apiVersion: v1\nmetadata:\n  name: x\n",
			want: []string{"t.yaml: document 1: kind: missing"},
		},
		{
			name: "unsupported version",
			yaml: "apiVersion: networking.istio.io/v2\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: a\n",
			want: []string{`document 1 (DestinationRule r): apiVersion: unsupported version "networking.istio.io/v2" for DestinationRule (want networking.istio.io/v1, networking.istio.io/v1beta1 or networking.istio.io/v1alpha3)`},
		},
		{
			name: "missing name",
			yaml: "apiVersion: v1\nkind: Service\nspec:\n  ports:\n  - port: 80\n",
			want: []string{"document 1 (Service): metadata.name: required"},
		},
		{
			name: "service port wrong type",
			yaml: strings.Replace(svcDoc, "port: 8080", "port: eighty", 1),
			want: []string{`(Service websockets-server): spec.ports[0].port: want integer, got string "eighty"`},
		},
		{
			name: "service port range and target name",
			yaml: strings.Replace(strings.Replace(svcDoc, "port: 8080", "port: 70000", 1), "targetPort: 80", "targetPort: Not_A_Name", 1),
			want: []string{"spec.ports[0].port: port 70000 out of range 1-65535", `spec.ports[0].targetPort: "Not_A_Name" is neither a port number nor a valid port name`},
		},
		{
			name: "service ports need names and unique numbers",
			yaml: "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 80\n  - port: 80\n    name: http\n    protocol: QUIC\n",
			want: []string{"spec.ports[0].name: required when a Service has more than one port", "spec.ports[1].protocol: unknown value \"QUIC\" (want TCP, UDP or SCTP)"},
		},
		{
			name: "service clusterIP",
			yaml: "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  clusterIP: 10.0.0.300\n  ports:\n  - port: 80\n",
			want: []string{`spec.clusterIP: "10.0.0.300" is not an IP address or None`},
		},
		{
			name: "label value",
			yaml: "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  selector:\n    app: \"not valid!\"\n  ports:\n  - port: 80\n",
			want: []string{`spec.selector.app: invalid label value "not valid!"`},
		},
		{
			name: "duplicate resource",
			yaml: svcDoc + "---\n" + svcDoc,
			want: []string{"t.yaml: document 2 (Service websockets-server): metadata.name: duplicate Service default/websockets-server, first defined at t.yaml: document 1 (Service websockets-server)"},
		},
		{
			name: "upgrade with useClientProtocol",
			yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: a\n  trafficPolicy:\n    connectionPool:\n      http:\n        h2UpgradePolicy: UPGRADE\n        useClientProtocol: true\n",
			want: []string{"(DestinationRule r): spec.trafficPolicy.connectionPool.http.useClientProtocol: must not be true when h2UpgradePolicy is UPGRADE"},
		},
		{
			name: "destination rule types and enums",
			yaml: `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: r
spec:
  host: a
  trafficPolicy:
    loadBalancer:
      simple: round_robin
    connectionPool:
      tcp:
        maxConnections: -1
        connectTimeout: 10 seconds
      http:
        useClientProtocol: "yes please"
`,
			want: []string{
				`spec.trafficPolicy.connectionPool.tcp.connectTimeout: invalid duration "10 seconds"`,
				`spec.trafficPolicy.connectionPool.http.useClientProtocol: want boolean, got string "yes please"`,
			},
		},
		{
			name: "destination rule enum case",
			yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: a\n  trafficPolicy:\n    loadBalancer:\n      simple: round_robin\n    connectionPool:\n      tcp:\n        maxConnections: -1\n",
			want: []string{
				`spec.trafficPolicy.loadBalancer.simple: unknown value "round_robin" (want UNSPECIFIED, ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM or PASSTHROUGH; values are case-sensitive)`,
				"spec.trafficPolicy.connectionPool.tcp.maxConnections: must not be negative, got -1",
			},
		},
		{
			name: "duration minimum",
			yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: a\n  trafficPolicy:\n    connectionPool:\n      http:\n        idleTimeout: 0.1ms\n",
			want: []string{`spec.trafficPolicy.connectionPool.http.idleTimeout: duration "0.1ms" must be at least 1ms`},
		},
		{
			name: "port level settings",
			yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: a\n  trafficPolicy:\n    portLevelSettings:\n    - port:\n        number: 80\n    - port:\n        number: 80\n      connectionPool:\n        http:\n          h2UpgradePolicy: upgrade\n    - loadBalancer:\n        simple: RANDOM\n",
			want: []string{
				"spec.trafficPolicy.portLevelSettings[1].port.number: duplicate port 80 (also portLevelSettings[0])",
				`spec.trafficPolicy.portLevelSettings[1].connectionPool.http.h2UpgradePolicy: unknown value "upgrade"`,
				"spec.trafficPolicy.portLevelSettings[2].port: required",
			},
		},
		{
			name: "subsets",
			yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: a\n  subsets:\n  - name: v1\n  - name: v1\n  - labels:\n      v: x\n",
			want: []string{`spec.subsets[1].name: duplicate subset "v1"`, "spec.subsets[2].name: required"},
		},
		{
			name: "destination rule host",
			yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: \"bad host\"\n",
			want: []string{`spec.host: "bad host" is not a host name`},
		},
		{
			name: "sidecar listeners",
			yaml: `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: sc
  namespace: app
spec:
  workloadSelector:
    labels:
      app: a
  ingress:
  - port:
      number: 15006
      protocol: HTTP
    bind: not-an-ip
    defaultEndpoint: 127.0.0.1
  - port:
      number: 0
      protocol: WEBSOCKET
    defaultEndpoint: unix://relative
  - port:
      number: 15007
  egress:
  - port:
      number: 15007
    hosts: ["*/*"]
  - hosts: ["default"]
  - port:
      number: 8080
    bind: 127.0.0.1
    hosts: []
`,
			want: []string{
				`(Sidecar sc): spec.ingress[0].bind: "not-an-ip" is not an IP address`,
				`spec.ingress[0].defaultEndpoint: "127.0.0.1" is not host:port or unix:///path`,
				"spec.ingress[1].port.number: port 0 out of range 1-65535",
				`spec.ingress[1].port.protocol: unknown protocol "WEBSOCKET"`,
				`spec.ingress[1].defaultEndpoint: "unix://relative" is not a Unix socket path`,
				"spec.ingress[2].defaultEndpoint: required",
				"spec.egress[0]: duplicate listener (default bind):15007 (also spec.ingress[2])",
				"spec.egress[1].port: an egress listener without a port must be the last one",
				`spec.egress[1].hosts[0]: "default" must be namespace/dnsName`,
				"spec.egress[2].hosts: at least one host is required",
			},
		},
		{
			name: "sidecar empty selector",
			yaml: "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: sc\nspec:\n  workloadSelector:\n    labels: {}\n",
			want: []string{"spec.workloadSelector.labels: at least one label is required"},
		},
		{
			name: "two namespace-wide sidecars",
			yaml: "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: a\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: b\n",
			want: []string{"t.yaml: document 2 (Sidecar b): spec.workloadSelector: namespace default already has a Sidecar without workloadSelector (a at t.yaml: document 1 (Sidecar a))"},
		},
		{
			name: "workload entry",
			yaml: "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: we\nspec:\n  ports:\n    http: 0\n",
			want: []string{"(WorkloadEntry we): spec.address: required", "spec.ports.http: port 0 out of range"},
		},
		{
			name: "workload entry types",
			yaml: "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: we\nspec:\n  address: 10.0.0.1\n  ports:\n    grpc: \"9090\"\n",
			want: []string{`(WorkloadEntry we): spec.ports.grpc: want integer, got string "9090"`},
		},
		{
			name: "service entry",
			yaml: "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\nspec:\n  hosts: [\"10.0.0.1\"]\n  resolution: STATIC\n  ports:\n  - number: 443\n    protocol: QUIC\n",
			want: []string{
				`spec.hosts[0]: "10.0.0.1" is not a host name`,
				"spec.ports[0].name: required",
				`spec.ports[0].protocol: unknown protocol "QUIC"`,
				"spec.endpoints: resolution STATIC needs endpoints or a workloadSelector",
			},
		},
		{
			name: "service entry static needs IPs",
			yaml: "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\nspec:\n  hosts: [\"*.example.com\"]\n  addresses: [\"10.1.0.0/33\"]\n  resolution: STATIC\n  ports:\n  - number: 443\n    name: tls\n  endpoints:\n  - address: example.com\n",
			want: []string{`spec.addresses[0]: "10.1.0.0/33" is not an IP address or CIDR`, `spec.endpoints[0].address: "example.com" is not an IP address (resolution STATIC needs IPs)`},
		},
		{
			name: "endpoint slice",
			yaml: "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: es\n  labels:\n    kubernetes.io/service-name: s\naddressType: IPv4\nendpoints:\n- addresses: [\"::1\"]\n- addresses: []\nports:\n- port: 99999\n",
			want: []string{
				`(EndpointSlice es): endpoints[0].addresses[0]: "::1" is not an IPv4 address`,
				"endpoints[1].addresses: at least one address is required",
				"ports[0].port: port 99999 out of range",
			},
		},
		{
			name: "endpoint slice types",
			yaml: "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: es\naddressType: IPv4\nendpoints:\n- addresses: [\"10.0.0.1\"]\n  conditions:\n    ready: maybe\n",
			want: []string{`(EndpointSlice es): endpoints[0].conditions.ready: want boolean, got string "maybe"`},
		},
		{
			name: "envoy filter",
			yaml: `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: ef
spec:
  configPatches:
  - applyTo: NETWORK_FILTERS
    match:
      context: SIDECAR_INBOUNDS
      proxy:
        proxyVersion: '^1\.(('
    patch:
      operation: MERGE
`,
			want: []string{
				`(EnvoyFilter ef): spec.configPatches[0].applyTo: unknown value "NETWORK_FILTERS"`,
				`spec.configPatches[0].match.context: unknown value "SIDECAR_INBOUNDS"`,
				"spec.configPatches[0].match.proxy.proxyVersion: invalid regular expression",
				"spec.configPatches[0].patch.value: required for operation MERGE",
			},
		},
		{
			name: "envoy filter allow_connect types",
			yaml: `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: ef
spec:
  configPatches:
  - applyTo: NETWORK_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
    patch:
      operation: MERGE
      value:
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          http2_protocol_options:
            allow_connect: "true"
`,
			want: []string{`spec.configPatches[0].patch.value.typed_config.http2_protocol_options.allow_connect: want boolean, got string "true"`},
		},
		{
			name: "mesh config",
			yaml: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    h2UpgradePolicy: DEFAULT\n",
			want: []string{`(ConfigMap istio): data.mesh: h2UpgradePolicy: unknown value "DEFAULT" (want DO_NOT_UPGRADE or UPGRADE)`},
		},
		{
			name: "mesh config yaml",
			yaml: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: \"a: [\"\n",
			want: []string{"(ConfigMap istio): data.mesh: invalid YAML"},
		},
		{
			name: "list items",
			yaml: "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata:\n    name: s\n  spec:\n    ports:\n    - port: 0\n",
			want: []string{"t.yaml: document 1 item 1 (Service s): spec.ports[0].port: port 0 out of range"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := config.Parse("t.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error; warnings %q", s.Warnings)
			}
			if s != nil {
				t.Fatal("snapshot returned with an error")
			}
			msgs := errorsOf(err)
			for _, w := range tc.want {
				found := false
				for _, m := range msgs {
					if strings.Contains(m, w) {
						found = true
					}
				}
				if !found {
					t.Errorf("missing %q in:\n%s", w, strings.Join(msgs, "\n"))
				}
			}
			for _, m := range msgs {
				if !strings.HasPrefix(m, "t.yaml: document ") {
					t.Errorf("message does not name file and document: %q", m)
				}
			}
		})
	}
}

func TestAllErrorsCollected(t *testing.T) {
	data := strings.Replace(svcDoc, "port: 8080", "port: 0", 1) + "---\n" +
		"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: x\n  trafficPolicy:\n    loadBalancer:\n      simple: FASTEST\n" +
		"---\nkey: [\n"
	_, err := config.Parse("t.yaml", []byte(data))
	msgs := errorsOf(err)
	if len(msgs) != 3 {
		t.Fatalf("want 3 errors, got %d:\n%s", len(msgs), strings.Join(msgs, "\n"))
	}
	for i, want := range []string{"document 1 (Service", "document 2 (DestinationRule", "document 3: invalid YAML"} {
		if !strings.Contains(msgs[i], want) {
			t.Errorf("error %d = %q, want %q", i, msgs[i], want)
		}
	}
}

func TestWarnings(t *testing.T) {
	data := `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
spec:
  mtls:
    mode: STRICT
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: knative
spec:
  template: {}
---
apiVersion: v1
kind: Service
metadata:
  name: s
spec:
  selectr:
    app: s
  ports:
  - port: 80
    nmae: http
    color: blue
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: lua
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.lua
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: nowhere
spec:
  host: s.default
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
data:
  mesh: ""
`
	s, err := config.Parse("t.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"t.yaml: document 1 (PeerAuthentication default): kind security.istio.io/v1 PeerAuthentication is not used by wsmesh, skipped",
		"t.yaml: document 2 (Service knative): kind serving.knative.dev/v1 Service is not used by wsmesh, skipped",
		`t.yaml: document 3 (Service s): spec.selectr: unknown field, ignored (did you mean "selector"?)`,
		`t.yaml: document 3 (Service s): spec.ports[0].nmae: unknown field, ignored (did you mean "name"?)`,
		"t.yaml: document 3 (Service s): spec.ports[0].color: unknown field, ignored",
		"t.yaml: document 4 (EnvoyFilter lua): spec.configPatches[0]: not applied by wsmesh: applyTo HTTP_FILTER",
		`t.yaml: document 5 (DestinationRule nowhere): spec.host: "s.default" is not expanded and matches no host (Istio expands only a bare name); write "s" or "s.default.svc.cluster.local"`,
		"t.yaml: document 6 (ConfigMap istio): metadata.namespace: ConfigMap istio is read only in namespace istio-system",
	}
	for _, w := range want {
		found := false
		for _, got := range s.Warnings {
			if strings.HasPrefix(got, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("missing warning %q in:\n%s", w, strings.Join(s.Warnings, "\n"))
		}
	}
	if len(s.Warnings) != len(want) {
		t.Errorf("want %d warnings, got %d:\n%s", len(want), len(s.Warnings), strings.Join(s.Warnings, "\n"))
	}
	// The knative Service must not have been read as a Kubernetes Service.
	if _, err := s.Route(80, "knative"); err == nil {
		t.Fatal("knative Service was read")
	}
}

func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b.yml", svcDoc)
	write("a.yaml", "# comment only\n---\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: other\nspec:\n  ports:\n  - port: 0\n")
	write("notes.txt", "not yaml: [")
	write(".hidden.yaml", "not yaml: [")
	_, err := config.Load(dir)
	msgs := errorsOf(err)
	if len(msgs) != 1 || !strings.HasPrefix(msgs[0], filepath.Join(dir, "a.yaml")+": document 1 (Service other): spec.ports[0].port") {
		t.Fatalf("errors: %q", msgs)
	}
	files, _ := config.ConfigFiles(dir)
	if len(files) != 2 || filepath.Base(files[0]) != "a.yaml" || filepath.Base(files[1]) != "b.yml" {
		t.Fatalf("files %q", files)
	}
	write("a.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: other\nspec:\n  ports:\n  - port: 81\n")
	s, err := config.Load(dir, filepath.Join(dir, "a.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Files()) != 2 {
		t.Fatalf("a file named twice must be read once: %q", s.Files())
	}
	s2, _ := config.Load(dir)
	if s.Version != s2.Version || s.Version == "" {
		t.Fatalf("versions %q %q", s.Version, s2.Version)
	}

	empty := t.TempDir()
	if _, err := config.Load(empty); err == nil || !strings.Contains(err.Error(), "no *.yaml or *.yml files") {
		t.Fatalf("empty dir: %v", err)
	}
	if _, err := config.Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file loaded")
	}
}

// TestDestinationRuleSettingsNotApplied checks that a DestinationRule's
// settings that wsmesh accepts but does not apply are warned of, each by
// its path, and that those it applies are not.
func TestDestinationRuleSettingsNotApplied(t *testing.T) {
	data := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ws
spec:
  host: ws.default.svc.cluster.local
  exportTo: ["."]
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 1s
        tcpKeepalive: {time: 60s}
        idleTimeout: 5m
      http:
        h2UpgradePolicy: UPGRADE
        maxRetries: 3
        idleTimeout: 1m
    outlierDetection: {consecutive5xxErrors: 5}
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 8080}
      connectionPool:
        http: {maxConcurrentStreams: 10}
    - port: {number: 9090}
      loadBalancer: {simple: PASSTHROUGH}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 1}
`
	s, err := config.Parse("t.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	const at = "t.yaml: document 1 (DestinationRule ws): "
	want := []string{
		at + "spec.trafficPolicy.loadBalancer.consistentHash: not applied by wsmesh",
		at + "spec.trafficPolicy.connectionPool.tcp.maxConnections: not applied by wsmesh",
		at + "spec.trafficPolicy.connectionPool.http.maxRetries: not applied by wsmesh",
		at + "spec.trafficPolicy.outlierDetection: not applied by wsmesh",
		at + "spec.trafficPolicy.tls: not applied by wsmesh",
		at + "spec.trafficPolicy.portLevelSettings[0].connectionPool.http.maxConcurrentStreams: not applied by wsmesh",
		at + "spec.trafficPolicy.portLevelSettings[1].loadBalancer.simple: PASSTHROUGH not applied by wsmesh: endpoints are picked round robin",
		at + "spec.subsets: not applied by wsmesh: no route selects a subset (VirtualService is not read), so their traffic policies are not either",
		at + "spec.exportTo: not applied by wsmesh: the rule applies to every namespace's sidecars",
	}
	if !slices.Equal(s.Warnings, want) {
		t.Errorf("warnings:\n got %q\nwant %q", s.Warnings, want)
	}
}
