package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Snapshot is one immutable, validated view of the configuration. All
// methods are safe for concurrent use. Values it returns (clusters,
// listeners, workloads) are shared and must not be modified.
type Snapshot struct {
	// Warnings lists problems that did not stop loading: unknown kinds
	// (skipped), unknown fields (ignored), EnvoyFilter patches wsmesh does
	// not apply. Each names file, document, resource and field.
	Warnings []string
	// Version is a hash of the loaded files' names and contents.
	Version string

	files          []string
	mesh           MeshConfig
	meshSet        bool
	services       []*service
	serviceEntries []*serviceEntry
	wentries       []*wentry
	slices         []*slice
	sidecars       []*sidecar
	rules          []*destRule // load order: the first rule for a host wins
	filters        []*envoyFilter
	workloads      []*Workload

	clusters []*Cluster // sorted by name
	routes   map[int][]*route
}

func newSnapshot() *Snapshot { return &Snapshot{routes: map[int][]*route{}} }

// MeshConfig is the part of Istio's MeshConfig that wsmesh reads from
// data.mesh of the ConfigMap istio-system/istio.
type MeshConfig struct {
	H2UpgradePolicy string        // DO_NOT_UPGRADE (Istio's default) or UPGRADE
	ConnectTimeout  time.Duration // connectTimeout: a cluster's connect timeout unless a DestinationRule sets one; 10s by default
	RootNamespace   string        // rootNamespace: where Sidecar and EnvoyFilter apply mesh-wide; istio-system by default
	Source          string        // "ConfigMap istio-system/istio" or "Istio defaults"
}

// Workload is the identity of the workload a sidecar serves.
type Workload struct {
	Name, Namespace string
	Labels          map[string]string
	Address         string // WorkloadEntry spec.address or Pod status.podIP; "" for a Deployment
	Kind            string // WorkloadEntry, Pod or Deployment
	ServiceAccount  string
}

// Listener is one explicit listener declared by a Sidecar resource.
type Listener struct {
	Name            string // Envoy style "<bind>_<port>", e.g. "127.0.0.1_8080"
	Bind            string
	Port            int
	Protocol        Protocol
	DefaultEndpoint string   // inbound only: where the local application listens, as written
	PortName        string   // port.name, may be empty
	Hosts           []string // outbound only: the egress hosts ("namespace/dnsName")
	CaptureMode     string   // as written: "", DEFAULT, IPTABLES or NONE
	Sidecar         string   // "namespace/name" of the Sidecar resource
}

// Cluster is a service and port as an upstream (Envoy's cluster).
type Cluster struct {
	Name      string // "outbound|8080||websockets-server.default.svc.cluster.local"
	Host      string // the FQDN, or the ServiceEntry host (may be a wildcard)
	Service   string // Service or ServiceEntry name
	Namespace string
	Kind      string // Service or ServiceEntry
	Port      int
	PortName  string
	Protocol  Protocol
	// Resolution is the ServiceEntry resolution (STATIC, DNS,
	// DNS_ROUND_ROBIN, NONE); empty for a Service.
	Resolution string
	// Endpoints lists ready endpoints as "ip:port" (or "host:port",
	// or "unix:///path").
	Endpoints []Endpoint
	// Policy is the effective traffic policy for this port.
	Policy TrafficPolicy
}

// Endpoint is one upstream address of a cluster.
type Endpoint struct {
	Address string
	Labels  map[string]string
}

// TrafficPolicy is a DestinationRule's policy resolved for one port:
// portLevelSettings replace the rule's connectionPool and loadBalancer
// as a whole (as Istio merges them), and defaults are filled in.
type TrafficPolicy struct {
	// H2Upgrade: upgrade HTTP/1.1 requests (including WebSocket) to
	// HTTP/2 towards the upstream. DEFAULT resolves to the mesh
	// h2UpgradePolicy, which Istio applies to HTTP ports only.
	H2Upgrade         bool
	UseClientProtocol bool
	// ConnectTimeout: tcp.connectTimeout, else the mesh connectTimeout (10s).
	ConnectTimeout time.Duration
	// MaxConnections: tcp.maxConnections; 0 means unlimited.
	MaxConnections int
	// MaxConcurrentStreams: http.maxConcurrentStreams per HTTP/2
	// connection; 0 means the HTTP/2 default.
	MaxConcurrentStreams int
	// MaxRequestsPerConnection: 0 means unlimited.
	MaxRequestsPerConnection int
	// IdleTimeout ends the destination's TCP relays after that long without
	// a byte either way: tcp.idleTimeout, else http.idleTimeout (which
	// Istio used for TCP before tcp.idleTimeout); 0 means not set.
	IdleTimeout time.Duration
	// LoadBalancer: loadBalancer.simple, ROUND_ROBIN when unset
	// (LEAST_CONN is read as LEAST_REQUEST).
	LoadBalancer string
	// H2UpgradeSource says where H2Upgrade came from, for logs:
	// "DestinationRule default/websockets-server",
	// "DestinationRule default/x portLevelSettings 8080" or "mesh default".
	H2UpgradeSource string

	MaxPendingRequests int           // http.http1MaxPendingRequests; 0 means unlimited
	MaxRequests        int           // http.http2MaxRequests; 0 means unlimited
	TCPKeepalive       *TCPKeepalive // tcp.tcpKeepalive; nil when not set
	DestinationRule    string        // "namespace/name" of the rule applied, or ""
}

