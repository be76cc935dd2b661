package config

// The structs in this file mirror the field names and JSON tags of the
// official Kubernetes and Istio schemas, reduced to what wsmesh reads.
// Fields typed any are known fields wsmesh does not act on: they are
// accepted without a warning and kept for the config dump. Fields absent
// here produce an "unknown field" warning.

type objectMeta struct {
	Name        string            `json:"name,omitempty"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`

	GenerateName               any `json:"generateName,omitempty"`
	UID                        any `json:"uid,omitempty"`
	ResourceVersion            any `json:"resourceVersion,omitempty"`
	Generation                 any `json:"generation,omitempty"`
	CreationTimestamp          any `json:"creationTimestamp,omitempty"`
	DeletionTimestamp          any `json:"deletionTimestamp,omitempty"`
	DeletionGracePeriodSeconds any `json:"deletionGracePeriodSeconds,omitempty"`
	OwnerReferences            any `json:"ownerReferences,omitempty"`
	Finalizers                 any `json:"finalizers,omitempty"`
	ManagedFields              any `json:"managedFields,omitempty"`
	SelfLink                   any `json:"selfLink,omitempty"`
}

// ---- Kubernetes core/v1 Service ----

type serviceDoc struct {
	APIVersion string      `json:"apiVersion,omitempty"`
	Kind       string      `json:"kind,omitempty"`
	Metadata   objectMeta  `json:"metadata,omitempty"`
	Spec       serviceSpec `json:"spec,omitempty"`
	Status     any         `json:"status,omitempty"`
}

type serviceSpec struct {
	Type       string            `json:"type,omitempty"`
	Ports      []servicePort     `json:"ports,omitempty"`
	Selector   map[string]string `json:"selector,omitempty"`
	ClusterIP  string            `json:"clusterIP,omitempty"`
	ClusterIPs []string          `json:"clusterIPs,omitempty"`

	ExternalName                  any `json:"externalName,omitempty"`
	ExternalIPs                   any `json:"externalIPs,omitempty"`
	SessionAffinity               any `json:"sessionAffinity,omitempty"`
	SessionAffinityConfig         any `json:"sessionAffinityConfig,omitempty"`
	LoadBalancerIP                any `json:"loadBalancerIP,omitempty"`
	LoadBalancerSourceRanges      any `json:"loadBalancerSourceRanges,omitempty"`
	LoadBalancerClass             any `json:"loadBalancerClass,omitempty"`
	ExternalTrafficPolicy         any `json:"externalTrafficPolicy,omitempty"`
	InternalTrafficPolicy         any `json:"internalTrafficPolicy,omitempty"`
	HealthCheckNodePort           any `json:"healthCheckNodePort,omitempty"`
	PublishNotReadyAddresses      any `json:"publishNotReadyAddresses,omitempty"`
	IPFamilies                    any `json:"ipFamilies,omitempty"`
	IPFamilyPolicy                any `json:"ipFamilyPolicy,omitempty"`
	AllocateLoadBalancerNodePorts any `json:"allocateLoadBalancerNodePorts,omitempty"`
	TrafficDistribution           any `json:"trafficDistribution,omitempty"`
}

type servicePort struct {
	Name        string       `json:"name,omitempty"`
	Protocol    string       `json:"protocol,omitempty"`
	AppProtocol string       `json:"appProtocol,omitempty"`
	Port        int          `json:"port,omitempty"`
	TargetPort  *intOrString `json:"targetPort,omitempty"`
	NodePort    any          `json:"nodePort,omitempty"`
}

// ---- Kubernetes core/v1 Pod and apps/v1 Deployment ----

type podDoc struct {
	APIVersion string     `json:"apiVersion,omitempty"`
	Kind       string     `json:"kind,omitempty"`
	Metadata   objectMeta `json:"metadata,omitempty"`
	Spec       any        `json:"spec,omitempty"`
	Status     podStatus  `json:"status,omitempty"`
}

type podStatus struct {
	_      openObject
	PodIP  string `json:"podIP,omitempty"`
	PodIPs any    `json:"podIPs,omitempty"`
}

type deploymentDoc struct {
	APIVersion string         `json:"apiVersion,omitempty"`
	Kind       string         `json:"kind,omitempty"`
	Metadata   objectMeta     `json:"metadata,omitempty"`
	Spec       deploymentSpec `json:"spec,omitempty"`
	Status     any            `json:"status,omitempty"`
}

