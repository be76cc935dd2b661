// Package inject adds the wsmesh sidecar to Kubernetes manifests, as
// istioctl kube-inject does for Istio: each Pod, and the pod template of
// each Deployment, StatefulSet, DaemonSet and ReplicaSet (also inside a
// List), gets the wsmesh-proxy container (wsmesh sidecar in interception
// mode, uid 1337) and the wsmesh-init init container (wsmesh
// init-iptables, NET_ADMIN and NET_RAW), and is marked with the annotation
// sidecar.wsmesh.io/status.
//
// Editing works on the YAML node tree, so everything else in a document
// stays as written: unknown fields, field order, comments, quoting.
// Documents that are not injected (other kinds, already injected, opted
// out) are copied byte for byte. Injecting twice changes nothing.
package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	yaml "go.yaml.in/yaml/v3"
	k8syaml "sigs.k8s.io/yaml"
)

// Names and ports of what is injected.
const (
	// StatusAnnotation marks an injected pod template; its value is JSON
	// naming what was added.
	StatusAnnotation = "sidecar.wsmesh.io/status"
	// InjectAnnotation set to "false" on a pod (template) opts it out.
	InjectAnnotation = "sidecar.wsmesh.io/inject"

	ProxyContainer  = "wsmesh-proxy"
	InitContainer   = "wsmesh-init"
	ConfigVolume    = "wsmesh-config"
	ConfigMountPath = "/etc/wsmesh/config"

	ProxyUID     = 1337
	OutboundPort = 15001
	InboundPort  = 15006
	AdminPort    = 15000
)

// DefaultImage is the image used when Options.Image is empty.
const DefaultImage = "wsmesh:latest"

// Options says what to inject.
type Options struct {
	// Image of both injected containers (it holds the wsmesh binary and
	// iptables). Default DefaultImage.
	Image string
	// ImagePullPolicy of both containers; default IfNotPresent.
	ImagePullPolicy string
	// ConfigMap holding the mesh configuration (the YAML wsmesh sidecar
	// --config reads), mounted read-only at ConfigMountPath. "" mounts
	// nothing and passes no --config.
	ConfigMap string
	// WorkloadFromPod names the workload by the pod's own name
	// ($(POD_NAMESPACE)/$(POD_NAME)) also for pod templates. By default a
	// template names its owner (Deployment, ...), which the configuration
	// in the ConfigMap can contain; a Pod always names itself.
	WorkloadFromPod bool
	// SidecarArgs are appended to the wsmesh-proxy arguments.
	SidecarArgs []string
	// InitArgs are appended to the wsmesh-init arguments (for example
	// --exclude-outbound-cidrs=...).
	InitArgs []string
}

// DefaultOptions returns the defaults: image DefaultImage, IfNotPresent,
// ConfigMap wsmesh-config.
func DefaultOptions() Options {
	return Options{Image: DefaultImage, ImagePullPolicy: "IfNotPresent", ConfigMap: ConfigVolume}
}

// Result is the output of Inject with what it did.
type Result struct {
	Output []byte
	// Injected names each injected workload ("Deployment default/web").
	Injected []string
	// Skipped names each pod or template left unchanged, with the reason.
	Skipped []string
}

// templatePaths maps a workload kind to the path of its pod template.
var templatePaths = map[string][]string{
	"Pod":         nil, // the document itself
	"Deployment":  {"spec", "template"},
	"StatefulSet": {"spec", "template"},
	"DaemonSet":   {"spec", "template"},
	"ReplicaSet":  {"spec", "template"},
}

// Inject adds the sidecar to every pod and pod template in the
// (multi-document) YAML in. Documents are separated by "---" lines, which
// are kept as written.
func Inject(in []byte, opts Options) (Result, error) {
	if opts.Image == "" {
		opts.Image = DefaultImage
	}
	if opts.ImagePullPolicy == "" {
		opts.ImagePullPolicy = "IfNotPresent"
	}
	var res Result
	var out bytes.Buffer
	for i, d := range splitDocuments(in) {
		out.WriteString(d.separator)
		changed, err := injectDocument(d.body, i+1, opts, &res)
		if err != nil {
			return Result{}, err
		}
		if changed == nil {
			out.WriteString(d.body)
			continue
		}
		out.Write(changed)
	}
	res.Output = out.Bytes()
	return res, nil
}