// TCPKeepalive is tcp.tcpKeepalive; zero fields use the OS defaults.
type TCPKeepalive struct {
	Probes   int
	Time     time.Duration
	Interval time.Duration
}

// KeepAliveConfig is k as the socket options of a connection dialed to the
// destination: probes with k's settings (a zero field leaves the OS
// default, as Envoy does). For a nil k it is Go's default keepalive
// (probes after 15 s idle, every 15 s, 9 of them), which Envoy does not
// send without tcpKeepalive: wsmesh keeps it, so that a relay to a host
// that vanished without a FIN ends.
func (k *TCPKeepalive) KeepAliveConfig() net.KeepAliveConfig {
	if k == nil {
		return net.KeepAliveConfig{Enable: true}
	}
	c := net.KeepAliveConfig{Enable: true, Idle: k.Time, Interval: k.Interval, Count: k.Probes}
	if c.Idle == 0 {
		c.Idle = -1
	}
	if c.Interval == 0 {
		c.Interval = -1
	}
	if c.Count == 0 {
		c.Count = -1
	}
	return c
}

// route is one cluster as a routing candidate on its port.
type route struct {
	cluster    *Cluster
	ns         string
	names      []string          // exact host names, lowercase
	short      string            // a Service's bare name: matches from its own namespace
	wildcard   string            // a ServiceEntry wildcard host ("*" or "*.suffix")
	egressHost string            // the host Sidecar egress hosts are matched against
	selector   map[string]string // a Service's selector
	vips       []netip.Prefix
}

// Mesh returns the effective mesh configuration.
func (s *Snapshot) Mesh() MeshConfig { return s.mesh }

// Files returns the files the snapshot was loaded from, in order.
func (s *Snapshot) Files() []string { return slices.Clone(s.files) }

// Clusters returns every cluster, sorted by name.
func (s *Snapshot) Clusters() []*Cluster { return slices.Clone(s.clusters) }

// ---- building ----

func (s *Snapshot) applyMeshDefaults() {
	if s.mesh.H2UpgradePolicy == "" {
		s.mesh.H2UpgradePolicy = "DO_NOT_UPGRADE"
	}
	if s.mesh.ConnectTimeout == 0 {
		s.mesh.ConnectTimeout = 10 * time.Second
	}
	if s.mesh.RootNamespace == "" {
		s.mesh.RootNamespace = IstioRootNamespace
	}
	if s.mesh.Source == "" {
		s.mesh.Source = "Istio defaults"
	}
}

func nsName(ns, name string) string { return ns + "/" + name }

// crossValidate checks what involves more than one resource.
func (b *builder) crossValidate() {
	s := b.s
	s.applyMeshDefaults()
	nsWide := map[string]*sidecar{}
	for _, sc := range s.sidecars {
		if sc.selector != nil {
			continue
		}
		if first, dup := nsWide[sc.ns]; dup {
			b.errf(sc.loc, "spec.workloadSelector", "namespace %s already has a Sidecar without workloadSelector (%s at %s); at most one is allowed", sc.ns, first.name, first.loc)
			continue
		}
		nsWide[sc.ns] = sc
	}
	svcByName := map[string]*service{}
	for _, svc := range s.services {
		svcByName[nsName(svc.ns, svc.name)] = svc
	}
	for _, sl := range s.slices {
		if sl.service != "" && svcByName[nsName(sl.ns, sl.service)] == nil {
			b.warnf(sl.loc, keyPath("metadata.labels", serviceNameLabel), "no Service %s/%s is defined; these endpoints are not used", sl.ns, sl.service)
		}
	}
	firstRule := map[string]*destRule{}
	for _, r := range s.rules {
		key := nsName(r.ns, r.host)
		if first, dup := firstRule[key]; dup {
			b.warnf(r.loc, "spec.host", "DestinationRule %s (at %s) already applies to host %s in namespace %s; this one is ignored", first.name, first.loc, r.host, r.ns)
			continue
		}
		firstRule[key] = r
		// Istio expands only a bare name; "name.ns" or "name.ns.svc" stays
		// as written and then matches nothing. Warn about that trap.
		for _, svc := range s.services {
			if r.host == svc.name+"."+svc.ns || r.host == svc.name+"."+svc.ns+".svc" {
				b.warnf(r.loc, "spec.host", "%q is not expanded and matches no host (Istio expands only a bare name); write %q or %q", r.host, svc.name, serviceFQDN(svc.name, svc.ns))
			}
		}
	}
}

