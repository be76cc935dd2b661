package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/wsmesh/wsmesh/internal/config"
)

// KubeConfig says which API server KubeSource reads and how.
type KubeConfig struct {
	// REST, when set, is the client configuration used as is (tests,
	// embedding). Otherwise Kubeconfig is read.
	REST *rest.Config
	// Kubeconfig is a kubeconfig file. Empty: the in-cluster configuration
	// (the pod's service account), and outside a cluster the usual
	// $KUBECONFIG or ~/.kube/config.
	Kubeconfig string
	// Context is the kubeconfig context to use; empty: its current one.
	Context string
	// Namespaces limits what is watched to these namespaces; empty: all.
	// Istio's root namespace (istio-system) is where mesh-wide Sidecars and
	// EnvoyFilters live: name it too when limiting.
	Namespaces []string
	// MeshConfigMap is the "namespace/name" of Istio's mesh ConfigMap;
	// empty: istio-system/istio; "-": not watched.
	MeshConfigMap string
	// Debounce is how long to wait after the last change before building
	// a snapshot; 0: DefaultDebounce (100 ms).
	Debounce time.Duration
	// SyncTimeout bounds NewKubeSource's first listing of every kind;
	// 0: 60 s.
	SyncTimeout time.Duration
	// DiscoveryInterval is how often Run asks the API server again which
	// Istio kinds it serves, so CRDs installed later are picked up;
	// 0: 30 s; negative: never.
	DiscoveryInterval time.Duration
	// Resync is the informers' resync period; 0: none (watches suffice).
	Resync time.Duration
}

// KubeDocumentSource is the prefix of the synthetic file name of each
// object read from the API server: "kubernetes:Service/default/web".
const KubeDocumentSource = "kubernetes"

// kubeKind is one resource kind KubeSource watches.
type kubeKind struct {
	kind     string
	group    string
	versions []string // preferred first; the versions config.Parse accepts
	resource string
	required bool // missing or forbidden: NewKubeSource fails
}

var istioKubeVersions = []string{"v1", "v1beta1", "v1alpha3"}

var kubeKinds = []kubeKind{
	{kind: "Service", group: "", versions: []string{"v1"}, resource: "services", required: true},
	{kind: "EndpointSlice", group: "discovery.k8s.io", versions: []string{"v1"}, resource: "endpointslices", required: true},
	{kind: "Pod", group: "", versions: []string{"v1"}, resource: "pods", required: true},
	{kind: "Deployment", group: "apps", versions: []string{"v1"}, resource: "deployments"},
	{kind: "DestinationRule", group: "networking.istio.io", versions: istioKubeVersions, resource: "destinationrules"},
	{kind: "EnvoyFilter", group: "networking.istio.io", versions: []string{"v1alpha3"}, resource: "envoyfilters"},
	{kind: "ServiceEntry", group: "networking.istio.io", versions: istioKubeVersions, resource: "serviceentries"},
	{kind: "WorkloadEntry", group: "networking.istio.io", versions: istioKubeVersions, resource: "workloadentries"},
	{kind: "Sidecar", group: "networking.istio.io", versions: istioKubeVersions, resource: "sidecars"},
}

var configMapKind = kubeKind{kind: "ConfigMap", group: "", versions: []string{"v1"}, resource: "configmaps"}

// KubeSource reads the configuration from a Kubernetes API server with
// informers: Services, EndpointSlices, Pods, Deployments, Istio's
// DestinationRules, EnvoyFilters, ServiceEntries, WorkloadEntries and
// Sidecars (those the server serves; Istio's CRDs need not be installed)
// and the ConfigMap istio-system/istio. After any change (debounced) it
// writes every cached object as one YAML document named
// "kubernetes:KIND/NAMESPACE/NAME" and builds the snapshot with
// config.ParseDocuments, so the same objects give the same snapshot as
// from files. An object with errors is logged and left out; one that was
// accepted before stays in its last accepted form. When nothing valid can
// be built, the snapshot in force stays.
type KubeSource struct {
	cfg      KubeConfig
	log      *slog.Logger
	dyn      dynamic.Interface
	disco    resourceLister
	debounce time.Duration

	stop     chan struct{} // closed to stop the informers
	stopOnce sync.Once
	trigger  chan struct{}

	infMu     sync.Mutex
	informers []*kubeInformer
	watching  map[string]schema.GroupVersionResource // kind -> what is watched

	cur atomic.Pointer[config.Snapshot]

	buildMu  sync.Mutex // serializes rebuilds; guards what follows
	docs     map[string]kubeDoc
	accepted map[string][]byte // document name -> data last accepted
	logged   map[string]string // document name -> rejection last logged
	rejected map[string]string

	subscribers
}