type deploymentSpec struct {
	_        openObject
	Selector any             `json:"selector,omitempty"`
	Template podTemplateSpec `json:"template,omitempty"`
}

type podTemplateSpec struct {
	Metadata objectMeta `json:"metadata,omitempty"`
	Spec     any        `json:"spec,omitempty"`
}

// ---- Kubernetes core/v1 ConfigMap ----

type configMapDoc struct {
	APIVersion string            `json:"apiVersion,omitempty"`
	Kind       string            `json:"kind,omitempty"`
	Metadata   objectMeta        `json:"metadata,omitempty"`
	Data       map[string]string `json:"data,omitempty"`
	BinaryData any               `json:"binaryData,omitempty"`
	Immutable  any               `json:"immutable,omitempty"`
}

// ---- Kubernetes discovery.k8s.io/v1 EndpointSlice ----

type endpointSliceDoc struct {
	APIVersion  string              `json:"apiVersion,omitempty"`
	Kind        string              `json:"kind,omitempty"`
	Metadata    objectMeta          `json:"metadata,omitempty"`
	AddressType string              `json:"addressType,omitempty"`
	Endpoints   []sliceEndpoint     `json:"endpoints,omitempty"`
	Ports       []sliceEndpointPort `json:"ports,omitempty"`
}

type sliceEndpoint struct {
	Addresses          []string           `json:"addresses,omitempty"`
	Conditions         endpointConditions `json:"conditions,omitempty"`
	Hostname           any                `json:"hostname,omitempty"`
	NodeName           any                `json:"nodeName,omitempty"`
	Zone               any                `json:"zone,omitempty"`
	TargetRef          any                `json:"targetRef,omitempty"`
	Hints              any                `json:"hints,omitempty"`
	DeprecatedTopology any                `json:"deprecatedTopology,omitempty"`
}

type endpointConditions struct {
	Ready       *bool `json:"ready,omitempty"`
	Serving     *bool `json:"serving,omitempty"`
	Terminating *bool `json:"terminating,omitempty"`
}

type sliceEndpointPort struct {
	Name        *string `json:"name,omitempty"`
	Port        *int    `json:"port,omitempty"`
	Protocol    string  `json:"protocol,omitempty"`
	AppProtocol string  `json:"appProtocol,omitempty"`
}

// ---- networking.istio.io WorkloadEntry and ServiceEntry ----

type workloadEntryDoc struct {
	APIVersion string        `json:"apiVersion,omitempty"`
	Kind       string        `json:"kind,omitempty"`
	Metadata   objectMeta    `json:"metadata,omitempty"`
	Spec       workloadEntry `json:"spec,omitempty"`
	Status     any           `json:"status,omitempty"`
}