func serviceFQDN(name, ns string) string { return name + "." + ns + ".svc." + clusterDomain }

func joinHostPort(addr string, port int) string {
	if strings.HasPrefix(addr, "unix://") {
		return addr
	}
	return net.JoinHostPort(addr, strconv.Itoa(port))
}

// build derives clusters and routes. It runs only on a valid snapshot.
func (s *Snapshot) build(b *builder) {
	byNSName := func(ns1, n1, ns2, n2 string) int {
		if c := strings.Compare(ns1, ns2); c != 0 {
			return c
		}
		return strings.Compare(n1, n2)
	}
	slices.SortStableFunc(s.services, func(a, b *service) int { return byNSName(a.ns, a.name, b.ns, b.name) })
	slices.SortStableFunc(s.serviceEntries, func(a, b *serviceEntry) int { return byNSName(a.ns, a.name, b.ns, b.name) })
	slices.SortStableFunc(s.sidecars, func(a, b *sidecar) int { return byNSName(a.ns, a.name, b.ns, b.name) })
	slices.SortStableFunc(s.workloads, func(a, b *Workload) int { return byNSName(a.Namespace, a.Name, b.Namespace, b.Name) })

	for _, svc := range s.services {
		fqdn := serviceFQDN(svc.name, svc.ns)
		var vips []netip.Prefix
		for _, ip := range svc.clusterIPs {
			vips = append(vips, netip.PrefixFrom(ip, ip.BitLen()))
		}
		for _, p := range svc.ports {
			if p.transport != "TCP" {
				continue // wsmesh proxies TCP only
			}
			c := &Cluster{
				Name: fmt.Sprintf("outbound|%d||%s", p.port, fqdn), Host: fqdn,
				Service: svc.name, Namespace: svc.ns, Kind: "Service",
				Port: p.port, PortName: p.name, Protocol: p.protocol,
				Endpoints: s.serviceEndpoints(b, svc, p),
				Policy:    s.policyFor(fqdn, svc.ns, p.port, p.protocol),
			}
			s.clusters = append(s.clusters, c)
			s.routes[p.port] = append(s.routes[p.port], &route{
				cluster: c, ns: svc.ns, short: svc.name, egressHost: fqdn, selector: svc.selector, vips: vips,
				names: []string{svc.name + "." + svc.ns, svc.name + "." + svc.ns + ".svc", fqdn},
			})
		}
	}
	for _, se := range s.serviceEntries {
		for _, h := range se.hosts {
			for _, p := range se.ports {
				c := &Cluster{
					Name: fmt.Sprintf("outbound|%d||%s", p.Number, h), Host: h,
					Service: se.name, Namespace: se.ns, Kind: "ServiceEntry", Resolution: se.resolution,
					Port: p.Number, PortName: p.Name, Protocol: p.protocol,
					Endpoints: s.serviceEntryEndpoints(se, h, p),
					Policy:    s.policyFor(h, se.ns, p.Number, p.protocol),
				}
				r := &route{cluster: c, ns: se.ns, egressHost: h, vips: se.addresses}
				if strings.HasPrefix(h, "*") {
					r.wildcard = h
				} else {
					r.names = []string{h}
				}
				s.clusters = append(s.clusters, c)
				s.routes[p.Number] = append(s.routes[p.Number], r)
			}
		}
	}
	slices.SortStableFunc(s.clusters, func(a, b *Cluster) int { return strings.Compare(a.Name, b.Name) })
}