type kubeInformer struct {
	kind string
	gvr  schema.GroupVersionResource
	ns   string
	inf  cache.SharedIndexInformer
}

// kubeDoc caches an object's document by resourceVersion.
type kubeDoc struct {
	rv   string
	data []byte
}

var _ Source = (*KubeSource)(nil)

// NewKubeSource connects to the API server, finds which kinds it serves,
// starts an informer for each and waits for their first listing (at most
// cfg.SyncTimeout), then builds the first snapshot. It fails when the
// server cannot be reached, when Services, EndpointSlices or Pods cannot
// be listed, or when the objects read give no valid snapshot. Run keeps
// it up to date; Close stops the informers when Run is never called. A nil
// log discards log output.
func NewKubeSource(cfg KubeConfig, log *slog.Logger) (*KubeSource, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rc, err := kubeRESTConfig(cfg)
	if err != nil {
		return nil, err
	}
	rc = rest.CopyConfig(rc)
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = 20, 40
	}
	if rc.UserAgent == "" {
		rc.UserAgent = "wsmesh"
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	disco, err := newHTTPDiscovery(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	return newKubeSource(cfg, log, dyn, disco)
}

// resourceLister is the part of client-go's discovery client KubeSource
// uses. client-go's discovery package is not used: it links all of
// k8s.io/api into the binary.
type resourceLister interface {
	ServerResourcesForGroupVersion(groupVersion string) (*metav1.APIResourceList, error)
}

// httpDiscovery asks the API server's discovery endpoints (/api/v1,
// /apis/GROUP/VERSION) which resources a group version serves.
type httpDiscovery struct {
	client *http.Client
	base   *url.URL
}

func newHTTPDiscovery(rc *rest.Config) (*httpDiscovery, error) {
	client, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, err
	}
	base, _, err := rest.DefaultServerUrlFor(rc)
	if err != nil {
		return nil, err
	}
	client.Timeout = 30 * time.Second
	return &httpDiscovery{client: client, base: base}, nil
}

func (d *httpDiscovery) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	path := "/apis/" + gv
	if gv == "v1" {
		path = "/api/v1"
	}
	u := *d.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "groupversion"}, gv)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s: %s: %.200s", path, resp.Status, body)
	}
	var list metav1.APIResourceList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	return &list, nil
}

func newKubeSource(cfg KubeConfig, log *slog.Logger, dyn dynamic.Interface, disco resourceLister) (*KubeSource, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = 60 * time.Second
	}
	if cfg.DiscoveryInterval == 0 {
		cfg.DiscoveryInterval = 30 * time.Second
	}
	if cfg.MeshConfigMap == "" {
		cfg.MeshConfigMap = config.IstioRootNamespace + "/istio"
	}
	if cfg.MeshConfigMap != "-" {
		if ns, name, ok := strings.Cut(cfg.MeshConfigMap, "/"); !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("kubernetes: mesh ConfigMap %q: want namespace/name", cfg.MeshConfigMap)
		}
	}
	s := &KubeSource{
		cfg: cfg, log: log, dyn: dyn, disco: disco, debounce: cfg.Debounce,
		stop:     make(chan struct{}),
		trigger:  make(chan struct{}, 1),
		watching: map[string]schema.GroupVersionResource{},
		docs:     map[string]kubeDoc{},
		accepted: map[string][]byte{},
		logged:   map[string]string{},
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.SyncTimeout)
	defer cancel()
	if err := s.discover(ctx, true); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.waitSynced(ctx); err != nil {
		s.Close()
		return nil, err
	}
	snap, err := s.build()
	if err != nil {
		s.Close()
		return nil, err
	}
	s.cur.Store(snap)
	for _, w := range snap.Warnings {
		log.Warn("config warning", "warning", w)
	}
	log.Info("config loaded from kubernetes", "version", snap.Version, "objects", len(snap.Files()),
		"kinds", s.kindsWatched(), "warnings", len(snap.Warnings))
	return s, nil
}

