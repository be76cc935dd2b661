package config_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/config"
)

func mustParse(t *testing.T, data string) *config.Snapshot {
	t.Helper()
	s, err := config.Parse("t.yaml", []byte(data))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

func endpointAddrs(c *config.Cluster) []string {
	var out []string
	for _, e := range c.Endpoints {
		out = append(out, e.Address)
	}
	return out
}

const routingYAML = `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
  - name: grpc-api
    port: 9090
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: other
spec:
  ports:
  - name: http
    port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: shop
spec:
  ports:
  - name: tcp-db
    port: 5432
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
  namespace: shop
spec:
  hosts: ["api.example.com", "*.example.com", "*.deep.example.com"]
  addresses: ["192.0.2.0/24"]
  ports:
  - number: 443
    name: tls
    protocol: TLS
  resolution: DNS
  endpoints:
  - address: edge.example.net
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: passthrough
  namespace: shop
spec:
  hosts: ["*.passthrough.test"]
  ports:
  - number: 8443
    name: tls
    targetPort: 443
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: dns-host
  namespace: shop
spec:
  hosts: ["dns.example.org"]
  ports:
  - number: 443
    name: https
    protocol: HTTPS
  resolution: DNS
`

func TestRouteAuthorityVariants(t *testing.T) {
	s := mustParse(t, routingYAML)
	cases := []struct {
		port      int
		authority string
		want      string // cluster name; "" means ErrNoRoute
	}{
		{80, "web.shop.svc.cluster.local", "outbound|80||web.shop.svc.cluster.local"},
		{80, "web.shop.svc.cluster.local:80", "outbound|80||web.shop.svc.cluster.local"},
		{80, "WEB.Shop.SVC.cluster.local.:80", "outbound|80||web.shop.svc.cluster.local"},
		{80, "web.shop", "outbound|80||web.shop.svc.cluster.local"},
		{80, "web.shop.svc", "outbound|80||web.shop.svc.cluster.local"},
		{80, "web.other", "outbound|80||web.other.svc.cluster.local"},
		{80, "web", ""}, // two namespaces have "web" on 80: ambiguous
		{9090, "web", "outbound|9090||web.shop.svc.cluster.local"}, // only one "web" has 9090
		{80, "web.shop:8080", ""},                                  // authority port differs from listener port
		{80, "unknown.shop", ""},                                   // no such host
		{5432, "db.shop", "outbound|5432||db.shop.svc.cluster.local"},
		{5432, "", "outbound|5432||db.shop.svc.cluster.local"}, // local mode: one service on the port
		{5432, "localhost:5432", "outbound|5432||db.shop.svc.cluster.local"},
		{5432, "127.0.0.1", "outbound|5432||db.shop.svc.cluster.local"},
		{5432, "[::1]:5432", "outbound|5432||db.shop.svc.cluster.local"},
		{80, "127.0.0.1:80", ""},                                      // two services on 80
		{80, "10.96.0.10", "outbound|80||web.shop.svc.cluster.local"}, // the clusterIP
		{443, "api.example.com", "outbound|443||api.example.com"},     // exact before wildcard
		{443, "www.example.com", "outbound|443||*.example.com"},
		{443, "a.deep.example.com", "outbound|443||*.deep.example.com"}, // longest wildcard
		{443, "Dns.Example.Org:443", "outbound|443||dns.example.org"},
		{443, "example.com", ""},
		{443, "192.0.2.7", "outbound|443||api.example.com"}, // ServiceEntry address
		{8443, "x.passthrough.test", "outbound|8443||*.passthrough.test"},
		{80, "web.shop:http", ""},
	}
	for _, tc := range cases {
		c, err := s.Route(tc.port, tc.authority)
		if tc.want == "" {
			if !errors.Is(err, config.ErrNoRoute) {
				t.Errorf("Route(%d, %q) = %v, %v; want ErrNoRoute", tc.port, tc.authority, c, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Route(%d, %q): %v", tc.port, tc.authority, err)
			continue
		}
		if c.Name != tc.want {
			t.Errorf("Route(%d, %q) = %s, want %s", tc.port, tc.authority, c.Name, tc.want)
		}
	}

	c, _ := s.Route(443, "www.example.com")
	if got := endpointAddrs(c); !slices.Equal(got, []string{"edge.example.net:443"}) || c.Protocol != config.ProtocolTLS {
		t.Errorf("wildcard DNS endpoints %v %s", got, c.Protocol)
	}
	c, _ = s.Route(443, "dns.example.org")
	if got := endpointAddrs(c); !slices.Equal(got, []string{"dns.example.org:443"}) {
		t.Errorf("DNS host endpoints %v", got)
	}
	c, _ = s.Route(8443, "x.passthrough.test:8443")
	if got := endpointAddrs(c); !slices.Equal(got, []string{"x.passthrough.test:443"}) {
		t.Errorf("passthrough endpoints %v", got)
	}
	c, _ = s.Route(9090, "web.shop")
	if c.Protocol != config.ProtocolGRPC || c.PortName != "grpc-api" {
		t.Errorf("protocol %s", c.Protocol)
	}
	_, err := s.Route(80, "web")
	if err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("ambiguity error %v", err)
	}
}

func TestRouteFromWorkload(t *testing.T) {
	s := mustParse(t, routingYAML+`---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client
  namespace: shop
spec:
  address: 127.0.0.1
  labels:
    app: client
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: client
  namespace: shop
spec:
  workloadSelector:
    labels:
      app: client
  egress:
  - port:
      number: 80
    hosts: ["./*"]
  - hosts: ["*/*"]
`)
	w, err := s.Workload("client")
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.RouteFrom(w, 80, "web")
	if err != nil || c.Namespace != "shop" {
		t.Fatalf("bare name from shop: %v %v", c, err)
	}
	// Egress hosts "./*" on port 80 hide other namespaces.
	if _, err := s.RouteFrom(w, 80, "web.other"); !errors.Is(err, config.ErrNoRoute) {
		t.Fatalf("web.other must be hidden by egress hosts: %v", err)
	}
	// Port 443 falls under the egress without port ("*/*").
	if _, err := s.RouteFrom(w, 443, "api.example.com"); err != nil {
		t.Fatal(err)
	}
	// Local-mode convenience sees only the visible service on 80.
	if c, err := s.RouteFrom(w, 80, "127.0.0.1:80"); err != nil || c.Namespace != "shop" {
		t.Fatalf("local mode: %v %v", c, err)
	}
}

func TestClusterForAddress(t *testing.T) {
	s := mustParse(t, routingYAML)
	c, err := s.ClusterForAddress(netip.MustParseAddr("10.96.0.10"), 9090)
	if err != nil || c.Name != "outbound|9090||web.shop.svc.cluster.local" {
		t.Fatalf("%v %v", c, err)
	}
	if c, err := s.ClusterForAddress(netip.MustParseAddr("192.0.2.200"), 443); err != nil || c.Kind != "ServiceEntry" {
		t.Fatalf("%v %v", c, err)
	}
	if _, err := s.ClusterForAddress(netip.MustParseAddr("10.96.0.10"), 81); !errors.Is(err, config.ErrNoRoute) {
		t.Fatalf("want ErrNoRoute, got %v", err)
	}
	if c, err := s.ClusterForAddress(netip.MustParseAddr("::ffff:10.96.0.10"), 80); err != nil || c.Service != "web" {
		t.Fatalf("v4-mapped: %v %v", c, err)
	}
}

const policyYAML = `apiVersion: v1
kind: Service
metadata:
  name: ws
spec:
  ports:
  - name: http-ws
    port: 8080
  - name: http-admin
    port: 9090
  - name: tcp-raw
    port: 7000
  - name: http-lb
    port: 7100
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: ws
spec:
  host: ws
  trafficPolicy:
    loadBalancer:
      simple: LEAST_CONN
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 500ms
        tcpKeepalive:
          time: 7200s
          interval: 75s
      http:
        h2UpgradePolicy: UPGRADE
        maxConcurrentStreams: 50
        maxRequestsPerConnection: 10
        http1MaxPendingRequests: 5
        http2MaxRequests: 1000
        idleTimeout: 30s
    portLevelSettings:
    - port:
        number: 9090
      connectionPool:
        http:
          h2UpgradePolicy: DO_NOT_UPGRADE
          useClientProtocol: true
    - port:
        number: 7100
      loadBalancer:
        simple: RANDOM
  subsets:
  - name: v1
    labels:
      version: v1
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
`

func TestPortLevelSettingsOverride(t *testing.T) {
	s := mustParse(t, policyYAML)
	c, err := s.Route(8080, "ws")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Policy
	want := config.TrafficPolicy{
		H2Upgrade: true, ConnectTimeout: 500 * time.Millisecond, MaxConnections: 100,
		MaxConcurrentStreams: 50, MaxRequestsPerConnection: 10, IdleTimeout: 30 * time.Second,
		LoadBalancer: "LEAST_REQUEST", H2UpgradeSource: "DestinationRule default/ws",
		MaxPendingRequests: 5, MaxRequests: 1000,
		TCPKeepalive:    &config.TCPKeepalive{Time: 2 * time.Hour, Interval: 75 * time.Second},
		DestinationRule: "default/ws",
	}
	if *p.TCPKeepalive != *want.TCPKeepalive {
		t.Fatalf("keepalive %+v", p.TCPKeepalive)
	}
	p.TCPKeepalive, want.TCPKeepalive = nil, nil
	if p != want {
		t.Fatalf("8080 policy\n got %+v\nwant %+v", p, want)
	}

	// Port 9090: the port-level connectionPool replaces the whole
	// connectionPool (Istio's merge), so tcp settings fall back to defaults.
	c, _ = s.Route(9090, "ws")
	p = c.Policy
	if p.H2Upgrade || !p.UseClientProtocol || p.MaxConnections != 0 || p.ConnectTimeout != 10*time.Second ||
		p.LoadBalancer != "LEAST_REQUEST" || p.H2UpgradeSource != "DestinationRule default/ws portLevelSettings 9090" {
		t.Fatalf("9090 policy %+v", p)
	}
	// Port 7100: only the load balancer is overridden.
	c, _ = s.Route(7100, "ws")
	if c.Policy.LoadBalancer != "RANDOM" || !c.Policy.H2Upgrade || c.Policy.MaxConnections != 100 {
		t.Fatalf("7100 policy %+v", c.Policy)
	}
	// An explicit UPGRADE applies even to a non-HTTP port, as in Istio.
	c, _ = s.Route(7000, "ws")
	if !c.Policy.H2Upgrade || c.Protocol != config.ProtocolTCP {
		t.Fatalf("7000 policy %+v", c.Policy)
	}
}

const meshYAML = `apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    h2UpgradePolicy: UPGRADE
    connectTimeout: 3s
    accessLogFile: /dev/stdout
    defaultConfig:
      discoveryAddress: istiod.istio-system.svc:15012
      proxyMetadata: {}
  meshNetworks: 'networks: {}'
---
apiVersion: v1
kind: Service
metadata:
  name: svc
spec:
  ports:
  - name: http
    port: 80
  - name: tcp
    port: 81
  - name: unnamed-proto
    port: 82
  - name: http2
    port: 83
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: svc
spec:
  host: svc.default.svc.cluster.local
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 83
      connectionPool:
        http:
          h2UpgradePolicy: DEFAULT
`

func TestMeshDefault(t *testing.T) {
	s := mustParse(t, meshYAML)
	if len(s.Warnings) != 0 {
		t.Fatalf("warnings %q", s.Warnings)
	}
	m := s.Mesh()
	if m.H2UpgradePolicy != "UPGRADE" || m.ConnectTimeout != 3*time.Second || m.RootNamespace != "istio-system" || m.Source != "ConfigMap istio-system/istio" {
		t.Fatalf("mesh %+v", m)
	}
	for _, tc := range []struct {
		port    int
		upgrade bool
		source  string
	}{
		{80, true, "mesh default"},
		{81, false, "mesh default (not applied: port protocol TCP is not HTTP)"},
		{82, false, "mesh default (not applied: port protocol auto is not HTTP)"},
		{83, true, "mesh default"}, // DEFAULT in the rule resolves to the mesh
	} {
		c, err := s.Route(tc.port, "svc")
		if err != nil {
			t.Fatal(err)
		}
		if c.Policy.H2Upgrade != tc.upgrade || c.Policy.H2UpgradeSource != tc.source || c.Policy.ConnectTimeout != 3*time.Second {
			t.Errorf("port %d: %+v", tc.port, c.Policy)
		}
	}

	// Without the ConfigMap, Istio's defaults apply: DO_NOT_UPGRADE, 10s.
	s = mustParse(t, strings.SplitN(meshYAML, "---\n", 2)[1])
	if m := s.Mesh(); m.H2UpgradePolicy != "DO_NOT_UPGRADE" || m.ConnectTimeout != 10*time.Second || m.Source != "Istio defaults" {
		t.Fatalf("defaults %+v", m)
	}
	c, _ := s.Route(80, "svc")
	if c.Policy.H2Upgrade || c.Policy.H2UpgradeSource != "mesh default" {
		t.Fatalf("policy %+v", c.Policy)
	}
}

func TestMeshConfigTypoWarns(t *testing.T) {
	s := mustParse(t, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: 'h2UpgradePolcy: UPGRADE'\n")
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], `data.mesh: h2UpgradePolcy: unknown field, ignored (did you mean "h2UpgradePolicy"?)`) {
		t.Fatalf("warnings %q", s.Warnings)
	}
}

const envoyFilterTemplate = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: NAME
  namespace: NS
spec:
SELECTOR  configPatches:
  - applyTo: NETWORK_FILTER
    match:
      context: CONTEXT
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
            allow_connect: VALUE
`

func envoyFilter(name, ns, selector, context, value string) string {
	r := strings.NewReplacer("NAME", name, "NS", ns, "CONTEXT", context, "VALUE", value, "SELECTOR", selector)
	return r.Replace(envoyFilterTemplate)
}

const serverSelector = "  workloadSelector:\n    labels:\n      app: websockets-server\n"

func TestAllowConnectSelector(t *testing.T) {
	workloads := `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: server
  namespace: default
spec:
  address: 10.0.0.1
  labels:
    app: websockets-server
    version: v1
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client
  namespace: default
spec:
  address: 10.0.0.2
  labels:
    app: websockets-client
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: server
  namespace: other
spec:
  address: 10.0.0.3
  labels:
    app: websockets-server
`
	tests := []struct {
		name    string
		filters []string
		want    map[string]string // workload -> "true:EnvoyFilter ns/name" or "false:"
	}{
		{
			name:    "selector in workload namespace",
			filters: []string{envoyFilter("h2", "default", serverSelector, "SIDECAR_INBOUND", "true")},
			want: map[string]string{
				"default/server": "true:EnvoyFilter default/h2",
				"default/client": "false:", // labels do not match
				"other/server":   "false:", // other namespace
			},
		},
		{
			name:    "context ANY and no selector applies to the namespace",
			filters: []string{envoyFilter("all", "default", "", "ANY", "true")},
			want: map[string]string{
				"default/server": "true:EnvoyFilter default/all",
				"default/client": "true:EnvoyFilter default/all",
				"other/server":   "false:",
			},
		},
		{
			name:    "root namespace applies everywhere, selector still matches labels",
			filters: []string{envoyFilter("root", "istio-system", serverSelector, "SIDECAR_INBOUND", "true")},
			want: map[string]string{
				"default/server": "true:EnvoyFilter istio-system/root",
				"default/client": "false:",
				"other/server":   "true:EnvoyFilter istio-system/root",
			},
		},
		{
			name: "workload namespace overrides root",
			filters: []string{
				envoyFilter("disable", "default", serverSelector, "SIDECAR_INBOUND", "false"),
				envoyFilter("root", "istio-system", "", "SIDECAR_INBOUND", "true"),
			},
			want: map[string]string{
				"default/server": "false:EnvoyFilter default/disable",
				"default/client": "true:EnvoyFilter istio-system/root",
				"other/server":   "true:EnvoyFilter istio-system/root",
			},
		},
		{
			name:    "outbound context is not applied",
			filters: []string{envoyFilter("out", "default", serverSelector, "SIDECAR_OUTBOUND", "true")},
			want:    map[string]string{"default/server": "false:"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := mustParse(t, workloads+"---\n"+strings.Join(tc.filters, "---\n"))
			for name, want := range tc.want {
				w, err := s.Workload(name)
				if err != nil {
					t.Fatal(err)
				}
				ok, src := s.AllowConnect(w)
				got := map[bool]string{true: "true", false: "false"}[ok] + ":" + src
				if got != want {
					t.Errorf("%s: got %s, want %s", name, got, want)
				}
			}
		})
	}
}

func TestEnvoyFilterPatchWarnings(t *testing.T) {
	data := envoyFilter("h2", "default", serverSelector, "SIDECAR_INBOUND", "true")
	data = strings.Replace(data, "          http2_protocol_options:\n            allow_connect: true\n",
		"          stream_idle_timeout: 0s\n          http2_protocol_options:\n            allow_connect: true\n            max_concurrent_streams: 10\n", 1)
	data = strings.Replace(data, "      listener:\n", "      proxy:\n        proxyVersion: '^2\\.'\n      listener:\n", 1)
	s := mustParse(t, data)
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], `spec.configPatches[0]: not applied by wsmesh: match.proxy.proxyVersion "^2\\." does not match proxy version`) {
		t.Fatalf("warnings %q", s.Warnings)
	}
	data = strings.Replace(data, "'^2\\.'", "'^1\\.'", 1)
	s = mustParse(t, data)
	want := []string{
		"spec.configPatches[0].patch.value.typed_config.stream_idle_timeout: not applied by wsmesh",
		"spec.configPatches[0].patch.value.typed_config.http2_protocol_options.max_concurrent_streams: not applied by wsmesh",
	}
	if len(s.Warnings) != 2 {
		t.Fatalf("warnings %q", s.Warnings)
	}
	for i, w := range want {
		if !strings.Contains(s.Warnings[i], w) {
			t.Errorf("warning %q, want %q", s.Warnings[i], w)
		}
	}
}

func TestServiceEndpoints(t *testing.T) {
	data := `apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: prod
spec:
  selector:
    app: api
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - name: grpc
    port: 90
    targetPort: grpc-port
  - name: plain
    port: 70
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-abc
  namespace: prod
  labels:
    kubernetes.io/service-name: api
addressType: IPv4
endpoints:
- addresses: ["10.1.0.1"]
- addresses: ["10.1.0.2"]
  conditions:
    ready: true
- addresses: ["10.1.0.3"]
  conditions:
    ready: false
ports:
- name: http
  port: 8080
- name: grpc
  port: 9090
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: vm1
  namespace: prod
spec:
  address: 192.168.1.5
  labels:
    app: api
    zone: a
  ports:
    http: 18080
    grpc-port: 19090
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: vm2
  namespace: prod
spec:
  address: 192.168.1.6
  labels:
    app: api
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: vm3
  namespace: staging
spec:
  address: 192.168.1.7
  labels:
    app: api
`
	s := mustParse(t, data)
	check := func(port int, want ...string) {
		t.Helper()
		c, err := s.Route(port, "api.prod")
		if err != nil {
			t.Fatal(err)
		}
		if got := endpointAddrs(c); !slices.Equal(got, want) {
			t.Errorf("port %d endpoints %v, want %v", port, got, want)
		}
	}
	// Slice endpoints (ready or unset, by port name), then WorkloadEntries:
	// ports[servicePortName], else numeric targetPort.
	check(80, "10.1.0.1:8080", "10.1.0.2:8080", "192.168.1.5:18080", "192.168.1.6:8080")
	// Named targetPort: vm1 maps it; vm2 has no such port (warning).
	check(90, "10.1.0.1:9090", "10.1.0.2:9090", "192.168.1.5:19090")
	// No targetPort: the service port.
	check(70, "192.168.1.5:70", "192.168.1.6:70")
	c, _ := s.Route(80, "api.prod")
	if c.Endpoints[2].Labels["zone"] != "a" {
		t.Errorf("labels %v", c.Endpoints[2].Labels)
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], `(WorkloadEntry vm2): spec.ports: selected by Service api port 90 with targetPort "grpc-port"`) {
		t.Errorf("warnings %q", s.Warnings)
	}
}

func TestWorkloadLookup(t *testing.T) {
	data := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  namespace: a
spec:
  template:
    metadata:
      labels:
        app: app
    spec:
      serviceAccountName: app-sa
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: app
  namespace: a
spec:
  address: 127.0.0.1
  labels:
    app: app
---
apiVersion: v1
kind: Pod
metadata:
  name: app
  namespace: b
  labels:
    app: app
spec:
  containers: []
status:
  podIP: 10.0.0.9
  phase: Running
---
apiVersion: v1
kind: Pod
metadata:
  name: solo
  namespace: b
`
	s := mustParse(t, data)
	w, err := s.Workload("a/app")
	if err != nil || w.Kind != "WorkloadEntry" || w.Address != "127.0.0.1" {
		t.Fatalf("a/app: %+v %v", w, err)
	}
	w, err = s.Workload("b/app")
	if err != nil || w.Kind != "Pod" || w.Address != "10.0.0.9" {
		t.Fatalf("b/app: %+v %v", w, err)
	}
	if w, err := s.Workload("solo"); err != nil || w.Namespace != "b" {
		t.Fatalf("solo: %+v %v", w, err)
	}
	if _, err := s.Workload("app"); err == nil || !strings.Contains(err.Error(), "ambiguous: a/app (WorkloadEntry), b/app (Pod)") {
		t.Fatalf("ambiguous: %v", err)
	}
	_, err = s.Workload("nope")
	if err == nil || !strings.Contains(err.Error(), `workload "nope" not found; known workloads: a/app (Deployment), a/app (WorkloadEntry), b/app (Pod), b/solo (Pod)`) {
		t.Fatalf("not found: %v", err)
	}
	// The returned workload is a copy.
	w.Name = "changed"
	if w2, _ := s.Workload("b/app"); w2.Name != "app" {
		t.Fatal("Workload returned shared state")
	}
}