// serviceEndpoints collects a Service port's ready endpoints from
// EndpointSlices (by port name) and from WorkloadEntries its selector
// matches in its namespace.
func (s *Snapshot) serviceEndpoints(b *builder, svc *service, p svcPort) []Endpoint {
	var eps []Endpoint
	seen := map[string]bool{}
	add := func(addr string, port int, labels map[string]string) {
		a := joinHostPort(addr, port)
		if !seen[a] {
			seen[a] = true
			eps = append(eps, Endpoint{Address: a, Labels: labels})
		}
	}
	for _, sl := range s.slices {
		if sl.ns != svc.ns || sl.service != svc.name {
			continue
		}
		for _, sp := range sl.ports {
			name := ""
			if sp.Name != nil {
				name = *sp.Name
			}
			if name != p.name || sp.Port == nil {
				continue
			}
			for _, ep := range sl.endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				for _, a := range ep.Addresses {
					add(a, *sp.Port, nil)
				}
			}
		}
	}
	for _, we := range s.wentries {
		if we.ns != svc.ns || !selectorMatches(svc.selector, we.spec.Labels) {
			continue
		}
		port, ok := workloadEntryPort(we.spec.Ports, p)
		if !ok {
			b.warnf(we.loc, "spec.ports", "selected by Service %s port %d with targetPort %q, but has no port named %q; not an endpoint of that port", svc.name, p.port, p.target.StrVal, p.target.StrVal)
			continue
		}
		add(we.spec.Address, port, we.spec.Labels)
	}
	return eps
}

// workloadEntryPort is the port of a WorkloadEntry for a Service port:
// ports[servicePortName], else a numeric targetPort, else
// ports[targetPortName], else the service port itself.
func workloadEntryPort(ports map[string]int, p svcPort) (int, bool) {
	if n, ok := ports[p.name]; ok && p.name != "" {
		return n, true
	}
	if !p.hasTarget {
		return p.port, true
	}
	if !p.target.IsString {
		return p.target.IntVal, true
	}
	n, ok := ports[p.target.StrVal]
	return n, ok
}

func (s *Snapshot) serviceEntryEndpoints(se *serviceEntry, host string, p sePort) []Endpoint {
	target := p.Number
	if p.TargetPort != 0 {
		target = p.TargetPort
	}
	var eps []Endpoint
	add := func(we workloadEntry) {
		port := target
		if n, ok := we.Ports[p.Name]; ok {
			port = n
		}
		eps = append(eps, Endpoint{Address: joinHostPort(we.Address, port), Labels: we.Labels})
	}
	for _, we := range se.endpoints {
		add(we)
	}
	if se.selector != nil {
		for _, we := range s.wentries {
			if we.ns == se.ns && selectorMatches(se.selector, we.spec.Labels) {
				add(we.spec)
			}
		}
	}
	if len(eps) == 0 && (se.resolution == "DNS" || se.resolution == "DNS_ROUND_ROBIN") && !strings.HasPrefix(host, "*") {
		eps = append(eps, Endpoint{Address: joinHostPort(host, target)})
	}
	return eps
}

// ruleFor finds the DestinationRule for a host: an exact host wins over
// wildcards, a longer wildcard over a shorter; then a rule in the
// service's namespace, then in the root namespace, then load order.
func (s *Snapshot) ruleFor(host, ns string) *destRule {
	var best *destRule
	bestScore := [2]int{-1, -1}
	for _, r := range s.rules {
		if !hostMatches(r.host, host) {
			continue
		}
		spec := len(r.host)
		if r.host == host {
			spec = 1 << 20
		}
		nsScore := 0
		switch r.ns {
		case ns:
			nsScore = 2
		case s.mesh.RootNamespace:
			nsScore = 1
		}
		score := [2]int{spec, nsScore}
		if score[0] > bestScore[0] || score[0] == bestScore[0] && score[1] > bestScore[1] {
			best, bestScore = r, score
		}
	}
	return best
}

