package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// DefaultNamespace is the namespace of resources whose metadata has none,
// as when a manifest is applied with "kubectl apply -n default".
const DefaultNamespace = "default"

// Load reads every path (a file, or a directory meaning every *.yaml and
// *.yml file directly in it, sorted by name, dot files skipped) and
// builds one validated Snapshot. Each path is read once even when named
// twice. All problems are reported together, joined with errors.Join;
// each is a *FieldError naming file, document, resource and field.
func Load(paths ...string) (*Snapshot, error) {
	files, err := expandPaths(paths)
	if err != nil {
		return nil, err
	}
	b := newBuilder()
	var readErrs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			readErrs = append(readErrs, err)
			continue
		}
		b.addFile(f, data)
	}
	if len(readErrs) > 0 {
		return nil, errors.Join(append(readErrs, b.errs...)...)
	}
	return b.finish()
}

// Parse builds a Snapshot from one file's bytes; name is used in
// messages. It is what Load does for each file, without the file system.
func Parse(name string, data []byte) (*Snapshot, error) {
	b := newBuilder()
	b.addFile(name, data)
	return b.finish()
}

// ConfigFiles returns the files Load reads for paths, in order: a file
// as given, a directory as its *.yaml and *.yml files sorted by name.
func ConfigFiles(paths ...string) ([]string, error) { return expandPaths(paths) }