type workloadEntry struct {
	Address        string            `json:"address,omitempty"`
	Ports          map[string]int    `json:"ports,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Network        any               `json:"network,omitempty"`
	Locality       any               `json:"locality,omitempty"`
	Weight         any               `json:"weight,omitempty"`
	ServiceAccount string            `json:"serviceAccount,omitempty"`
}

type serviceEntryDoc struct {
	APIVersion string           `json:"apiVersion,omitempty"`
	Kind       string           `json:"kind,omitempty"`
	Metadata   objectMeta       `json:"metadata,omitempty"`
	Spec       serviceEntrySpec `json:"spec,omitempty"`
	Status     any              `json:"status,omitempty"`
}

type serviceEntrySpec struct {
	Hosts            []string          `json:"hosts,omitempty"`
	Addresses        []string          `json:"addresses,omitempty"`
	Ports            []istioPort       `json:"ports,omitempty"`
	Location         string            `json:"location,omitempty"`
	Resolution       string            `json:"resolution,omitempty"`
	Endpoints        []workloadEntry   `json:"endpoints,omitempty"`
	WorkloadSelector *workloadSelector `json:"workloadSelector,omitempty"`
	ExportTo         any               `json:"exportTo,omitempty"`
	SubjectAltNames  any               `json:"subjectAltNames,omitempty"`
}

// istioPort is Istio's ServicePort / SidecarPort / Port message.
type istioPort struct {
	Number     int    `json:"number,omitempty"`
	Protocol   string `json:"protocol,omitempty"`
	Name       string `json:"name,omitempty"`
	TargetPort int    `json:"targetPort,omitempty"`
}

type workloadSelector struct {
	Labels map[string]string `json:"labels,omitempty"`
}

// ---- networking.istio.io Sidecar ----

type sidecarDoc struct {
	APIVersion string      `json:"apiVersion,omitempty"`
	Kind       string      `json:"kind,omitempty"`
	Metadata   objectMeta  `json:"metadata,omitempty"`
	Spec       sidecarSpec `json:"spec,omitempty"`
	Status     any         `json:"status,omitempty"`
}

type sidecarSpec struct {
	WorkloadSelector      *workloadSelector `json:"workloadSelector,omitempty"`
	Ingress               []sidecarIngress  `json:"ingress,omitempty"`
	Egress                []sidecarEgress   `json:"egress,omitempty"`
	InboundConnectionPool any               `json:"inboundConnectionPool,omitempty"`
	OutboundTrafficPolicy any               `json:"outboundTrafficPolicy,omitempty"`
}

type sidecarIngress struct {
	Port            *istioPort `json:"port,omitempty"`
	Bind            string     `json:"bind,omitempty"`
	CaptureMode     string     `json:"captureMode,omitempty"`
	DefaultEndpoint string     `json:"defaultEndpoint,omitempty"`
	TLS             any        `json:"tls,omitempty"`
	ConnectionPool  any        `json:"connectionPool,omitempty"`
}

type sidecarEgress struct {
	Port        *istioPort `json:"port,omitempty"`
	Bind        string     `json:"bind,omitempty"`
	CaptureMode string     `json:"captureMode,omitempty"`
	Hosts       []string   `json:"hosts,omitempty"`
}

// ---- networking.istio.io DestinationRule ----

type destinationRuleDoc struct {
	APIVersion string              `json:"apiVersion,omitempty"`
	Kind       string              `json:"kind,omitempty"`
	Metadata   objectMeta          `json:"metadata,omitempty"`
	Spec       destinationRuleSpec `json:"spec,omitempty"`
	Status     any                 `json:"status,omitempty"`
}

type destinationRuleSpec struct {
	Host             string         `json:"host,omitempty"`
	TrafficPolicy    *trafficPolicy `json:"trafficPolicy,omitempty"`
	Subsets          []subset       `json:"subsets,omitempty"`
	ExportTo         any            `json:"exportTo,omitempty"`
	WorkloadSelector any            `json:"workloadSelector,omitempty"`
}

type subset struct {
	Name          string            `json:"name,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	TrafficPolicy *trafficPolicy    `json:"trafficPolicy,omitempty"`
}

type trafficPolicy struct {
	LoadBalancer      *loadBalancerSettings `json:"loadBalancer,omitempty"`
	ConnectionPool    *connectionPool       `json:"connectionPool,omitempty"`
	OutlierDetection  any                   `json:"outlierDetection,omitempty"`
	TLS               any                   `json:"tls,omitempty"`
	PortLevelSettings []portTrafficPolicy   `json:"portLevelSettings,omitempty"`
	Tunnel            any                   `json:"tunnel,omitempty"`
	ProxyProtocol     any                   `json:"proxyProtocol,omitempty"`
	RetryBudget       any                   `json:"retryBudget,omitempty"`
}

type portTrafficPolicy struct {
	Port             *portSelector         `json:"port,omitempty"`
	LoadBalancer     *loadBalancerSettings `json:"loadBalancer,omitempty"`
	ConnectionPool   *connectionPool       `json:"connectionPool,omitempty"`
	OutlierDetection any                   `json:"outlierDetection,omitempty"`
	TLS              any                   `json:"tls,omitempty"`
}

type portSelector struct {
	Number int `json:"number,omitempty"`
}

type loadBalancerSettings struct {
	Simple             string `json:"simple,omitempty"`
	ConsistentHash     any    `json:"consistentHash,omitempty"`
	LocalityLbSetting  any    `json:"localityLbSetting,omitempty"`
	WarmupDurationSecs any    `json:"warmupDurationSecs,omitempty"`
	Warmup             any    `json:"warmup,omitempty"`
}

type connectionPool struct {
	TCP  *tcpSettings  `json:"tcp,omitempty"`
	HTTP *httpSettings `json:"http,omitempty"`
}