func (s *Snapshot) policyFor(host, ns string, port int, proto Protocol) TrafficPolicy {
	tp := TrafficPolicy{ConnectTimeout: s.mesh.ConnectTimeout, LoadBalancer: "ROUND_ROBIN"}
	r := s.ruleFor(host, ns)
	var (
		cp     *connectionPool
		lb     *loadBalancerSettings
		source string
	)
	if r != nil && r.policy != nil {
		tp.DestinationRule = nsName(r.ns, r.name)
		source = "DestinationRule " + tp.DestinationRule
		cp, lb = r.policy.ConnectionPool, r.policy.LoadBalancer
		for _, pl := range r.policy.PortLevelSettings {
			if pl.Port == nil || pl.Port.Number != port {
				continue
			}
			if pl.ConnectionPool != nil {
				cp = pl.ConnectionPool
				source = fmt.Sprintf("DestinationRule %s portLevelSettings %d", tp.DestinationRule, port)
			}
			if pl.LoadBalancer != nil {
				lb = pl.LoadBalancer
			}
		}
	} else if r != nil {
		tp.DestinationRule = nsName(r.ns, r.name)
	}
	if lb != nil {
		switch lb.Simple {
		case "", "UNSPECIFIED":
		case "LEAST_CONN":
			tp.LoadBalancer = "LEAST_REQUEST"
		default:
			tp.LoadBalancer = lb.Simple
		}
	}
	upgradeSet := false
	if cp != nil {
		if t := cp.TCP; t != nil {
			if t.MaxConnections != nil {
				tp.MaxConnections = *t.MaxConnections
			}
			if t.ConnectTimeout != nil {
				tp.ConnectTimeout = time.Duration(*t.ConnectTimeout)
			}
			if k := t.TCPKeepalive; k != nil {
				tp.TCPKeepalive = &TCPKeepalive{}
				if k.Probes != nil {
					tp.TCPKeepalive.Probes = *k.Probes
				}
				if k.Time != nil {
					tp.TCPKeepalive.Time = time.Duration(*k.Time)
				}
				if k.Interval != nil {
					tp.TCPKeepalive.Interval = time.Duration(*k.Interval)
				}
			}
		}
		if h := cp.HTTP; h != nil {
			deref := func(p *int) int {
				if p == nil {
					return 0
				}
				return *p
			}
			tp.MaxPendingRequests = deref(h.HTTP1MaxPendingRequests)
			tp.MaxRequests = deref(h.HTTP2MaxRequests)
			tp.MaxRequestsPerConnection = deref(h.MaxRequestsPerConnection)
			tp.MaxConcurrentStreams = deref(h.MaxConcurrentStreams)
			if h.IdleTimeout != nil {
				tp.IdleTimeout = time.Duration(*h.IdleTimeout)
			}
			tp.UseClientProtocol = h.UseClientProtocol
			switch h.H2UpgradePolicy {
			case "UPGRADE":
				tp.H2Upgrade, upgradeSet = true, true
			case "DO_NOT_UPGRADE":
				tp.H2Upgrade, upgradeSet = false, true
			}
		}
		if t := cp.TCP; t != nil && t.IdleTimeout != nil {
			tp.IdleTimeout = time.Duration(*t.IdleTimeout) // over http.idleTimeout
		}
	}
	switch {
	case upgradeSet:
		tp.H2UpgradeSource = source
	case tp.UseClientProtocol:
		// As Istio: the client's protocol goes upstream, so an HTTP/1.1
		// request stays HTTP/1.1 whatever the mesh default.
		tp.H2UpgradeSource = source + " useClientProtocol"
	case !proto.IsHTTP():
		// As Istio: the mesh default never upgrades a port not declared HTTP.
		tp.H2UpgradeSource = fmt.Sprintf("mesh default (not applied: port protocol %s is not HTTP)", proto)
	default:
		tp.H2Upgrade = s.mesh.H2UpgradePolicy == "UPGRADE"
		tp.H2UpgradeSource = "mesh default"
	}
	return tp
}

// ---- queries ----

var workloadKindRank = map[string]int{"WorkloadEntry": 0, "Pod": 1, "Deployment": 2}

