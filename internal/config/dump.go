package config

import "slices"

// Dump returns the effective configuration as a JSON-serializable value
// for the admin endpoint /config_dump: mesh settings, workloads with
// their listeners and allow_connect decision, clusters with endpoints
// and resolved traffic policy, and the DestinationRules, Sidecars and
// EnvoyFilters they came from.
func (s *Snapshot) Dump() any {
	d := dumpRoot{
		Version:  s.Version,
		Files:    slices.Clone(s.files),
		Warnings: slices.Clone(s.Warnings),
		Mesh: dumpMesh{
			H2UpgradePolicy: s.mesh.H2UpgradePolicy,
			ConnectTimeout:  s.mesh.ConnectTimeout.String(),
			RootNamespace:   s.mesh.RootNamespace,
			Source:          s.mesh.Source,
		},
		Workloads:        []dumpWorkload{},
		Clusters:         []dumpCluster{},
		DestinationRules: []dumpRule{},
		Sidecars:         []dumpSidecar{},
		EnvoyFilters:     []dumpFilter{},
	}
	for _, w := range s.workloads {
		out, in := s.Listeners(w)
		allow, src := s.AllowConnect(w)
		dw := dumpWorkload{
			Kind: w.Kind, Name: w.Name, Namespace: w.Namespace, Labels: w.Labels, Address: w.Address,
			ServiceAccount: w.ServiceAccount, Outbound: dumpListeners(out), Inbound: dumpListeners(in),
			AllowConnect: allow, AllowConnectSource: src,
		}
		if sc := s.sidecarFor(w); sc != nil {
			dw.Sidecar = nsName(sc.ns, sc.name)
		}
		d.Workloads = append(d.Workloads, dw)
	}
	for _, c := range s.clusters {
		eps := make([]dumpEndpoint, len(c.Endpoints))
		for i, e := range c.Endpoints {
			eps[i] = dumpEndpoint{Address: e.Address, Labels: e.Labels}
		}
		p := c.Policy
		dp := dumpPolicy{
			H2Upgrade: p.H2Upgrade, H2UpgradeSource: p.H2UpgradeSource, UseClientProtocol: p.UseClientProtocol,
			ConnectTimeout: p.ConnectTimeout.String(), MaxConnections: p.MaxConnections,
			MaxConcurrentStreams: p.MaxConcurrentStreams, MaxRequestsPerConnection: p.MaxRequestsPerConnection,
			MaxPendingRequests: p.MaxPendingRequests, MaxRequests: p.MaxRequests,
			LoadBalancer: p.LoadBalancer, DestinationRule: p.DestinationRule,
		}
		if p.IdleTimeout > 0 {
			dp.IdleTimeout = p.IdleTimeout.String()
		}
		if k := p.TCPKeepalive; k != nil {
			dp.TCPKeepalive = &dumpKeepalive{Probes: k.Probes, Time: k.Time.String(), Interval: k.Interval.String()}
		}
		d.Clusters = append(d.Clusters, dumpCluster{
			Name: c.Name, Host: c.Host, Service: c.Service, Namespace: c.Namespace, Kind: c.Kind,
			Port: c.Port, PortName: c.PortName, Protocol: c.Protocol.String(), Resolution: c.Resolution,
			Endpoints: eps, Policy: dp,
		})
	}
	for _, r := range s.rules {
		dr := dumpRule{Name: r.name, Namespace: r.ns, Host: r.host, Source: r.loc.String(), TrafficPolicy: r.policy}
		for _, ss := range r.subsets {
			dr.Subsets = append(dr.Subsets, dumpSubset{Name: ss.Name, Labels: ss.Labels, TrafficPolicy: ss.TrafficPolicy})
		}
		d.DestinationRules = append(d.DestinationRules, dr)
	}
	for _, sc := range s.sidecars {
		d.Sidecars = append(d.Sidecars, dumpSidecar{Name: sc.name, Namespace: sc.ns, Source: sc.loc.String(),
			WorkloadSelector: sc.selector, Ingress: sc.ingress, Egress: sc.egress})
	}
	for _, f := range s.filters {
		d.EnvoyFilters = append(d.EnvoyFilters, dumpFilter{Name: f.name, Namespace: f.ns, Source: f.loc.String(),
			WorkloadSelector: f.selector, Priority: f.priority, AllowConnect: f.allowConnect, ConfigPatches: f.patches})
	}
	return d
}

type dumpRoot struct {
	Version          string         `json:"version"`
	Files            []string       `json:"files"`
	Warnings         []string       `json:"warnings,omitempty"`
	Mesh             dumpMesh       `json:"mesh"`
	Workloads        []dumpWorkload `json:"workloads"`
	Clusters         []dumpCluster  `json:"clusters"`
	DestinationRules []dumpRule     `json:"destinationRules"`
	Sidecars         []dumpSidecar  `json:"sidecars"`
	EnvoyFilters     []dumpFilter   `json:"envoyFilters"`
}