func kubeRESTConfig(cfg KubeConfig) (*rest.Config, error) {
	if cfg.REST != nil {
		return cfg.REST, nil
	}
	if cfg.Kubeconfig == "" && cfg.Context == "" {
		rc, err := rest.InClusterConfig()
		if err == nil {
			return rc, nil
		}
		if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("kubernetes: in-cluster configuration: %w", err)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if cfg.Kubeconfig != "" {
		rules.ExplicitPath = cfg.Kubeconfig
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: cfg.Context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: kubeconfig: %w", err)
	}
	return rc, nil
}

// Current returns the snapshot in force.
func (s *KubeSource) Current() *config.Snapshot { return s.cur.Load() }

// Rejected returns the objects left out of the snapshot in force (or kept
// in an earlier form), by document name, with their errors.
func (s *KubeSource) Rejected() map[string]string {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	out := make(map[string]string, len(s.rejected))
	for k, v := range s.rejected {
		out[k] = v
	}
	return out
}

// Watching returns the kinds watched, each with the group, version and
// resource read.
func (s *KubeSource) Watching() map[string]schema.GroupVersionResource {
	s.infMu.Lock()
	defer s.infMu.Unlock()
	out := make(map[string]schema.GroupVersionResource, len(s.watching))
	for k, v := range s.watching {
		out[k] = v
	}
	return out
}

func (s *KubeSource) kindsWatched() string {
	w := s.Watching()
	names := make([]string, 0, len(w))
	for k, gvr := range w {
		names = append(names, k+"("+strings.TrimPrefix(gvr.Group+"/"+gvr.Version, "/")+")")
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// Close stops the informers and closes the subscriber channels. Run does
// it when its context ends; Close is for a source whose Run is never
// called. It may be called more than once.
func (s *KubeSource) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.closeSubscribers()
}

// Run rebuilds the snapshot after changes until ctx ends, then stops the
// informers, closes the subscriber channels and returns nil. It can be
// called once.
func (s *KubeSource) Run(ctx context.Context) error {
	if !s.startRunning() {
		return errors.New("discovery: KubeSource.Run called twice or after Close")
	}
	defer s.Close()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var rediscover <-chan time.Time
	if s.cfg.DiscoveryInterval > 0 {
		t := time.NewTicker(s.cfg.DiscoveryInterval)
		defer t.Stop()
		rediscover = t.C
	}
	// A steady stream of changes (a busy cluster) still gets a rebuild
	// at least every maxWait.
	maxWait := 10 * s.debounce
	var pendingSince time.Time
	pending := func() {
		now := time.Now()
		if pendingSince.IsZero() {
			pendingSince = now
		}
		wait := s.debounce
		if left := pendingSince.Add(maxWait).Sub(now); left < wait {
			wait = max(left, 0)
		}
		timer.Reset(wait)
	}
	// Changes between NewKubeSource's build and now.
	pending()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.trigger:
			pending()
		case <-timer.C:
			pendingSince = time.Time{}
			s.Reload()
		case <-rediscover:
			dctx, cancel := context.WithTimeout(ctx, s.cfg.SyncTimeout)
			if err := s.discover(dctx, false); err != nil {
				s.log.Warn("kubernetes discovery failed", "error", err)
			}
			cancel()
		}
	}
}