// Workload finds a workload by name (in any namespace, if unique) or by
// "namespace/name". A WorkloadEntry, a Pod or a Deployment can name a
// workload; when several kinds share the name in a namespace, the
// WorkloadEntry wins, then the Pod, then the Deployment. The error lists
// the known workloads.
func (s *Snapshot) Workload(name string) (*Workload, error) {
	ns, n, hasNS := strings.Cut(name, "/")
	if !hasNS {
		ns, n = "", name
	}
	var found []*Workload
	for _, w := range s.workloads {
		if w.Name == n && (!hasNS || w.Namespace == ns) {
			found = append(found, w)
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("workload %q not found; known workloads: %s", name, s.knownWorkloads())
	}
	best := map[string]*Workload{} // namespace -> best of kind rank
	for _, w := range found {
		if cur, ok := best[w.Namespace]; !ok || workloadKindRank[w.Kind] < workloadKindRank[cur.Kind] {
			best[w.Namespace] = w
		}
	}
	if len(best) > 1 {
		var names []string
		for _, w := range best {
			names = append(names, fmt.Sprintf("%s/%s (%s)", w.Namespace, w.Name, w.Kind))
		}
		sort.Strings(names)
		return nil, fmt.Errorf("workload %q is ambiguous: %s; name it as namespace/name", name, strings.Join(names, ", "))
	}
	for _, w := range best {
		c := *w
		return &c, nil
	}
	return nil, nil // unreachable
}

func (s *Snapshot) knownWorkloads() string {
	if len(s.workloads) == 0 {
		return "none (define a WorkloadEntry, Pod or Deployment)"
	}
	names := make([]string, 0, len(s.workloads))
	for _, w := range s.workloads {
		names = append(names, fmt.Sprintf("%s/%s (%s)", w.Namespace, w.Name, w.Kind))
	}
	return strings.Join(names, ", ")
}

// sidecarFor returns the Sidecar resource for w: one in w's namespace
// whose workloadSelector matches (the first by name), else the one in
// w's namespace without workloadSelector, else the one in the root
// namespace without workloadSelector, else nil.
func (s *Snapshot) sidecarFor(w *Workload) *sidecar {
	if w == nil {
		return nil
	}
	var nsWide, root *sidecar
	for _, sc := range s.sidecars {
		switch {
		case sc.ns == w.Namespace && sc.selector != nil:
			if selectorMatches(sc.selector, w.Labels) {
				return sc
			}
		case sc.ns == w.Namespace && sc.selector == nil:
			nsWide = sc
		case sc.ns == s.mesh.RootNamespace && sc.selector == nil:
			root = sc
		}
	}
	if nsWide != nil {
		return nsWide
	}
	return root
}

// Listeners returns the explicit listeners of w from the Sidecar that
// applies to it (see sidecarFor): outbound from egress entries that have
// a port (an egress without port only scopes hosts), inbound from
// ingress entries. An egress bind defaults to 127.0.0.1 (the local app
// connects there); an ingress bind defaults to w's address when it is an
// IP, else 0.0.0.0.
func (s *Snapshot) Listeners(w *Workload) (outbound []Listener, inbound []Listener) {
	sc := s.sidecarFor(w)
	if sc == nil {
		return nil, nil
	}
	for _, eg := range sc.egress {
		if eg.Port == nil {
			continue
		}
		bind := eg.Bind
		if bind == "" {
			bind = "127.0.0.1"
		}
		proto, _ := ParseProtocol(eg.Port.Protocol)
		outbound = append(outbound, Listener{
			Name: listenerName(bind, eg.Port.Number), Bind: bind, Port: eg.Port.Number, Protocol: proto,
			PortName: eg.Port.Name, Hosts: slices.Clone(eg.Hosts), CaptureMode: eg.CaptureMode, Sidecar: nsName(sc.ns, sc.name),
		})
	}
	for _, in := range sc.ingress {
		bind := in.Bind
		if bind == "" {
			bind = "0.0.0.0"
			if a, err := netip.ParseAddr(w.Address); err == nil {
				bind = a.String()
			}
		}
		proto, _ := ParseProtocol(in.Port.Protocol)
		inbound = append(inbound, Listener{
			Name: listenerName(bind, in.Port.Number), Bind: bind, Port: in.Port.Number, Protocol: proto,
			DefaultEndpoint: in.DefaultEndpoint, PortName: in.Port.Name, CaptureMode: in.CaptureMode, Sidecar: nsName(sc.ns, sc.name),
		})
	}
	return outbound, inbound
}

func listenerName(bind string, port int) string { return bind + "_" + strconv.Itoa(port) }

// InboundTarget returns the local application address that w's inbound
// listener on port forwards to: its defaultEndpoint, where 0.0.0.0 or
// [::] stands for w's own address (127.0.0.1 or ::1 if w has none).
func (s *Snapshot) InboundTarget(w *Workload, port int) (appAddr string, l Listener, ok bool) {
	_, inbound := s.Listeners(w)
	for _, l := range inbound {
		if l.Port != port {
			continue
		}
		addr := l.DefaultEndpoint
		if host, p, err := net.SplitHostPort(addr); err == nil {
			if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
				own, err := netip.ParseAddr(w.Address)
				switch {
				case err == nil:
					host = own.String()
				case ip.Is4():
					host = "127.0.0.1"
				default:
					host = "::1"
				}
				addr = net.JoinHostPort(host, p)
			}
		}
		return addr, l, true
	}
	return "", Listener{}, false
}

