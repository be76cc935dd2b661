package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"
)

// IstioRootNamespace is Istio's default config root namespace: the
// namespace of the istio ConfigMap, and where Sidecar and EnvoyFilter
// resources apply mesh-wide (MeshConfig.rootNamespace may change it).
const IstioRootNamespace = "istio-system"

// EnvoyFilterProxyVersion is the version wsmesh matches against an
// EnvoyFilter's match.proxy.proxyVersion regular expression. It names the
// Istio configuration generation wsmesh implements (WebSocket over HTTP/2
// needs 1.12 or later).
var EnvoyFilterProxyVersion = "1.24.0"

// ---- internal model ----

type service struct {
	loc        location
	name, ns   string
	ports      []svcPort
	selector   map[string]string
	clusterIPs []netip.Addr
}

type svcPort struct {
	name        string
	port        int
	target      intOrString // zero: same as port
	hasTarget   bool
	transport   string
	appProtocol string
	protocol    Protocol
}

type serviceEntry struct {
	loc        location
	name, ns   string
	hosts      []string // lowercase
	addresses  []netip.Prefix
	ports      []sePort
	resolution string
	location   string
	endpoints  []workloadEntry
	selector   map[string]string
}

type sePort struct {
	istioPort
	protocol Protocol
}

type wentry struct {
	loc      location
	name, ns string
	spec     workloadEntry
}

type slice struct {
	loc         location
	name, ns    string
	service     string
	addressType string
	endpoints   []sliceEndpoint
	ports       []sliceEndpointPort
}

type sidecar struct {
	loc      location
	name, ns string
	selector map[string]string // nil: applies to the whole namespace
	ingress  []sidecarIngress
	egress   []sidecarEgress
}

type destRule struct {
	loc      location
	name, ns string
	host     string // resolved as Istio does: short names get ".<ns>.svc.cluster.local"
	policy   *trafficPolicy
	subsets  []subset
}

type envoyFilter struct {
	loc          location
	name, ns     string
	selector     map[string]string // nil: every workload in scope
	priority     int
	allowConnect *bool // set by an understood patch
	patches      []configPatch
}

// ---- Service ----

func (b *builder) addService(loc location, doc any) {
	d := doc.(*serviceDoc)
	ns, ok := b.register(loc, &d.Metadata)
	if ok && !isDNS1035Label(d.Metadata.Name) {
		b.errf(loc, "metadata.name", "%q is not a valid Service name (a DNS label starting with a letter)", d.Metadata.Name)
		ok = false
	}
	spec := d.Spec
	b.checkEnum(loc, "spec.type", spec.Type, "ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
	svc := &service{loc: loc, name: d.Metadata.Name, ns: ns, selector: spec.Selector}
	b.checkLabels(loc, "spec.selector", spec.Selector)
	headless := spec.ClusterIP == "None"
	seenIP := map[netip.Addr]bool{}
	addIP := func(field, s string) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			b.errf(loc, field, "%q is not an IP address or None", s)
			return
		}
		if !seenIP[a] {
			seenIP[a] = true
			svc.clusterIPs = append(svc.clusterIPs, a)
		}
	}
	if spec.ClusterIP != "" && !headless {
		addIP("spec.clusterIP", spec.ClusterIP)
	}
	for i, s := range spec.ClusterIPs {
		if s != "None" {
			addIP(fmt.Sprintf("spec.clusterIPs[%d]", i), s)
		}
	}
	if len(spec.Ports) == 0 && !headless && spec.Type != "ExternalName" {
		b.errf(loc, "spec.ports", "at least one port is required")
	}
	names := map[string]int{}
	numbers := map[string]int{}
	for i, p := range spec.Ports {
		path := fmt.Sprintf("spec.ports[%d]", i)
		b.checkPort(loc, path+".port", p.Port)
		transport := p.Protocol
		if transport == "" {
			transport = "TCP"
		}
		b.checkEnum(loc, path+".protocol", p.Protocol, "TCP", "UDP", "SCTP")
		switch {
		case p.Name == "" && len(spec.Ports) > 1:
			b.errf(loc, path+".name", "required when a Service has more than one port")
		case p.Name != "" && !isDNSLabel(p.Name):
			b.errf(loc, path+".name", "%q is not a valid port name (lowercase letters, digits and '-')", p.Name)
		case p.Name != "":
			if j, dup := names[p.Name]; dup {
				b.errf(loc, path+".name", "duplicate port name %q (also spec.ports[%d])", p.Name, j)
			}
			names[p.Name] = i
		}
		key := fmt.Sprintf("%d/%s", p.Port, transport)
		if j, dup := numbers[key]; dup {
			b.errf(loc, path+".port", "duplicate port %d/%s (also spec.ports[%d])", p.Port, transport, j)
		}
		numbers[key] = i
		sp := svcPort{name: p.Name, port: p.Port, transport: transport, appProtocol: p.AppProtocol}
		if p.TargetPort != nil {
			sp.target, sp.hasTarget = *p.TargetPort, true
			if p.TargetPort.IsString {
				if !isIANASvcName(p.TargetPort.StrVal) {
					b.errf(loc, path+".targetPort", "%q is neither a port number nor a valid port name", p.TargetPort.StrVal)
				}
			} else {
				b.checkPort(loc, path+".targetPort", p.TargetPort.IntVal)
			}
		}
		sp.protocol = servicePortProtocol(p.Name, p.AppProtocol, transport)
		svc.ports = append(svc.ports, sp)
	}
	if ok {
		b.s.services = append(b.s.services, svc)
	}
}