// Reload builds a snapshot from the objects cached now and, when it
// differs from the one in force, swaps it in and tells subscribers.
func (s *KubeSource) Reload() {
	snap, err := s.build()
	if err != nil {
		old := s.Current()
		s.log.Error("config rebuild from kubernetes failed; keeping the configuration in force",
			"version", old.Version, "error", err.Error())
		return
	}
	old := s.Current()
	if old != nil && old.Version == snap.Version {
		return
	}
	for _, w := range snap.Warnings {
		s.log.Warn("config warning", "warning", w)
	}
	s.cur.Store(snap)
	prev := ""
	if old != nil {
		prev = old.Version
	}
	s.log.Info("config reloaded from kubernetes", "version", snap.Version, "previous", prev,
		"objects", len(snap.Files()), "warnings", len(snap.Warnings))
	s.publish(snap)
}

func (s *KubeSource) poke() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// discover finds the served version of each kind not watched yet and
// starts its informers. initial: a required kind that is missing or
// forbidden is an error; later, kinds are only added.
func (s *KubeSource) discover(ctx context.Context, initial bool) error {
	served := map[string][]metav1.APIResource{} // group/version -> resources
	lookup := func(gv string) ([]metav1.APIResource, error) {
		if r, ok := served[gv]; ok {
			return r, nil
		}
		list, err := s.disco.ServerResourcesForGroupVersion(gv)
		if err != nil {
			if apierrors.IsNotFound(err) {
				served[gv] = nil
				return nil, nil
			}
			return nil, err
		}
		served[gv] = list.APIResources
		return list.APIResources, nil
	}
	find := func(k kubeKind) (schema.GroupVersionResource, bool, error) {
		for _, v := range k.versions {
			gv := strings.TrimPrefix(k.group+"/"+v, "/")
			res, err := lookup(gv)
			if err != nil {
				return schema.GroupVersionResource{}, false, fmt.Errorf("kubernetes: discovery of %s: %w", gv, err)
			}
			for _, r := range res {
				if r.Name == k.resource && r.Kind == k.kind && slices.Contains(r.Verbs, "watch") {
					return schema.GroupVersionResource{Group: k.group, Version: v, Resource: k.resource}, true, nil
				}
			}
		}
		return schema.GroupVersionResource{}, false, nil
	}

	namespaces := s.cfg.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	var errs []error
	for _, k := range kubeKinds {
		if s.isWatching(k.kind) {
			continue
		}
		gvr, ok, err := find(k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			if k.required && initial {
				errs = append(errs, fmt.Errorf("kubernetes: the API server does not serve %s (%s %s)", k.kind, k.group, strings.Join(k.versions, ", ")))
			} else if initial {
				s.log.Info("kubernetes: kind not served, not watched (its CRD is not installed?)", "kind", k.kind, "group", k.group)
			}
			continue
		}
		if err := s.canList(ctx, gvr, namespaces[0], ""); err != nil {
			if k.required {
				errs = append(errs, fmt.Errorf("kubernetes: cannot list %s: %w", k.resource, err))
			} else if initial || !apierrors.IsForbidden(err) {
				s.log.Warn("kubernetes: kind not watched", "kind", k.kind, "error", err)
			}
			continue
		}
		for _, ns := range namespaces {
			s.startInformer(k.kind, gvr, ns, nil)
		}
		if !initial {
			s.log.Info("kubernetes: now watching", "kind", k.kind, "version", gvr.Version)
		}
	}
	if s.cfg.MeshConfigMap != "-" && !s.isWatching(configMapKind.kind) {
		ns, name, _ := strings.Cut(s.cfg.MeshConfigMap, "/")
		gvr := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
		sel := "metadata.name=" + name
		if err := s.canList(ctx, gvr, ns, sel); err != nil {
			if initial {
				s.log.Warn("kubernetes: mesh ConfigMap not watched", "configmap", s.cfg.MeshConfigMap, "error", err)
			}
		} else {
			s.startInformer(configMapKind.kind, gvr, ns, func(o *metav1.ListOptions) { o.FieldSelector = sel })
		}
	}
	return errors.Join(errs...)
}