// AllowConnect reports whether w's inbound HTTP/2 listeners accept
// extended CONNECT (RFC 8441), as set by an EnvoyFilter patch of
// http2_protocol_options.allow_connect in context SIDECAR_INBOUND or
// ANY. An EnvoyFilter applies to w when it is in w's namespace or in the
// root namespace, and its workloadSelector (if any) matches w's labels.
// Patches apply in Istio's order (root namespace first, then by
// priority, then load order); the last one wins. The string names the
// deciding EnvoyFilter ("EnvoyFilter default/h2-upgrade-wss"), or is
// empty when none applies.
func (s *Snapshot) AllowConnect(w *Workload) (bool, string) {
	if w == nil {
		return false, ""
	}
	var applicable []*envoyFilter
	for _, f := range s.filters {
		if f.allowConnect == nil || (f.ns != w.Namespace && f.ns != s.mesh.RootNamespace) {
			continue
		}
		if f.selector != nil && !selectorMatches(f.selector, w.Labels) {
			continue
		}
		applicable = append(applicable, f)
	}
	if len(applicable) == 0 {
		return false, ""
	}
	root := s.mesh.RootNamespace
	slices.SortStableFunc(applicable, func(a, b *envoyFilter) int {
		ar, br := a.ns == root, b.ns == root
		if ar != br {
			if ar {
				return -1
			}
			return 1
		}
		return a.priority - b.priority
	})
	last := applicable[len(applicable)-1]
	return *last.allowConnect, "EnvoyFilter " + nsName(last.ns, last.name)
}

// Route finds the cluster for an outbound request that arrived on
// listener port port with Host/:authority authority. The authority
// (case-insensitive, an optional ":port" must equal port) is matched
// against Service host names ("name.ns", "name.ns.svc", the FQDN, and
// the bare name when only one Service of that name exposes the port)
// and ServiceEntry hosts, exact names before the longest matching
// wildcard ("*.example.com", "*").
//
// Local-mode convenience: when the authority is empty, "localhost" or an
// IP literal that is no known service address, and exactly one service
// exposes the port, that service is used, so an application can simply
// connect to its sidecar's egress listener on 127.0.0.1.
//
// A miss returns an error wrapping ErrNoRoute.
func (s *Snapshot) Route(port int, authority string) (*Cluster, error) {
	return s.route(nil, port, authority)
}

// RouteFrom is Route for a request from workload w: a bare service name
// resolves in w's namespace, only hosts visible through the egress hosts
// of w's Sidecar are candidates, and services selecting w itself are
// left out of the local-mode convenience (a client does not route to
// its own service).
func (s *Snapshot) RouteFrom(w *Workload, port int, authority string) (*Cluster, error) {
	return s.route(w, port, authority)
}

func (s *Snapshot) route(w *Workload, port int, authority string) (*Cluster, error) {
	host, aport, err := splitAuthority(authority)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoRoute, err)
	}
	if aport != 0 && aport != port {
		return nil, fmt.Errorf("%w: authority %q names port %d, but the request arrived on listener port %d", ErrNoRoute, authority, aport, port)
	}
	cands := s.visibleRoutes(w, port)
	ip, ipErr := netip.ParseAddr(host)
	if host == "" || host == "localhost" || ipErr == nil {
		if ipErr == nil {
			for _, r := range cands {
				if r.hasVIP(ip) {
					return r.cluster, nil
				}
			}
		}
		var uniq []*route
		for _, r := range cands {
			if r.wildcard != "" {
				continue
			}
			if w != nil && r.ns == w.Namespace && selectorMatches(r.selector, w.Labels) {
				continue
			}
			uniq = append(uniq, r)
		}
		if len(uniq) == 1 {
			return uniq[0].cluster, nil
		}
		if len(uniq) == 0 {
			return nil, fmt.Errorf("%w: authority %q names no service and no service exposes port %d", ErrNoRoute, authority, port)
		}
		return nil, fmt.Errorf("%w: authority %q names no service and %d services expose port %d (%s); set the Host header", ErrNoRoute, authority, len(uniq), port, clusterNames(uniq))
	}
	var exact []*route
	for _, r := range cands {
		if slices.Contains(r.names, host) || (r.short != "" && r.short == host) {
			exact = append(exact, r)
		}
	}
	if len(exact) > 1 {
		// A bare name prefers the caller's namespace, then full-name matches.
		var pick []*route
		for _, r := range exact {
			if slices.Contains(r.names, host) || (w != nil && r.ns == w.Namespace) {
				pick = append(pick, r)
			}
		}
		if len(pick) > 0 {
			exact = pick
		}
	}
	switch len(exact) {
	case 1:
		return s.authorityEndpoint(exact[0].cluster, host), nil
	case 0:
	default:
		return nil, fmt.Errorf("%w: host %q on port %d is ambiguous (%s); use namespace-qualified names", ErrNoRoute, host, port, clusterNames(exact))
	}
	var best *route
	for _, r := range cands {
		if r.wildcard != "" && hostMatches(r.wildcard, host) && (best == nil || len(r.wildcard) > len(best.wildcard)) {
			best = r
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: no Service or ServiceEntry host matches %q on port %d", ErrNoRoute, host, port)
	}
	return s.authorityEndpoint(best.cluster, host), nil
}