func TestListenersSelection(t *testing.T) {
	data := `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: specific
  namespace: app
spec:
  workloadSelector:
    labels:
      role: server
  ingress:
  - port:
      number: 15006
      protocol: HTTP
    defaultEndpoint: 0.0.0.0:8080
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: app
spec:
  egress:
  - port:
      number: 9000
      protocol: TCP
      name: tcp
    hosts: ["*/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: mesh
  namespace: istio-system
spec:
  ingress:
  - port:
      number: 15006
    bind: 127.0.0.2
    defaultEndpoint: unix:///run/app.sock
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: srv
  namespace: app
spec:
  address: 10.0.0.5
  labels:
    role: server
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: cli
  namespace: app
spec:
  address: 10.0.0.6
  labels:
    role: client
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: far
  namespace: elsewhere
spec:
  address: 10.0.0.7
`
	s := mustParse(t, data)
	srv, _ := s.Workload("srv")
	out, in := s.Listeners(srv)
	if len(out) != 0 || len(in) != 1 || in[0].Bind != "10.0.0.5" || in[0].Sidecar != "app/specific" || in[0].Protocol != config.ProtocolHTTP {
		t.Fatalf("srv: %+v %+v", out, in)
	}
	if app, _, ok := s.InboundTarget(srv, 15006); !ok || app != "10.0.0.5:8080" {
		t.Fatalf("srv target %q", app)
	}
	if _, _, ok := s.InboundTarget(srv, 15007); ok {
		t.Fatal("no listener on 15007")
	}
	cli, _ := s.Workload("cli")
	out, in = s.Listeners(cli)
	if len(in) != 0 || len(out) != 1 || out[0].Bind != "127.0.0.1" || out[0].Port != 9000 || out[0].Name != "127.0.0.1_9000" || out[0].Protocol != config.ProtocolTCP || out[0].Sidecar != "app/default" {
		t.Fatalf("cli: %+v %+v", out, in)
	}
	far, _ := s.Workload("far")
	_, in = s.Listeners(far)
	if len(in) != 1 || in[0].Sidecar != "istio-system/mesh" || in[0].Protocol != config.ProtocolAuto {
		t.Fatalf("far: %+v", in)
	}
	if app, _, ok := s.InboundTarget(far, 15006); !ok || app != "unix:///run/app.sock" {
		t.Fatalf("far target %q", app)
	}
}