// ---- Pod, Deployment ----

func (b *builder) addPod(loc location, doc any) {
	d := doc.(*podDoc)
	ns, ok := b.register(loc, &d.Metadata)
	if d.Status.PodIP != "" {
		if _, err := netip.ParseAddr(d.Status.PodIP); err != nil {
			b.errf(loc, "status.podIP", "%q is not an IP address", d.Status.PodIP)
			ok = false
		}
	}
	if !ok {
		return
	}
	b.s.workloads = append(b.s.workloads, &Workload{
		Kind: "Pod", Name: d.Metadata.Name, Namespace: ns, Labels: d.Metadata.Labels,
		Address: d.Status.PodIP, ServiceAccount: stringAt(d.Spec, "serviceAccountName"),
	})
}

func (b *builder) addDeployment(loc location, doc any) {
	d := doc.(*deploymentDoc)
	ns, ok := b.register(loc, &d.Metadata)
	b.checkLabels(loc, "spec.template.metadata.labels", d.Spec.Template.Metadata.Labels)
	if !ok {
		return
	}
	b.s.workloads = append(b.s.workloads, &Workload{
		Kind: "Deployment", Name: d.Metadata.Name, Namespace: ns, Labels: d.Spec.Template.Metadata.Labels,
		ServiceAccount: stringAt(d.Spec.Template.Spec, "serviceAccountName"),
	})
}

// stringAt reads a string field of a generic object, or "".
func stringAt(v any, key string) string {
	if m, ok := v.(map[string]any); ok {
		s, _ := m[key].(string)
		return s
	}
	return ""
}

// ---- ConfigMap istio-system/istio ----

func (b *builder) addConfigMap(loc location, doc any) {
	d := doc.(*configMapDoc)
	ns, ok := b.register(loc, &d.Metadata)
	if !ok || d.Metadata.Name != "istio" {
		return
	}
	if ns != IstioRootNamespace {
		b.warnf(loc, "metadata.namespace", "ConfigMap istio is read only in namespace %s, this one (namespace %s) is ignored", IstioRootNamespace, ns)
		return
	}
	mc := MeshConfig{Source: "ConfigMap " + IstioRootNamespace + "/istio"}
	text, has := d.Data["mesh"]
	if !has {
		b.s.mesh = mc
		b.s.meshSet = true
		return
	}
	tree, err := yamlToTree([]byte(text))
	if err != nil {
		b.errf(loc, "data.mesh", "invalid YAML: %v", err)
		return
	}
	var md meshConfigDoc
	var dec treeDecoder
	if tree != nil {
		dec.decode(tree, reflect.ValueOf(&md).Elem(), "")
	}
	for _, u := range dec.unknown {
		b.warnf(loc, "data.mesh: "+u.path, "%s", u.msg)
	}
	for _, e := range dec.errs {
		b.errf(loc, "data.mesh: "+e.path, "%s", e.msg)
	}
	if len(dec.errs) > 0 {
		return
	}
	if !b.checkEnum(loc, "data.mesh: h2UpgradePolicy", md.H2UpgradePolicy, "DO_NOT_UPGRADE", "UPGRADE") {
		return
	}
	mc.H2UpgradePolicy = md.H2UpgradePolicy
	if md.ConnectTimeout != nil {
		mc.ConnectTimeout = time.Duration(*md.ConnectTimeout)
	}
	if md.RootNamespace != "" {
		if !isDNSLabel(md.RootNamespace) {
			b.errf(loc, "data.mesh: rootNamespace", "%q is not a valid namespace", md.RootNamespace)
			return
		}
		mc.RootNamespace = md.RootNamespace
	}
	b.s.mesh = mc
	b.s.meshSet = true
}

// ---- EndpointSlice ----

const serviceNameLabel = "kubernetes.io/service-name"