// document is one YAML document: the separator line that opened it (""
// for the first) and its text.
type document struct{ separator, body string }

func splitDocuments(in []byte) []document {
	var docs []document
	cur := document{}
	var body strings.Builder
	for _, line := range strings.SplitAfter(string(in), "\n") {
		if isSeparator(line) {
			cur.body = body.String()
			docs = append(docs, cur)
			cur = document{separator: line}
			body.Reset()
			continue
		}
		body.WriteString(line)
	}
	cur.body = body.String()
	return append(docs, cur)
}

func isSeparator(line string) bool {
	l := strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(l, "---") {
		return false
	}
	rest := l[3:]
	return rest == "" || rest[0] == ' ' || rest[0] == '\t'
}

// injectDocument returns the new text of a document, or nil to keep it.
func injectDocument(body string, index int, opts Options, res *Result) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(body), &root); err != nil {
		return nil, fmt.Errorf("document %d: %w", index, err)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, nil // empty, comments only, or not an object
	}
	changed, err := injectObject(root.Content[0], fmt.Sprintf("document %d", index), opts, res)
	if err != nil || !changed {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, fmt.Errorf("document %d: %w", index, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("document %d: %w", index, err)
	}
	// Check that the result parses as Kubernetes tools read it.
	if _, err := k8syaml.YAMLToJSON(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("document %d: injected output does not parse: %w", index, err)
	}
	return buf.Bytes(), nil
}

// injectObject injects into one object (a List's items included) and
// reports whether anything changed.
func injectObject(obj *yaml.Node, where string, opts Options, res *Result) (bool, error) {
	kind := scalar(get(obj, "kind"))
	name := scalar(get(get(obj, "metadata"), "name"))
	ns := scalar(get(get(obj, "metadata"), "namespace"))
	id := kind + " " + name
	if ns != "" {
		id = kind + " " + ns + "/" + name
	}
	if kind == "List" || strings.HasSuffix(kind, "List") {
		items := get(obj, "items")
		if items == nil || items.Kind != yaml.SequenceNode {
			return false, nil
		}
		changed := false
		for i, it := range items.Content {
			if it.Kind != yaml.MappingNode {
				continue
			}
			c, err := injectObject(it, fmt.Sprintf("%s items[%d]", where, i), opts, res)
			if err != nil {
				return false, err
			}
			changed = changed || c
		}
		return changed, nil
	}
	path, ok := templatePaths[kind]
	if !ok {
		if kind == "Job" || kind == "CronJob" {
			res.Skipped = append(res.Skipped, id+": a Job would never complete with a sidecar running; not injected")
		}
		return false, nil
	}
	tmpl := obj
	for _, key := range path {
		tmpl = get(tmpl, key)
		if tmpl == nil || tmpl.Kind != yaml.MappingNode {
			return false, fmt.Errorf("%s (%s): %s is missing or not an object", where, id, strings.Join(path, "."))
		}
	}
	spec := get(tmpl, "spec")
	if spec == nil || spec.Kind != yaml.MappingNode {
		return false, fmt.Errorf("%s (%s): pod spec is missing or not an object", where, id)
	}
	meta := get(tmpl, "metadata")
	annotations := get(meta, "annotations")
	switch {
	case get(annotations, StatusAnnotation) != nil:
		res.Skipped = append(res.Skipped, id+": already injected ("+StatusAnnotation+")")
		return false, nil
	case strings.EqualFold(scalar(get(annotations, InjectAnnotation)), "false"):
		res.Skipped = append(res.Skipped, id+": "+InjectAnnotation+" is false")
		return false, nil
	case scalar(get(spec, "hostNetwork")) == "true":
		res.Skipped = append(res.Skipped, id+": hostNetwork pods share the node's network; not injected")
		return false, nil
	case hasNamed(get(spec, "containers"), ProxyContainer) || hasNamed(get(spec, "initContainers"), InitContainer):
		res.Skipped = append(res.Skipped, id+": already has "+ProxyContainer+" or "+InitContainer)
		return false, nil
	}

	workload := "$(POD_NAMESPACE)/$(POD_NAME)"
	if kind != "Pod" && !opts.WorkloadFromPod {
		if name == "" {
			return false, fmt.Errorf("%s: %s without metadata.name", where, kind)
		}
		workload = "$(POD_NAMESPACE)/" + name
	}
	status := map[string]any{
		"initContainers": []string{InitContainer},
		"containers":     []string{ProxyContainer},
		"image":          opts.Image,
	}
	if opts.ConfigMap != "" {
		status["volumes"] = []string{ConfigVolume}
	}
	statusJSON, err := json.Marshal(status)
	if err != nil {
		return false, err
	}

	if meta == nil {
		meta = &yaml.Node{Kind: yaml.MappingNode}
		setKey(tmpl, "metadata", meta, 0)
	}
	if annotations == nil || annotations.Kind != yaml.MappingNode {
		annotations = &yaml.Node{Kind: yaml.MappingNode}
		setKey(meta, "annotations", annotations, -1)
	}
	setKey(annotations, StatusAnnotation, &yaml.Node{Kind: yaml.ScalarNode, Value: string(statusJSON), Style: yaml.SingleQuotedStyle}, -1)

	if err := appendItem(spec, "initContainers", initContainer(opts)); err != nil {
		return false, fmt.Errorf("%s (%s): %w", where, id, err)
	}
	if err := appendItem(spec, "containers", proxyContainer(opts, workload)); err != nil {
		return false, fmt.Errorf("%s (%s): %w", where, id, err)
	}
	if opts.ConfigMap != "" && !hasNamed(get(spec, "volumes"), ConfigVolume) {
		vol := volume{Name: ConfigVolume, ConfigMap: &configMapSource{Name: opts.ConfigMap}}
		if err := appendItem(spec, "volumes", vol); err != nil {
			return false, fmt.Errorf("%s (%s): %w", where, id, err)
		}
	}
	res.Injected = append(res.Injected, id)
	return true, nil
}