func TestProtocolSelection(t *testing.T) {
	data := `apiVersion: v1
kind: Service
metadata:
  name: p
spec:
  ports:
  - {name: http, port: 1}
  - {name: http2-x, port: 2}
  - {name: grpc-web, port: 3}
  - {name: grpc-web-x, port: 4}
  - {name: tcp-db, port: 5}
  - {name: web, port: 6}
  - {name: web2, port: 7, appProtocol: HTTP2}
  - {name: http-x, port: 8, appProtocol: kubernetes.io/h2c}
  - {name: mongo, port: 9}
  - {name: dns, port: 10, protocol: UDP}
  - {name: https-x, port: 11}
  - {name: tls, port: 12}
  - {name: redis-a, port: 13}
  - {name: mysql, port: 14}
  - {name: grpc, port: 15}
  - {name: odd, port: 16, appProtocol: custom}
`
	s := mustParse(t, data)
	want := map[int]config.Protocol{
		1: config.ProtocolHTTP, 2: config.ProtocolHTTP2, 3: config.ProtocolGRPCWeb, 4: config.ProtocolGRPCWeb,
		5: config.ProtocolTCP, 6: config.ProtocolAuto, 7: config.ProtocolHTTP2, 8: config.ProtocolHTTP2,
		9: config.ProtocolMongo, 11: config.ProtocolHTTPS, 12: config.ProtocolTLS, 13: config.ProtocolRedis,
		14: config.ProtocolMySQL, 15: config.ProtocolGRPC, 16: config.ProtocolAuto,
	}
	for port, p := range want {
		c, err := s.Route(port, "p")
		if err != nil {
			t.Fatalf("port %d: %v", port, err)
		}
		if c.Protocol != p {
			t.Errorf("port %d: %q, want %q", port, c.Protocol, p)
		}
	}
	if _, err := s.Route(10, "p"); err == nil {
		t.Error("UDP port must not be routed")
	}
}