func (b *builder) addEndpointSlice(loc location, doc any) {
	d := doc.(*endpointSliceDoc)
	ns, ok := b.register(loc, &d.Metadata)
	if d.AddressType == "" {
		b.errf(loc, "addressType", "required (IPv4, IPv6 or FQDN)")
		ok = false
	} else if !b.checkEnum(loc, "addressType", d.AddressType, "IPv4", "IPv6", "FQDN") {
		ok = false
	}
	for i, ep := range d.Endpoints {
		path := fmt.Sprintf("endpoints[%d].addresses", i)
		if len(ep.Addresses) == 0 {
			b.errf(loc, path, "at least one address is required")
			ok = false
		}
		for j, a := range ep.Addresses {
			p := fmt.Sprintf("%s[%d]", path, j)
			switch d.AddressType {
			case "IPv4", "IPv6":
				ip, err := netip.ParseAddr(a)
				if err != nil || (d.AddressType == "IPv4") != ip.Is4() {
					b.errf(loc, p, "%q is not an %s address", a, d.AddressType)
					ok = false
				}
			case "FQDN":
				if !isHostname(a) {
					b.errf(loc, p, "%q is not a host name", a)
					ok = false
				}
			}
		}
	}
	for i, p := range d.Ports {
		path := fmt.Sprintf("ports[%d]", i)
		if p.Port != nil && !b.checkPort(loc, path+".port", *p.Port) {
			ok = false
		}
		if p.Name != nil && *p.Name != "" && !isDNSLabel(*p.Name) {
			b.errf(loc, path+".name", "%q is not a valid port name", *p.Name)
			ok = false
		}
	}
	svcName := d.Metadata.Labels[serviceNameLabel]
	if svcName == "" {
		b.warnf(loc, "metadata.labels", "no %s label: these endpoints belong to no Service and are not used", serviceNameLabel)
	}
	if ok {
		b.s.slices = append(b.s.slices, &slice{loc: loc, name: d.Metadata.Name, ns: ns, service: svcName,
			addressType: d.AddressType, endpoints: d.Endpoints, ports: d.Ports})
	}
}

// ---- WorkloadEntry ----

// checkWorkloadEntry validates a WorkloadEntry spec (also a ServiceEntry
// endpoint). needIP requires an IP or Unix socket address.
func (b *builder) checkWorkloadEntry(loc location, path string, we *workloadEntry, needIP bool) bool {
	ok := true
	switch {
	case we.Address == "":
		b.errf(loc, joinPath(path, "address"), "required")
		ok = false
	case strings.HasPrefix(we.Address, "unix://"):
		if len(we.Address) <= len("unix://") {
			b.errf(loc, joinPath(path, "address"), "%q: empty Unix socket path", we.Address)
			ok = false
		}
	default:
		if _, err := netip.ParseAddr(we.Address); err != nil {
			if needIP {
				b.errf(loc, joinPath(path, "address"), "%q is not an IP address (resolution STATIC needs IPs)", we.Address)
				ok = false
			} else if !isHostname(we.Address) {
				b.errf(loc, joinPath(path, "address"), "%q is not an IP address, host name or unix:// path", we.Address)
				ok = false
			}
		}
	}
	for _, name := range sortedStringKeys(we.Ports) {
		if !b.checkPort(loc, keyPath(joinPath(path, "ports"), name), we.Ports[name]) {
			ok = false
		}
	}
	b.checkLabels(loc, joinPath(path, "labels"), we.Labels)
	return ok
}

func (b *builder) addWorkloadEntry(loc location, doc any) {
	d := doc.(*workloadEntryDoc)
	ns, ok := b.register(loc, &d.Metadata)
	if !b.checkWorkloadEntry(loc, "spec", &d.Spec, false) || !ok {
		return
	}
	b.s.wentries = append(b.s.wentries, &wentry{loc: loc, name: d.Metadata.Name, ns: ns, spec: d.Spec})
	b.s.workloads = append(b.s.workloads, &Workload{
		Kind: "WorkloadEntry", Name: d.Metadata.Name, Namespace: ns, Labels: d.Spec.Labels,
		Address: d.Spec.Address, ServiceAccount: d.Spec.ServiceAccount,
	})
}

// ---- ServiceEntry ----