// authorityEndpoint gives a ServiceEntry cluster without endpoints
// (resolution NONE, or a wildcard host) the requested host as its one
// endpoint, as a passthrough proxy would connect to it.
func (s *Snapshot) authorityEndpoint(c *Cluster, host string) *Cluster {
	if c.Kind != "ServiceEntry" || len(c.Endpoints) > 0 || c.Resolution == "STATIC" {
		return c
	}
	target := c.Port
	for _, p := range s.serviceEntryPorts(c) {
		if p.TargetPort != 0 {
			target = p.TargetPort
		}
	}
	cc := *c
	cc.Endpoints = []Endpoint{{Address: joinHostPort(host, target)}}
	return &cc
}

func (s *Snapshot) serviceEntryPorts(c *Cluster) []sePort {
	for _, se := range s.serviceEntries {
		if se.ns == c.Namespace && se.name == c.Service {
			for _, p := range se.ports {
				if p.Number == c.Port {
					return []sePort{p}
				}
			}
		}
	}
	return nil
}

func clusterNames(rs []*route) string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.cluster.Name
	}
	return strings.Join(names, ", ")
}

func (r *route) hasVIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range r.vips {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// visibleRoutes returns the routes on port that w may reach: all when w
// is nil or has no Sidecar egress for the port; else those matching the
// egress hosts of its egress listener on port (or of its egress without
// port).
func (s *Snapshot) visibleRoutes(w *Workload, port int) []*route {
	all := s.routes[port]
	sc := s.sidecarFor(w)
	if sc == nil {
		return all
	}
	var hosts []string
	found := false
	for _, eg := range sc.egress {
		if eg.Port != nil && eg.Port.Number == port {
			hosts, found = eg.Hosts, true
			break
		}
	}
	if !found {
		for _, eg := range sc.egress {
			if eg.Port == nil {
				hosts, found = eg.Hosts, true
			}
		}
	}
	if !found {
		return all
	}
	var out []*route
	for _, r := range all {
		for _, h := range hosts {
			nsPart, hostPart, _ := strings.Cut(h, "/")
			nsOK := nsPart == "*" || nsPart == r.ns || (nsPart == "." && r.ns == sc.ns)
			if nsOK && hostMatches(hostPart, r.egressHost) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// ClusterForAddress finds the cluster for a connection intercepted
// transparently to ip:port: a Service whose clusterIP is ip, or a
// ServiceEntry whose addresses contain ip, exposing port.
func (s *Snapshot) ClusterForAddress(ip netip.Addr, port int) (*Cluster, error) {
	for _, r := range s.routes[port] {
		if r.hasVIP(ip) {
			return r.cluster, nil
		}
	}
	return nil, fmt.Errorf("%w: no Service or ServiceEntry has address %s and port %d", ErrNoRoute, ip, port)
}

// splitAuthority splits "host", "host:port", "[v6]:port" or "v6",
// lowercasing the host and dropping a trailing dot.
func splitAuthority(a string) (string, int, error) {
	a = strings.TrimSpace(a)
	if a == "" {
		return "", 0, nil
	}
	host, port := a, 0
	if h, p, err := net.SplitHostPort(a); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, fmt.Errorf("authority %q has an invalid port", a)
		}
		host, port = h, n
	} else if strings.HasPrefix(a, "[") && strings.HasSuffix(a, "]") {
		host = a[1 : len(a)-1]
	} else if strings.Count(a, ":") == 1 {
		return "", 0, fmt.Errorf("authority %q has an invalid port", a)
	}
	return strings.ToLower(strings.TrimSuffix(host, ".")), port, nil
}