type dumpMesh struct {
	H2UpgradePolicy string `json:"h2UpgradePolicy"`
	ConnectTimeout  string `json:"connectTimeout"`
	RootNamespace   string `json:"rootNamespace"`
	Source          string `json:"source"`
}

type dumpWorkload struct {
	Kind               string            `json:"kind"`
	Name               string            `json:"name"`
	Namespace          string            `json:"namespace"`
	Labels             map[string]string `json:"labels,omitempty"`
	Address            string            `json:"address,omitempty"`
	ServiceAccount     string            `json:"serviceAccount,omitempty"`
	Sidecar            string            `json:"sidecar,omitempty"`
	Outbound           []dumpListener    `json:"outboundListeners"`
	Inbound            []dumpListener    `json:"inboundListeners"`
	AllowConnect       bool              `json:"allowConnect"`
	AllowConnectSource string            `json:"allowConnectSource,omitempty"`
}

type dumpListener struct {
	Name            string   `json:"name"`
	Address         string   `json:"address"`
	Port            int      `json:"port"`
	Protocol        string   `json:"protocol"`
	PortName        string   `json:"portName,omitempty"`
	DefaultEndpoint string   `json:"defaultEndpoint,omitempty"`
	Hosts           []string `json:"hosts,omitempty"`
}

func dumpListeners(ls []Listener) []dumpListener {
	out := make([]dumpListener, len(ls))
	for i, l := range ls {
		out[i] = dumpListener{Name: l.Name, Address: l.Bind, Port: l.Port, Protocol: l.Protocol.String(),
			PortName: l.PortName, DefaultEndpoint: l.DefaultEndpoint, Hosts: l.Hosts}
	}
	return out
}

type dumpCluster struct {
	Name       string         `json:"name"`
	Host       string         `json:"host"`
	Service    string         `json:"service"`
	Namespace  string         `json:"namespace"`
	Kind       string         `json:"kind"`
	Port       int            `json:"port"`
	PortName   string         `json:"portName,omitempty"`
	Protocol   string         `json:"protocol"`
	Resolution string         `json:"resolution,omitempty"`
	Endpoints  []dumpEndpoint `json:"endpoints"`
	Policy     dumpPolicy     `json:"trafficPolicy"`
}

type dumpEndpoint struct {
	Address string            `json:"address"`
	Labels  map[string]string `json:"labels,omitempty"`
}

type dumpPolicy struct {
	H2Upgrade                bool           `json:"h2Upgrade"`
	H2UpgradeSource          string         `json:"h2UpgradeSource"`
	UseClientProtocol        bool           `json:"useClientProtocol,omitempty"`
	ConnectTimeout           string         `json:"connectTimeout"`
	MaxConnections           int            `json:"maxConnections,omitempty"`
	MaxConcurrentStreams     int            `json:"maxConcurrentStreams,omitempty"`
	MaxRequestsPerConnection int            `json:"maxRequestsPerConnection,omitempty"`
	MaxPendingRequests       int            `json:"http1MaxPendingRequests,omitempty"`
	MaxRequests              int            `json:"http2MaxRequests,omitempty"`
	IdleTimeout              string         `json:"idleTimeout,omitempty"`
	TCPKeepalive             *dumpKeepalive `json:"tcpKeepalive,omitempty"`
	LoadBalancer             string         `json:"loadBalancer"`
	DestinationRule          string         `json:"destinationRule,omitempty"`
}

type dumpKeepalive struct {
	Probes   int    `json:"probes,omitempty"`
	Time     string `json:"time"`
	Interval string `json:"interval"`
}

type dumpRule struct {
	Name          string         `json:"name"`
	Namespace     string         `json:"namespace"`
	Host          string         `json:"host"`
	Source        string         `json:"source"`
	TrafficPolicy *trafficPolicy `json:"trafficPolicy,omitempty"`
	Subsets       []dumpSubset   `json:"subsets,omitempty"`
}

type dumpSubset struct {
	Name          string            `json:"name"`
	Labels        map[string]string `json:"labels,omitempty"`
	TrafficPolicy *trafficPolicy    `json:"trafficPolicy,omitempty"`
}

type dumpSidecar struct {
	Name             string            `json:"name"`
	Namespace        string            `json:"namespace"`
	Source           string            `json:"source"`
	WorkloadSelector map[string]string `json:"workloadSelector,omitempty"`
	Ingress          []sidecarIngress  `json:"ingress,omitempty"`
	Egress           []sidecarEgress   `json:"egress,omitempty"`
}

type dumpFilter struct {
	Name             string            `json:"name"`
	Namespace        string            `json:"namespace"`
	Source           string            `json:"source"`
	WorkloadSelector map[string]string `json:"workloadSelector,omitempty"`
	Priority         int               `json:"priority,omitempty"`
	AllowConnect     *bool             `json:"allowConnect,omitempty"`
	ConfigPatches    []configPatch     `json:"configPatches"`
}