func expandPaths(paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, errors.New("no configuration paths given")
	}
	var (
		files []string
		seen  = map[string]bool{}
		errs  []error
	)
	add := func(f string) {
		key := f
		if abs, err := filepath.Abs(f); err == nil {
			key = abs
		}
		if !seen[key] {
			seen[key] = true
			files = append(files, f)
		}
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !st.IsDir() {
			add(p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var names []string
		for _, e := range entries {
			n := e.Name()
			if strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
				continue
			}
			if e.IsDir() {
				continue
			}
			names = append(names, n)
		}
		sort.Strings(names)
		if len(names) == 0 {
			errs = append(errs, fmt.Errorf("%s: no *.yaml or *.yml files in directory", p))
		}
		for _, n := range names {
			add(filepath.Join(p, n))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return files, nil
}

// builder accumulates one snapshot's resources and problems.
type builder struct {
	s    *Snapshot
	errs []error
	seen map[string]location // kind/namespace/name -> where first defined
	hash hash.Hash
}

func newBuilder() *builder {
	return &builder{s: newSnapshot(), seen: map[string]location{}, hash: sha256.New()}
}

func (b *builder) errf(loc location, field, format string, args ...any) {
	b.errs = append(b.errs, loc.fieldError(field, format, args...))
}

func (b *builder) warnf(loc location, field, format string, args ...any) {
	b.s.Warnings = append(b.s.Warnings, loc.fieldError(field, format, args...).Error())
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

func (b *builder) addFile(name string, data []byte) {
	fmt.Fprintf(b.hash, "%d:%s\x00%d:", len(name), name, len(data))
	b.hash.Write(data)
	b.s.files = append(b.s.files, name)
	for _, rd := range splitDocuments(data) {
		loc := location{file: name, doc: rd.index}
		tree, err := yamlToTree(rd.data)
		if err != nil {
			// Report lines of the file, not of the document.
			msg := yamlLineRE.ReplaceAllStringFunc(err.Error(), func(m string) string {
				n, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
				return "line " + strconv.Itoa(n+rd.line-1)
			})
			b.errf(loc, "", "invalid YAML: %s", msg)
			continue
		}
		if tree == nil {
			continue
		}
		b.addObject(loc, tree)
	}
}

// kindInfo describes one resource kind wsmesh reads.
type kindInfo struct {
	group    string
	versions []string
	newDoc   func() any
	add      func(b *builder, loc location, doc any)
}

var istioVersions = []string{"v1", "v1beta1", "v1alpha3"}

var kinds = map[string]kindInfo{
	"Service":         {"", []string{"v1"}, func() any { return new(serviceDoc) }, (*builder).addService},
	"Pod":             {"", []string{"v1"}, func() any { return new(podDoc) }, (*builder).addPod},
	"ConfigMap":       {"", []string{"v1"}, func() any { return new(configMapDoc) }, (*builder).addConfigMap},
	"Deployment":      {"apps", []string{"v1"}, func() any { return new(deploymentDoc) }, (*builder).addDeployment},
	"EndpointSlice":   {"discovery.k8s.io", []string{"v1"}, func() any { return new(endpointSliceDoc) }, (*builder).addEndpointSlice},
	"WorkloadEntry":   {"networking.istio.io", istioVersions, func() any { return new(workloadEntryDoc) }, (*builder).addWorkloadEntry},
	"ServiceEntry":    {"networking.istio.io", istioVersions, func() any { return new(serviceEntryDoc) }, (*builder).addServiceEntry},
	"Sidecar":         {"networking.istio.io", istioVersions, func() any { return new(sidecarDoc) }, (*builder).addSidecar},
	"DestinationRule": {"networking.istio.io", istioVersions, func() any { return new(destinationRuleDoc) }, (*builder).addDestinationRule},
	"EnvoyFilter":     {"networking.istio.io", []string{"v1alpha3"}, func() any { return new(envoyFilterDoc) }, (*builder).addEnvoyFilter},
}

func (b *builder) addObject(loc location, tree any) {
	m, ok := tree.(map[string]any)
	if !ok {
		b.errf(loc, "", "want a Kubernetes resource (a mapping with apiVersion and kind), got %s", describe(tree))
		return
	}
	kind, kok := m["kind"].(string)
	apiVersion, aok := m["apiVersion"].(string)
	if md, ok := m["metadata"].(map[string]any); ok {
		if n, ok := md["name"].(string); ok {
			loc.name = n
		}
	}
	loc.kind = kind
	if !kok || kind == "" {
		b.errf(loc, "kind", "missing or not a string")
		return
	}
	if !aok || apiVersion == "" {
		b.errf(loc, "apiVersion", "missing or not a string")
		return
	}
	group, version := "", apiVersion
	if i := strings.LastIndexByte(apiVersion, '/'); i >= 0 {
		group, version = apiVersion[:i], apiVersion[i+1:]
	}
	if kind == "List" && group == "" && version == "v1" {
		items, ok := m["items"].([]any)
		if !ok && m["items"] != nil {
			b.errf(loc, "items", "want list, got %s", describe(m["items"]))
			return
		}
		for i, it := range items {
			b.addObject(location{file: loc.file, doc: loc.doc, item: i + 1}, it)
		}
		return
	}
	ki, ok := kinds[kind]
	if !ok || ki.group != group {
		b.warnf(loc, "", "kind %s %s is not used by wsmesh, skipped", apiVersion, kind)
		return
	}
	if !contains(ki.versions, version) {
		want := make([]string, len(ki.versions))
		for i, v := range ki.versions {
			want[i] = strings.TrimPrefix(ki.group+"/"+v, "/")
		}
		b.errf(loc, "apiVersion", "unsupported version %q for %s (want %s)", apiVersion, kind, orList(want))
		return
	}
	doc := ki.newDoc()
	var d treeDecoder
	d.decode(m, reflect.ValueOf(doc).Elem(), "")
	for _, u := range d.unknown {
		b.warnf(loc, u.path, "%s", u.msg)
	}
	for _, e := range d.errs {
		b.errf(loc, e.path, "%s", e.msg)
	}
	if len(d.errs) > 0 {
		return
	}
	ki.add(b, loc, doc)
}

// register records a resource's identity and reports a duplicate. It
// returns the namespace to use and false for a duplicate.
func (b *builder) register(loc location, meta *objectMeta) (string, bool) {
	ns := meta.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	ok := true
	if meta.Name == "" {
		b.errf(loc, "metadata.name", "required")
		ok = false
	} else if !isDNSSubdomain(meta.Name) {
		b.errf(loc, "metadata.name", "%q is not a valid name (lowercase letters, digits, '-' and '.')", meta.Name)
		ok = false
	}
	if meta.Namespace != "" && !isDNSLabel(meta.Namespace) {
		b.errf(loc, "metadata.namespace", "%q is not a valid namespace (lowercase letters, digits and '-', at most 63)", meta.Namespace)
		ok = false
	}
	b.checkLabels(loc, "metadata.labels", meta.Labels)
	if !ok {
		return ns, false
	}
	key := loc.kind + "/" + ns + "/" + meta.Name
	if first, dup := b.seen[key]; dup {
		b.errf(loc, "metadata.name", "duplicate %s %s/%s, first defined at %s", loc.kind, ns, meta.Name, first)
		return ns, false
	}
	b.seen[key] = loc
	return ns, true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// orList renders "A, B or C".
func orList(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// checkEnum validates an enum value; empty is allowed (the default).
func (b *builder) checkEnum(loc location, field, value string, allowed ...string) bool {
	if value == "" || contains(allowed, value) {
		return true
	}
	hint := ""
	for _, a := range allowed {
		if strings.EqualFold(a, value) {
			hint = "; values are case-sensitive"
		}
	}
	b.errf(loc, field, "unknown value %q (want %s%s)", value, orList(allowed), hint)
	return false
}

func (b *builder) finish() (*Snapshot, error) {
	b.s.Version = hex.EncodeToString(b.hash.Sum(nil))[:16]
	b.crossValidate()
	if len(b.errs) > 0 {
		return nil, errors.Join(b.errs...)
	}
	b.s.build(b)
	return b.s, nil
}