// ---- the injected objects, as ordered structs ----

type container struct {
	Name            string           `yaml:"name"`
	Image           string           `yaml:"image"`
	ImagePullPolicy string           `yaml:"imagePullPolicy,omitempty"`
	Args            []string         `yaml:"args"`
	Env             []envVar         `yaml:"env,omitempty"`
	Ports           []containerPort  `yaml:"ports,omitempty"`
	ReadinessProbe  *probe           `yaml:"readinessProbe,omitempty"`
	Resources       *resources       `yaml:"resources,omitempty"`
	SecurityContext *securityContext `yaml:"securityContext"`
	VolumeMounts    []volumeMount    `yaml:"volumeMounts,omitempty"`
}

type envVar struct {
	Name      string `yaml:"name"`
	ValueFrom struct {
		FieldRef struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port int    `yaml:"port"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

type resources struct {
	Requests map[string]string `yaml:"requests,omitempty"`
	Limits   map[string]string `yaml:"limits,omitempty"`
}

type securityContext struct {
	RunAsUser                int64         `yaml:"runAsUser"`
	RunAsGroup               int64         `yaml:"runAsGroup"`
	RunAsNonRoot             bool          `yaml:"runAsNonRoot"`
	Privileged               bool          `yaml:"privileged"`
	AllowPrivilegeEscalation bool          `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   bool          `yaml:"readOnlyRootFilesystem"`
	Capabilities             *capabilities `yaml:"capabilities"`
}

type capabilities struct {
	Add  []string `yaml:"add,omitempty"`
	Drop []string `yaml:"drop,omitempty"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type volume struct {
	Name      string           `yaml:"name"`
	ConfigMap *configMapSource `yaml:"configMap"`
}

type configMapSource struct {
	Name string `yaml:"name"`
}

func env(name, fieldPath string) envVar {
	var e envVar
	e.Name = name
	e.ValueFrom.FieldRef.FieldPath = fieldPath
	return e
}

func proxyContainer(opts Options, workload string) container {
	args := []string{"sidecar", "--workload", workload, "--intercept", "--admin", fmt.Sprintf("0.0.0.0:%d", AdminPort)}
	var mounts []volumeMount
	if opts.ConfigMap != "" {
		args = append(args, "--config", ConfigMountPath)
		mounts = []volumeMount{{Name: ConfigVolume, MountPath: ConfigMountPath, ReadOnly: true}}
	}
	args = append(args, opts.SidecarArgs...)
	p := &probe{InitialDelaySeconds: 1, PeriodSeconds: 2, FailureThreshold: 30}
	p.HTTPGet.Path, p.HTTPGet.Port = "/ready", AdminPort
	return container{
		Name: ProxyContainer, Image: opts.Image, ImagePullPolicy: opts.ImagePullPolicy,
		Args: args,
		Env:  []envVar{env("POD_NAME", "metadata.name"), env("POD_NAMESPACE", "metadata.namespace")},
		Ports: []containerPort{
			{Name: "wsmesh-outbound", ContainerPort: OutboundPort, Protocol: "TCP"},
			{Name: "wsmesh-inbound", ContainerPort: InboundPort, Protocol: "TCP"},
			{Name: "wsmesh-admin", ContainerPort: AdminPort, Protocol: "TCP"},
		},
		ReadinessProbe: p,
		Resources:      &resources{Requests: map[string]string{"cpu": "10m", "memory": "32Mi"}},
		SecurityContext: &securityContext{
			RunAsUser: ProxyUID, RunAsGroup: ProxyUID, RunAsNonRoot: true,
			ReadOnlyRootFilesystem: true, Capabilities: &capabilities{Drop: []string{"ALL"}},
		},
		VolumeMounts: mounts,
	}
}

func initContainer(opts Options) container {
	args := []string{
		"init-iptables",
		"--proxy-uid", fmt.Sprint(ProxyUID),
		"--outbound-port", fmt.Sprint(OutboundPort),
		"--inbound-port", fmt.Sprint(InboundPort),
		"--exclude-inbound-ports", fmt.Sprint(AdminPort),
	}
	args = append(args, opts.InitArgs...)
	return container{
		Name: InitContainer, Image: opts.Image, ImagePullPolicy: opts.ImagePullPolicy,
		Args:      args,
		Resources: &resources{Requests: map[string]string{"cpu": "10m", "memory": "16Mi"}},
		SecurityContext: &securityContext{
			RunAsUser: 0, RunAsGroup: 0, RunAsNonRoot: false,
			Capabilities: &capabilities{Add: []string{"NET_ADMIN", "NET_RAW"}, Drop: []string{"ALL"}},
		},
	}
}

// ---- node helpers ----

// get returns the value of key in mapping m, or nil.
func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

// setKey sets key in mapping m: replaces an existing value, else inserts
// the pair at position pos (in pairs; -1 appends).
func setKey(m *yaml.Node, key string, v *yaml.Node, pos int) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	k := &yaml.Node{Kind: yaml.ScalarNode, Value: key}
	if pos < 0 || 2*pos >= len(m.Content) {
		m.Content = append(m.Content, k, v)
		return
	}
	m.Content = append(m.Content[:2*pos], append([]*yaml.Node{k, v}, m.Content[2*pos:]...)...)
}

// appendItem appends v (encoded) to the sequence at key in mapping m,
// creating the sequence if needed.
func appendItem(m *yaml.Node, key string, v any) error {
	var item yaml.Node
	if err := item.Encode(v); err != nil {
		return err
	}
	seq := get(m, key)
	switch {
	case seq == nil || (seq.Kind == yaml.ScalarNode && (seq.Tag == "!!null" || seq.Value == "")):
		seq = &yaml.Node{Kind: yaml.SequenceNode}
		setKey(m, key, seq, -1)
	case seq.Kind != yaml.SequenceNode:
		return errors.New(key + " is not a list")
	}
	seq.Content = append(seq.Content, &item)
	return nil
}

// hasNamed reports whether sequence seq has an item with name: want.
func hasNamed(seq *yaml.Node, want string) bool {
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return false
	}
	for _, it := range seq.Content {
		if scalar(get(it, "name")) == want {
			return true
		}
	}
	return false
}