func (s *KubeSource) isWatching(kind string) bool {
	s.infMu.Lock()
	defer s.infMu.Unlock()
	_, ok := s.watching[kind]
	return ok
}

// canList checks access with a one-item list, so a forbidden kind is
// reported at once instead of by informers retrying forever.
func (s *KubeSource) canList(ctx context.Context, gvr schema.GroupVersionResource, ns, fieldSelector string) error {
	_, err := s.dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{Limit: 1, FieldSelector: fieldSelector})
	return err
}

func (s *KubeSource) startInformer(kind string, gvr schema.GroupVersionResource, ns string, tweak func(*metav1.ListOptions)) {
	// Not dynamicinformer: it imports every typed informer of
	// k8s.io/client-go/informers, and with them all of k8s.io/api.
	ri := s.dyn.Resource(gvr).Namespace(ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			if tweak != nil {
				tweak(&o)
			}
			return ri.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			if tweak != nil {
				tweak(&o)
			}
			return ri.Watch(ctx, o)
		},
	}
	// As dynamicinformer does: clients that cannot stream lists (the fake
	// one of the tests) say so, and then get plain list and watch.
	inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, s.dyn), &unstructured.Unstructured{},
		cache.SharedIndexInformerOptions{ResyncPeriod: s.cfg.Resync, ObjectDescription: gvr.String()})
	_ = inf.SetTransform(leanObject(kind))
	_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		s.log.Warn("kubernetes watch error; retrying", "kind", kind, "namespace", ns, "error", err)
	})
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.poke() },
		UpdateFunc: func(any, any) { s.poke() },
		DeleteFunc: func(any) { s.poke() },
	})
	s.infMu.Lock()
	s.informers = append(s.informers, &kubeInformer{kind: kind, gvr: gvr, ns: ns, inf: inf})
	s.watching[kind] = gvr
	s.infMu.Unlock()
	go inf.Run(s.stop)
}

func (s *KubeSource) waitSynced(ctx context.Context) error {
	s.infMu.Lock()
	infs := slices.Clone(s.informers)
	s.infMu.Unlock()
	done := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-s.stop:
		case <-done:
		}
		close(stop)
	}()
	defer close(done)
	var pending []string
	for _, ki := range infs {
		if !cache.WaitForCacheSync(stop, ki.inf.HasSynced) {
			pending = append(pending, ki.kind)
		}
	}
	if len(pending) > 0 {
		return fmt.Errorf("kubernetes: first listing of %s not done within %s", strings.Join(pending, ", "), s.cfg.SyncTimeout)
	}
	return nil
}

// documents returns one document per cached object, sorted by name.
func (s *KubeSource) documents() []config.Document {
	s.infMu.Lock()
	infs := slices.Clone(s.informers)
	s.infMu.Unlock()
	seen := map[string]bool{}
	var docs []config.Document
	for _, ki := range infs {
		for _, obj := range ki.inf.GetStore().List() {
			u, ok := obj.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			name := config.ObjectDocumentName(KubeDocumentSource, ki.kind, u.GetNamespace(), u.GetName())
			if seen[name] {
				continue
			}
			seen[name] = true
			rv := u.GetResourceVersion()
			if d, ok := s.docs[name]; ok && rv != "" && d.rv == rv {
				docs = append(docs, config.Document{Name: name, Data: d.data})
				continue
			}
			data, err := kubeObjectYAML(u, ki.gvr, ki.kind)
			if err != nil {
				s.log.Error("kubernetes object not serializable, skipped", "object", name, "error", err)
				continue
			}
			s.docs[name] = kubeDoc{rv: rv, data: data}
			docs = append(docs, config.Document{Name: name, Data: data})
		}
	}
	for name := range s.docs {
		if !seen[name] {
			delete(s.docs, name)
		}
	}
	sort.Slice(docs, func(i, j int) bool { return docs[i].Name < docs[j].Name })
	return docs
}