func (b *builder) addServiceEntry(loc location, doc any) {
	d := doc.(*serviceEntryDoc)
	ns, ok := b.register(loc, &d.Metadata)
	spec := &d.Spec
	se := &serviceEntry{loc: loc, name: d.Metadata.Name, ns: ns, resolution: spec.Resolution, location: spec.Location, endpoints: spec.Endpoints}
	if se.resolution == "" {
		se.resolution = "NONE"
	}
	if !b.checkEnum(loc, "spec.resolution", spec.Resolution, "NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN") {
		ok = false
	}
	if !b.checkEnum(loc, "spec.location", spec.Location, "MESH_EXTERNAL", "MESH_INTERNAL") {
		ok = false
	}
	if len(spec.Hosts) == 0 {
		b.errf(loc, "spec.hosts", "at least one host is required")
		ok = false
	}
	wildcard := false
	for i, h := range spec.Hosts {
		if _, err := netip.ParseAddr(h); err == nil || !isWildcardHost(h) {
			b.errf(loc, fmt.Sprintf("spec.hosts[%d]", i), "%q is not a host name or wildcard like *.example.com", h)
			ok = false
			continue
		}
		wildcard = wildcard || strings.HasPrefix(h, "*")
		se.hosts = append(se.hosts, strings.ToLower(strings.TrimSuffix(h, ".")))
	}
	for i, a := range spec.Addresses {
		var p netip.Prefix
		var err error
		if strings.Contains(a, "/") {
			p, err = netip.ParsePrefix(a)
		} else {
			var ip netip.Addr
			ip, err = netip.ParseAddr(a)
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
		if err != nil {
			b.errf(loc, fmt.Sprintf("spec.addresses[%d]", i), "%q is not an IP address or CIDR", a)
			ok = false
			continue
		}
		se.addresses = append(se.addresses, p.Masked())
	}
	if len(spec.Ports) == 0 {
		b.errf(loc, "spec.ports", "at least one port is required")
		ok = false
	}
	names := map[string]int{}
	numbers := map[int]int{}
	for i, p := range spec.Ports {
		path := fmt.Sprintf("spec.ports[%d]", i)
		if !b.checkPort(loc, path+".number", p.Number) {
			ok = false
		}
		if p.TargetPort != 0 && !b.checkPort(loc, path+".targetPort", p.TargetPort) {
			ok = false
		}
		if p.Name == "" {
			b.errf(loc, path+".name", "required")
			ok = false
		} else if j, dup := names[p.Name]; dup {
			b.errf(loc, path+".name", "duplicate port name %q (also spec.ports[%d])", p.Name, j)
			ok = false
		}
		names[p.Name] = i
		if j, dup := numbers[p.Number]; dup {
			b.errf(loc, path+".number", "duplicate port %d (also spec.ports[%d])", p.Number, j)
			ok = false
		}
		numbers[p.Number] = i
		proto, known := ParseProtocol(p.Protocol)
		if p.Protocol != "" && !known {
			b.errf(loc, path+".protocol", "unknown protocol %q (want HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP or TLS)", p.Protocol)
			ok = false
		}
		se.ports = append(se.ports, sePort{istioPort: p, protocol: proto})
	}
	if spec.WorkloadSelector != nil {
		b.checkLabels(loc, "spec.workloadSelector.labels", spec.WorkloadSelector.Labels)
		se.selector = spec.WorkloadSelector.Labels
		if len(spec.Endpoints) > 0 {
			b.errf(loc, "spec.workloadSelector", "only one of workloadSelector or endpoints may be set")
			ok = false
		}
	}
	switch se.resolution {
	case "STATIC":
		if len(spec.Endpoints) == 0 && spec.WorkloadSelector == nil {
			b.errf(loc, "spec.endpoints", "resolution STATIC needs endpoints or a workloadSelector")
			ok = false
		}
	case "NONE":
		if len(spec.Endpoints) > 0 {
			b.errf(loc, "spec.endpoints", "resolution NONE takes no endpoints (use STATIC or DNS)")
			ok = false
		}
	case "DNS", "DNS_ROUND_ROBIN":
		if len(spec.Endpoints) == 0 && wildcard {
			b.errf(loc, "spec.hosts", "resolution %s without endpoints needs host names, not wildcards", se.resolution)
			ok = false
		}
	}
	for i := range spec.Endpoints {
		path := fmt.Sprintf("spec.endpoints[%d]", i)
		if !b.checkWorkloadEntry(loc, path, &spec.Endpoints[i], se.resolution == "STATIC") {
			ok = false
		}
		for _, pn := range sortedStringKeys(spec.Endpoints[i].Ports) {
			if _, known := names[pn]; !known {
				b.warnf(loc, keyPath(path+".ports", pn), "no port named %q in spec.ports, ignored", pn)
			}
		}
	}
	if ok {
		b.s.serviceEntries = append(b.s.serviceEntries, se)
	}
}

// ---- Sidecar ----

func (b *builder) addSidecar(loc location, doc any) {
	d := doc.(*sidecarDoc)
	ns, ok := b.register(loc, &d.Metadata)
	spec := &d.Spec
	sc := &sidecar{loc: loc, name: d.Metadata.Name, ns: ns, ingress: spec.Ingress, egress: spec.Egress}
	if spec.WorkloadSelector != nil {
		if len(spec.WorkloadSelector.Labels) == 0 {
			b.errf(loc, "spec.workloadSelector.labels", "at least one label is required (omit workloadSelector to apply to the whole namespace)")
			ok = false
		}
		b.checkLabels(loc, "spec.workloadSelector.labels", spec.WorkloadSelector.Labels)
		sc.selector = spec.WorkloadSelector.Labels
	}
	type listenerKey struct {
		bind string
		port int
	}
	used := map[listenerKey]string{}
	claim := func(path, bind string, port int) {
		k := listenerKey{bind, port}
		if prev, dup := used[k]; dup {
			b.errf(loc, path, "duplicate listener %s:%d (also %s)", displayBind(bind), port, prev)
			ok = false
			return
		}
		used[k] = path
	}
	for i, in := range spec.Ingress {
		path := fmt.Sprintf("spec.ingress[%d]", i)
		if !b.checkSidecarPort(loc, path, in.Port, true) {
			ok = false
		}
		if in.Bind != "" {
			if _, err := netip.ParseAddr(in.Bind); err != nil {
				b.errf(loc, path+".bind", "%q is not an IP address", in.Bind)
				ok = false
			}
		}
		if !b.checkEnum(loc, path+".captureMode", in.CaptureMode, "DEFAULT", "IPTABLES", "NONE") {
			ok = false
		}
		if in.DefaultEndpoint == "" {
			b.errf(loc, path+".defaultEndpoint", "required: the local address of the application (e.g. 127.0.0.1:8080)")
			ok = false
		} else if err := checkDefaultEndpoint(in.DefaultEndpoint); err != nil {
			b.errf(loc, path+".defaultEndpoint", "%v", err)
			ok = false
		}
		if in.Port != nil {
			claim(path, in.Bind, in.Port.Number)
		}
	}
	for i, eg := range spec.Egress {
		path := fmt.Sprintf("spec.egress[%d]", i)
		if eg.Port != nil {
			if !b.checkSidecarPort(loc, path, eg.Port, false) {
				ok = false
			}
			claim(path, eg.Bind, eg.Port.Number)
		} else if i != len(spec.Egress)-1 {
			b.errf(loc, path+".port", "an egress listener without a port must be the last one")
			ok = false
		}
		if eg.Bind != "" {
			if _, err := netip.ParseAddr(eg.Bind); err != nil {
				b.errf(loc, path+".bind", "%q is not an IP address", eg.Bind)
				ok = false
			}
		}
		if !b.checkEnum(loc, path+".captureMode", eg.CaptureMode, "DEFAULT", "IPTABLES", "NONE") {
			ok = false
		}
		if len(eg.Hosts) == 0 {
			b.errf(loc, path+".hosts", "at least one host is required (e.g. \"*/*\")")
			ok = false
		}
		for j, h := range eg.Hosts {
			if err := checkEgressHost(h); err != nil {
				b.errf(loc, fmt.Sprintf("%s.hosts[%d]", path, j), "%v", err)
				ok = false
			}
		}
	}
	if ok {
		b.s.sidecars = append(b.s.sidecars, sc)
	}
}

func displayBind(bind string) string {
	if bind == "" {
		return "(default bind)"
	}
	if strings.Contains(bind, ":") {
		return "[" + bind + "]"
	}
	return bind
}

func (b *builder) checkSidecarPort(loc location, path string, p *istioPort, required bool) bool {
	if p == nil {
		if required {
			b.errf(loc, path+".port", "required")
			return false
		}
		return true
	}
	ok := b.checkPort(loc, path+".port.number", p.Number)
	if p.Protocol != "" {
		if _, known := ParseProtocol(p.Protocol); !known {
			b.errf(loc, path+".port.protocol", "unknown protocol %q (want HTTP, HTTP2, GRPC, HTTPS, TLS or TCP)", p.Protocol)
			ok = false
		}
	}
	if p.TargetPort != 0 && !b.checkPort(loc, path+".port.targetPort", p.TargetPort) {
		ok = false
	}
	return ok
}

// ---- DestinationRule ----

// resolveHost turns a short host name into the FQDN of a Service in
// namespace ns, exactly as Istio does: only a name without any dot is
// expanded ("reviews" -> "reviews.<ns>.svc.cluster.local").
func resolveHost(h, ns string) string {
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == "*" || strings.Contains(h, ".") {
		return h
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return h
	}
	return h + "." + ns + ".svc." + clusterDomain
}

const clusterDomain = "cluster.local"

func (b *builder) addDestinationRule(loc location, doc any) {
	d := doc.(*destinationRuleDoc)
	ns, ok := b.register(loc, &d.Metadata)
	spec := &d.Spec
	if spec.Host == "" {
		b.errf(loc, "spec.host", "required")
		ok = false
	} else if !isWildcardHost(spec.Host) {
		b.errf(loc, "spec.host", "%q is not a host name or wildcard like *.example.com", spec.Host)
		ok = false
	}
	if !b.checkTrafficPolicy(loc, "spec.trafficPolicy", spec.TrafficPolicy, true) {
		ok = false
	}
	if len(spec.Subsets) > 0 {
		b.warnf(loc, "spec.subsets", "not applied by wsmesh: no route selects a subset (VirtualService is not read), so their traffic policies are not either")
	}
	if spec.ExportTo != nil {
		b.warnf(loc, "spec.exportTo", "not applied by wsmesh: the rule applies to every namespace's sidecars")
	}
	if spec.WorkloadSelector != nil {
		b.warnf(loc, "spec.workloadSelector", "not applied by wsmesh: the rule applies to every workload's sidecar")
	}
	names := map[string]int{}
	for i, s := range spec.Subsets {
		path := fmt.Sprintf("spec.subsets[%d]", i)
		switch {
		case s.Name == "":
			b.errf(loc, path+".name", "required")
			ok = false
		case !isDNSLabel(s.Name):
			b.errf(loc, path+".name", "%q is not a valid subset name (lowercase letters, digits and '-')", s.Name)
			ok = false
		default:
			if j, dup := names[s.Name]; dup {
				b.errf(loc, path+".name", "duplicate subset %q (also spec.subsets[%d])", s.Name, j)
				ok = false
			}
			names[s.Name] = i
		}
		b.checkLabels(loc, path+".labels", s.Labels)
		if !b.checkTrafficPolicy(loc, path+".trafficPolicy", s.TrafficPolicy, false) {
			ok = false
		}
	}
	if ok {
		b.s.rules = append(b.s.rules, &destRule{loc: loc, name: d.Metadata.Name, ns: ns,
			host: resolveHost(spec.Host, ns), policy: spec.TrafficPolicy, subsets: spec.Subsets})
	}
}

// checkTrafficPolicy validates tp. applied: wsmesh applies tp (it is not a
// subset's), so the settings it leaves out are warned of.
func (b *builder) checkTrafficPolicy(loc location, path string, tp *trafficPolicy, applied bool) bool {
	if tp == nil {
		return true
	}
	n := len(b.errs)
	b.checkLoadBalancer(loc, path+".loadBalancer", tp.LoadBalancer, applied)
	b.checkConnectionPool(loc, path+".connectionPool", tp.ConnectionPool, applied)
	if applied {
		b.warnUnapplied(loc, path, map[string]bool{
			"outlierDetection": tp.OutlierDetection != nil,
			"tls":              tp.TLS != nil,
			"tunnel":           tp.Tunnel != nil,
			"proxyProtocol":    tp.ProxyProtocol != nil,
			"retryBudget":      tp.RetryBudget != nil,
		})
	}
	seen := map[int]int{}
	for i, pl := range tp.PortLevelSettings {
		p := fmt.Sprintf("%s.portLevelSettings[%d]", path, i)
		if pl.Port == nil {
			b.errf(loc, p+".port", "required")
			continue
		}
		if !b.checkPort(loc, p+".port.number", pl.Port.Number) {
			continue
		}
		if j, dup := seen[pl.Port.Number]; dup {
			b.errf(loc, p+".port.number", "duplicate port %d (also portLevelSettings[%d])", pl.Port.Number, j)
		}
		seen[pl.Port.Number] = i
		b.checkLoadBalancer(loc, p+".loadBalancer", pl.LoadBalancer, applied)
		b.checkConnectionPool(loc, p+".connectionPool", pl.ConnectionPool, applied)
		if applied {
			b.warnUnapplied(loc, p, map[string]bool{"outlierDetection": pl.OutlierDetection != nil, "tls": pl.TLS != nil})
		}
	}
	return len(b.errs) == n
}

// warnUnapplied warns of each field under path that is set (true in set)
// and that wsmesh accepts, as Istio's API has it, but does not apply.
func (b *builder) warnUnapplied(loc location, path string, set map[string]bool) {
	fields := make([]string, 0, len(set))
	for f, on := range set {
		if on {
			fields = append(fields, f)
		}
	}
	sort.Strings(fields)
	for _, f := range fields {
		b.warnf(loc, path+"."+f, "not applied by wsmesh")
	}
}

func (b *builder) checkLoadBalancer(loc location, path string, lb *loadBalancerSettings, applied bool) {
	if lb == nil {
		return
	}
	if applied {
		if lb.Simple == "PASSTHROUGH" {
			b.warnf(loc, path+".simple", "PASSTHROUGH not applied by wsmesh: endpoints are picked round robin")
		}
		b.warnUnapplied(loc, path, map[string]bool{
			"consistentHash":     lb.ConsistentHash != nil,
			"localityLbSetting":  lb.LocalityLbSetting != nil,
			"warmupDurationSecs": lb.WarmupDurationSecs != nil,
			"warmup":             lb.Warmup != nil,
		})
	}
	b.checkEnum(loc, path+".simple", lb.Simple, "UNSPECIFIED", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM", "PASSTHROUGH")
	if lb.Simple != "" && lb.ConsistentHash != nil {
		b.errf(loc, path, "only one of simple or consistentHash may be set")
	}
}

func (b *builder) checkConnectionPool(loc location, path string, cp *connectionPool, applied bool) {
	if cp == nil {
		return
	}
	if t := cp.TCP; t != nil && applied {
		b.warnUnapplied(loc, path+".tcp", map[string]bool{
			"maxConnections":        t.MaxConnections != nil,
			"maxConnectionDuration": t.MaxConnectionDuration != nil,
		})
	}
	if h := cp.HTTP; h != nil && applied {
		b.warnUnapplied(loc, path+".http", map[string]bool{
			"http1MaxPendingRequests":  h.HTTP1MaxPendingRequests != nil,
			"http2MaxRequests":         h.HTTP2MaxRequests != nil,
			"maxRequestsPerConnection": h.MaxRequestsPerConnection != nil,
			"maxRetries":               h.MaxRetries != nil,
			"maxConcurrentStreams":     h.MaxConcurrentStreams != nil,
		})
	}
	nonNeg := func(field string, v *int) {
		if v != nil && *v < 0 {
			b.errf(loc, field, "must not be negative, got %d", *v)
		}
	}
	if t := cp.TCP; t != nil {
		nonNeg(path+".tcp.maxConnections", t.MaxConnections)
		if t.TCPKeepalive != nil {
			nonNeg(path+".tcp.tcpKeepalive.probes", t.TCPKeepalive.Probes)
		}
	}
	if h := cp.HTTP; h != nil {
		nonNeg(path+".http.http1MaxPendingRequests", h.HTTP1MaxPendingRequests)
		nonNeg(path+".http.http2MaxRequests", h.HTTP2MaxRequests)
		nonNeg(path+".http.maxRequestsPerConnection", h.MaxRequestsPerConnection)
		nonNeg(path+".http.maxRetries", h.MaxRetries)
		nonNeg(path+".http.maxConcurrentStreams", h.MaxConcurrentStreams)
		b.checkEnum(loc, path+".http.h2UpgradePolicy", h.H2UpgradePolicy, "DEFAULT", "DO_NOT_UPGRADE", "UPGRADE")
		if h.UseClientProtocol && h.H2UpgradePolicy == "UPGRADE" {
			b.errf(loc, path+".http.useClientProtocol", "must not be true when h2UpgradePolicy is UPGRADE")
		}
	}
}

// ---- EnvoyFilter ----

const (
	hcmFilterName       = "envoy.filters.network.http_connection_manager"
	hcmFilterLegacyName = "envoy.http_connection_manager"
	hcmTypeURL          = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)

func (b *builder) addEnvoyFilter(loc location, doc any) {
	d := doc.(*envoyFilterDoc)
	ns, ok := b.register(loc, &d.Metadata)
	spec := &d.Spec
	ef := &envoyFilter{loc: loc, name: d.Metadata.Name, ns: ns, patches: spec.ConfigPatches}
	if spec.WorkloadSelector != nil {
		b.checkLabels(loc, "spec.workloadSelector.labels", spec.WorkloadSelector.Labels)
		if len(spec.WorkloadSelector.Labels) > 0 {
			ef.selector = spec.WorkloadSelector.Labels
		}
	}
	if spec.Priority != nil {
		n, err := treeInt(spec.Priority)
		if err != nil {
			b.errf(loc, "spec.priority", "%v", err)
			ok = false
		}
		ef.priority = int(n)
	}
	if spec.TargetRefs != nil {
		b.warnf(loc, "spec.targetRefs", "not applied by wsmesh: only workloadSelector selects workloads")
	}
	for i := range spec.ConfigPatches {
		path := fmt.Sprintf("spec.configPatches[%d]", i)
		if !b.checkPatch(loc, path, ef, &spec.ConfigPatches[i]) {
			ok = false
		}
	}
	if ok {
		b.s.filters = append(b.s.filters, ef)
	}
}

// checkPatch validates one configPatch. A patch that sets
// http2_protocol_options.allow_connect on the inbound HTTP connection
// manager is applied (recorded in ef); any other valid patch is kept and
// reported as a warning, since wsmesh has no Envoy configuration to patch.
func (b *builder) checkPatch(loc location, path string, ef *envoyFilter, cp *configPatch) bool {
	n := len(b.errs)
	b.checkEnum(loc, path+".applyTo", cp.ApplyTo, "INVALID", "LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER",
		"ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG", "BOOTSTRAP", "LISTENER_FILTER")
	if cp.ApplyTo == "" {
		b.errf(loc, path+".applyTo", "required")
	}
	context := "ANY"
	var proxyRE *regexp.Regexp
	if m := cp.Match; m != nil {
		b.checkEnum(loc, path+".match.context", m.Context, "ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY")
		if m.Context != "" {
			context = m.Context
		}
		if m.Proxy != nil && m.Proxy.ProxyVersion != "" {
			re, err := regexp.Compile(m.Proxy.ProxyVersion)
			if err != nil {
				b.errf(loc, path+".match.proxy.proxyVersion", "invalid regular expression: %v", err)
			}
			proxyRE = re
		}
	}
	if cp.Patch == nil {
		b.errf(loc, path+".patch", "required")
	} else {
		b.checkEnum(loc, path+".patch.operation", cp.Patch.Operation, "INVALID", "MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE")
		if cp.Patch.Operation == "" {
			b.errf(loc, path+".patch.operation", "required")
		}
		if cp.Patch.Operation != "REMOVE" && cp.Patch.Value == nil && cp.Patch.Operation != "" {
			b.errf(loc, path+".patch.value", "required for operation %s", cp.Patch.Operation)
		}
	}
	if len(b.errs) > n {
		return false
	}

	notApplied := func(format string, args ...any) bool {
		b.warnf(loc, path, "not applied by wsmesh: %s", fmt.Sprintf(format, args...))
		return true
	}
	if cp.ApplyTo != "NETWORK_FILTER" {
		return notApplied("applyTo %s (wsmesh applies only the NETWORK_FILTER patch of the HTTP connection manager that sets http2_protocol_options.allow_connect)", cp.ApplyTo)
	}
	if context != "SIDECAR_INBOUND" && context != "ANY" {
		return notApplied("match.context %s (allow_connect is applied to inbound listeners only)", context)
	}
	var lm *listenerMatch
	if cp.Match != nil {
		lm = cp.Match.Listener
	}
	if lm == nil || lm.FilterChain == nil || lm.FilterChain.Filter == nil ||
		(lm.FilterChain.Filter.Name != hcmFilterName && lm.FilterChain.Filter.Name != hcmFilterLegacyName) {
		return notApplied("match.listener.filterChain.filter.name is not %s", hcmFilterName)
	}
	if cp.Patch.Operation != "MERGE" {
		return notApplied("operation %s on the HTTP connection manager (only MERGE is applied)", cp.Patch.Operation)
	}
	if proxyRE != nil && !proxyRE.MatchString(EnvoyFilterProxyVersion) {
		return notApplied("match.proxy.proxyVersion %q does not match proxy version %s", cp.Match.Proxy.ProxyVersion, EnvoyFilterProxyVersion)
	}
	value, isMap := cp.Patch.Value.(map[string]any)
	if !isMap {
		b.errf(loc, path+".patch.value", "want object, got %s", describe(cp.Patch.Value))
		return false
	}
	var tc map[string]any
	tcKey := ""
	for _, k := range sortedKeys(value) {
		if k == "typed_config" || k == "typedConfig" {
			tcKey = k
			m, isMap := value[k].(map[string]any)
			if !isMap {
				b.errf(loc, path+".patch.value."+k, "want object, got %s", describe(value[k]))
				return false
			}
			tc = m
			continue
		}
		b.warnf(loc, path+".patch.value."+k, "not applied by wsmesh")
	}
	if tc == nil {
		return notApplied("patch.value has no typed_config")
	}
	tcPath := path + ".patch.value." + tcKey
	if t, _ := tc["@type"].(string); t != hcmTypeURL {
		b.errf(loc, tcPath+"[\"@type\"]", "%s, want %s", describe(tc["@type"]), hcmTypeURL)
		return false
	}
	var opts map[string]any
	optsKey := ""
	for _, k := range sortedKeys(tc) {
		switch k {
		case "@type":
		case "http2_protocol_options", "http2ProtocolOptions":
			m, isMap := tc[k].(map[string]any)
			if !isMap {
				b.errf(loc, tcPath+"."+k, "want object, got %s", describe(tc[k]))
				return false
			}
			opts, optsKey = m, k
		default:
			b.warnf(loc, tcPath+"."+k, "not applied by wsmesh")
		}
	}
	if opts == nil {
		return notApplied("typed_config has no http2_protocol_options")
	}
	for _, k := range sortedKeys(opts) {
		if k != "allow_connect" && k != "allowConnect" {
			b.warnf(loc, tcPath+"."+optsKey+"."+k, "not applied by wsmesh")
			continue
		}
		v, isBool := opts[k].(bool)
		if !isBool {
			b.errf(loc, tcPath+"."+optsKey+"."+k, "want boolean, got %s", describe(opts[k]))
			return false
		}
		ef.allowConnect = &v
	}
	if lm.PortNumber != 0 || lm.PortName != "" {
		b.warnf(loc, path+".match.listener", "port match not applied by wsmesh: allow_connect applies to every inbound listener of the selected workloads")
	}
	return true
}

func sortedStringKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