type tcpSettings struct {
	MaxConnections        *int          `json:"maxConnections,omitempty"`
	ConnectTimeout        *duration     `json:"connectTimeout,omitempty"`
	TCPKeepalive          *tcpKeepalive `json:"tcpKeepalive,omitempty"`
	MaxConnectionDuration *duration     `json:"maxConnectionDuration,omitempty"`
	IdleTimeout           *duration     `json:"idleTimeout,omitempty"`
}

type tcpKeepalive struct {
	Probes   *int      `json:"probes,omitempty"`
	Time     *duration `json:"time,omitempty"`
	Interval *duration `json:"interval,omitempty"`
}

type httpSettings struct {
	HTTP1MaxPendingRequests  *int      `json:"http1MaxPendingRequests,omitempty"`
	HTTP2MaxRequests         *int      `json:"http2MaxRequests,omitempty"`
	MaxRequestsPerConnection *int      `json:"maxRequestsPerConnection,omitempty"`
	MaxRetries               *int      `json:"maxRetries,omitempty"`
	IdleTimeout              *duration `json:"idleTimeout,omitempty"`
	H2UpgradePolicy          string    `json:"h2UpgradePolicy,omitempty"`
	UseClientProtocol        bool      `json:"useClientProtocol,omitempty"`
	MaxConcurrentStreams     *int      `json:"maxConcurrentStreams,omitempty"`
}

// ---- networking.istio.io EnvoyFilter ----

type envoyFilterDoc struct {
	APIVersion string          `json:"apiVersion,omitempty"`
	Kind       string          `json:"kind,omitempty"`
	Metadata   objectMeta      `json:"metadata,omitempty"`
	Spec       envoyFilterSpec `json:"spec,omitempty"`
	Status     any             `json:"status,omitempty"`
}

type envoyFilterSpec struct {
	WorkloadSelector *workloadSelector `json:"workloadSelector,omitempty"`
	TargetRefs       any               `json:"targetRefs,omitempty"`
	ConfigPatches    []configPatch     `json:"configPatches,omitempty"`
	Priority         any               `json:"priority,omitempty"`
}

type configPatch struct {
	ApplyTo string        `json:"applyTo,omitempty"`
	Match   *patchMatch   `json:"match,omitempty"`
	Patch   *patchContent `json:"patch,omitempty"`
}

type patchMatch struct {
	Context            string         `json:"context,omitempty"`
	Proxy              *proxyMatch    `json:"proxy,omitempty"`
	Listener           *listenerMatch `json:"listener,omitempty"`
	RouteConfiguration any            `json:"routeConfiguration,omitempty"`
	Cluster            any            `json:"cluster,omitempty"`
}

type proxyMatch struct {
	ProxyVersion string `json:"proxyVersion,omitempty"`
	Metadata     any    `json:"metadata,omitempty"`
}

type listenerMatch struct {
	PortNumber     int               `json:"portNumber,omitempty"`
	PortName       string            `json:"portName,omitempty"`
	FilterChain    *filterChainMatch `json:"filterChain,omitempty"`
	ListenerFilter string            `json:"listenerFilter,omitempty"`
	Name           string            `json:"name,omitempty"`
}

type filterChainMatch struct {
	Name                 string       `json:"name,omitempty"`
	Sni                  string       `json:"sni,omitempty"`
	TransportProtocol    string       `json:"transportProtocol,omitempty"`
	ApplicationProtocols string       `json:"applicationProtocols,omitempty"`
	Filter               *filterMatch `json:"filter,omitempty"`
	DestinationPort      int          `json:"destinationPort,omitempty"`
}

type filterMatch struct {
	Name      string `json:"name,omitempty"`
	SubFilter any    `json:"subFilter,omitempty"`
}

type patchContent struct {
	Operation   string `json:"operation,omitempty"`
	Value       any    `json:"value,omitempty"`
	FilterClass string `json:"filterClass,omitempty"`
}

// ---- Istio MeshConfig (ConfigMap istio-system/istio, data.mesh) ----

type meshConfigDoc struct {
	_               openObject
	H2UpgradePolicy string    `json:"h2UpgradePolicy,omitempty"`
	ConnectTimeout  *duration `json:"connectTimeout,omitempty"`
	RootNamespace   string    `json:"rootNamespace,omitempty"`
	DefaultConfig   any       `json:"defaultConfig,omitempty"`
}