// build makes a snapshot of the cached objects, leaving out invalid ones.
func (s *KubeSource) build() (*config.Snapshot, error) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	docs := s.documents()
	snap, rejected, err := config.ParseDocumentsSkipping(docs, s.accepted)
	if err != nil {
		return nil, err
	}
	present := make(map[string]bool, len(docs))
	for _, d := range docs {
		present[d.Name] = true
		if _, bad := rejected[d.Name]; !bad {
			s.accepted[d.Name] = d.Data
		}
	}
	for name := range s.accepted {
		if !present[name] {
			delete(s.accepted, name)
		}
	}
	s.rejected = map[string]string{}
	for name, rerr := range rejected {
		msg := rerr.Error()
		s.rejected[name] = msg
		if s.logged[name] == msg {
			continue
		}
		s.logged[name] = msg
		if _, kept := s.accepted[name]; kept {
			s.log.Error("kubernetes object invalid; its previous version stays in force", "object", name, "error", msg)
		} else {
			s.log.Error("kubernetes object invalid; left out", "object", name, "error", msg)
		}
	}
	for name := range s.logged {
		if _, still := rejected[name]; !still {
			delete(s.logged, name)
		}
	}
	return snap, nil
}

// lastApplied is kubectl's annotation with a copy of the whole object.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// leanObject drops from cached objects what wsmesh never reads and what
// changes often without meaning anything to it: managed fields, kubectl's
// copy of the object, status (but a Pod's IP addresses) and the parts of a
// Pod's spec other than its service account. Less memory, fewer rebuilds.
func leanObject(kind string) cache.TransformFunc {
	return func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil
		}
		u.SetManagedFields(nil)
		if ann := u.GetAnnotations(); ann != nil {
			if _, ok := ann[lastApplied]; ok {
				delete(ann, lastApplied)
				if len(ann) == 0 {
					ann = nil
				}
				u.SetAnnotations(ann)
			}
		}
		switch kind {
		case "Pod":
			status := map[string]any{}
			if st, ok := u.Object["status"].(map[string]any); ok {
				for _, k := range []string{"podIP", "podIPs"} {
					if v, ok := st[k]; ok {
						status[k] = v
					}
				}
			}
			if len(status) > 0 {
				u.Object["status"] = status
			} else {
				delete(u.Object, "status")
			}
			if spec, ok := u.Object["spec"].(map[string]any); ok {
				lean := map[string]any{}
				if sa, ok := spec["serviceAccountName"]; ok {
					lean["serviceAccountName"] = sa
				}
				u.Object["spec"] = lean
			}
		case "Deployment":
			delete(u.Object, "status")
			if tpl, ok, _ := unstructured.NestedMap(u.Object, "spec", "template"); ok {
				lean := map[string]any{}
				if md, ok := tpl["metadata"]; ok {
					lean["metadata"] = md
				}
				if sa, ok, _ := unstructured.NestedString(tpl, "spec", "serviceAccountName"); ok {
					lean["spec"] = map[string]any{"serviceAccountName": sa}
				}
				_ = unstructured.SetNestedMap(u.Object, lean, "spec", "template")
			}
		default:
			delete(u.Object, "status")
		}
		return u, nil
	}
}

// kubeObjectYAML writes an object as a YAML document without the
// metadata that changes on every write (resourceVersion, generation...).
func kubeObjectYAML(u *unstructured.Unstructured, gvr schema.GroupVersionResource, kind string) ([]byte, error) {
	obj := make(map[string]any, len(u.Object)+2)
	for k, v := range u.Object {
		obj[k] = v
	}
	obj["apiVersion"] = strings.TrimPrefix(gvr.Group+"/"+gvr.Version, "/")
	obj["kind"] = kind
	if md, ok := u.Object["metadata"].(map[string]any); ok {
		lean := make(map[string]any, len(md))
		for k, v := range md {
			switch k {
			case "resourceVersion", "generation", "uid", "creationTimestamp", "managedFields", "selfLink":
				continue
			}
			lean[k] = v
		}
		obj["metadata"] = lean
	}
	return yaml.Marshal(obj)
}