func TestTCPKeepaliveAsSocketOptions(t *testing.T) {
	var none *config.TCPKeepalive
	if got := none.KeepAliveConfig(); got != (net.KeepAliveConfig{Enable: true}) {
		t.Errorf("no tcpKeepalive: %+v, want Go's default keepalive", got)
	}
	got := (&config.TCPKeepalive{Time: 2 * time.Hour, Interval: 75 * time.Second}).KeepAliveConfig()
	want := net.KeepAliveConfig{Enable: true, Idle: 2 * time.Hour, Interval: 75 * time.Second, Count: -1}
	if got != want {
		t.Errorf("time and interval set: %+v, want %+v (probes left to the OS)", got, want)
	}
	got = (&config.TCPKeepalive{Probes: 3}).KeepAliveConfig()
	want = net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: 3}
	if got != want {
		t.Errorf("probes set: %+v, want %+v", got, want)
	}
}

// TestTCPIdleTimeoutOverHTTPs checks that tcp.idleTimeout sets the idle
// timeout of a destination's TCP relays, and that http.idleTimeout, which
// Istio used for them before tcp.idleTimeout, does when it is alone.
func TestTCPIdleTimeoutOverHTTPs(t *testing.T) {
	const rule = `apiVersion: v1
kind: Service
metadata: {name: raw}
spec:
  ports: [{name: tcp-raw, port: 7000}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: raw}
spec:
  host: raw
  trafficPolicy:
    connectionPool:
%s`
	for _, c := range []struct {
		pool string
		want time.Duration
	}{
		{"      http: {idleTimeout: 1m}\n", time.Minute},
		{"      tcp: {idleTimeout: 5m}\n      http: {idleTimeout: 1m}\n", 5 * time.Minute},
		{"      tcp: {connectTimeout: 1s}\n", 0},
	} {
		s := mustParse(t, fmt.Sprintf(rule, c.pool))
		cl, err := s.Route(7000, "raw")
		if err != nil {
			t.Fatal(err)
		}
		if got := cl.Policy.IdleTimeout; got != c.want {
			t.Errorf("connectionPool\n%s: idle timeout %v, want %v", c.pool, got, c.want)
		}
	}
}

// TestUseClientProtocolKeepsHTTP1 checks that useClientProtocol without an
// h2UpgradePolicy keeps HTTP/1.1 requests HTTP/1.1 where the mesh default
// upgrades, as Istio does.
func TestUseClientProtocolKeepsHTTP1(t *testing.T) {
	s := mustParse(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    h2UpgradePolicy: UPGRADE
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http-web, port: 8080}, {name: http-other, port: 9090}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    portLevelSettings:
    - port: {number: 8080}
      connectionPool:
        http: {useClientProtocol: true}
`)
	c, err := s.Route(8080, "web")
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.H2Upgrade || !strings.HasSuffix(c.Policy.H2UpgradeSource, "useClientProtocol") {
		t.Errorf("useClientProtocol: upgrade %v (%s), want no upgrade", c.Policy.H2Upgrade, c.Policy.H2UpgradeSource)
	}
	if c, err = s.Route(9090, "web"); err != nil || !c.Policy.H2Upgrade {
		t.Errorf("port without useClientProtocol: %+v %v, want the mesh default's upgrade", c, err)
	}
}
