package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// rawDocument is one YAML document of a multi-document file.
type rawDocument struct {
	index int // 1-based, counting only non-empty documents
	line  int // 1-based line of the document's first line in the file
	data  []byte
}

// splitDocuments splits a YAML stream at "---" separator lines, as
// kubectl does. Documents holding only blank lines and comments are
// dropped and not counted, so "document 3" is the third document a
// reader of the file sees.
func splitDocuments(data []byte) []rawDocument {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var (
		docs  []rawDocument
		cur   bytes.Buffer
		start = 1
		index = 0
	)
	flush := func() {
		if !isEmptyDocument(cur.Bytes()) {
			index++
			docs = append(docs, rawDocument{index: index, line: start, data: append([]byte(nil), cur.Bytes()...)})
		}
		cur.Reset()
	}
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			line, data = data, nil
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		switch {
		case bytes.Equal(trimmed, []byte("---")):
			flush()
			start = lineNo + 1
			continue
		case bytes.HasPrefix(trimmed, []byte("--- ")) || bytes.HasPrefix(trimmed, []byte("---\t")):
			flush()
			start = lineNo
			// The rest of the line belongs to the new document; keep
			// the line count aligned by leaving it on this line.
			cur.Write(line[3:])
			continue
		case bytes.Equal(bytes.TrimRight(trimmed, " \t"), []byte("...")):
			flush()
			start = lineNo + 1
			continue
		}
		if cur.Len() == 0 && isEmptyDocument(trimmed) {
			// Leading blank and comment lines: start the document later
			// so the line we report is where its content begins.
			start = lineNo + 1
			continue
		}
		cur.Write(line)
	}
	flush()
	return docs
}

func isEmptyDocument(b []byte) bool {
	for len(b) > 0 {
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		line = bytes.TrimSpace(line)
		if len(line) != 0 && line[0] != '#' {
			return false
		}
	}
	return true
}

// yamlToTree converts one YAML document to a generic JSON tree
// (map[string]any, []any, string, json.Number, bool, nil). Duplicate
// keys are errors.
func yamlToTree(doc []byte) (any, error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, cleanYAMLError(err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// cleanYAMLError strips the converter's prefixes so the message starts
// with the parser's own words ("yaml: line 3: ...").
func cleanYAMLError(err error) error {
	msg := err.Error()
	for _, p := range []string{"error converting YAML to JSON: ", "error unmarshaling JSON: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	msg = strings.ReplaceAll(msg, "\n ", "")
	msg = strings.ReplaceAll(msg, "\n", "; ")
	return fmt.Errorf("%s", msg)
}

// openObject, as the type of a blank field, marks a struct whose
// unknown fields are accepted without a warning (unless one is a near
// miss of a field wsmesh reads). It is used where the Kubernetes or
// Istio schema is large and wsmesh reads only a few fields.
type openObject struct{}

// valueDecoder is implemented by the pointer of types that decode
// themselves from a JSON tree value.
type valueDecoder interface {
	decodeTree(v any) error
}

// treeDecoder decodes a generic tree into typed structs, collecting
// type errors (fatal) and unknown fields (warnings) with their paths.
type treeDecoder struct {
	errs    []pathMessage
	unknown []pathMessage
}

type pathMessage struct {
	path string
	msg  string
}

func (d *treeDecoder) errorf(path, format string, args ...any) {
	d.errs = append(d.errs, pathMessage{path, fmt.Sprintf(format, args...)})
}

type structInfo struct {
	fields map[string]int // json name -> field index
	names  []string       // sorted json names, for suggestions
	open   bool
}

var structInfos sync.Map // reflect.Type -> *structInfo

var openObjectType = reflect.TypeFor[openObject]()

func infoFor(t reflect.Type) *structInfo {
	if si, ok := structInfos.Load(t); ok {
		return si.(*structInfo)
	}
	si := &structInfo{fields: map[string]int{}}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type == openObjectType {
			si.open = true
			continue
		}
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			continue
		}
		si.fields[name] = i
		si.names = append(si.names, name)
	}
	sort.Strings(si.names)
	structInfos.Store(t, si)
	return si
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func keyPath(path, key string) string {
	simple := key != ""
	for _, r := range key {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			simple = false
			break
		}
	}
	if simple {
		return joinPath(path, key)
	}
	return path + "[" + strconv.Quote(key) + "]"
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "list"
	case string:
		if len(x) > 40 {
			x = x[:40] + "..."
		}
		return "string " + strconv.Quote(x)
	case json.Number:
		return "number " + x.String()
	case bool:
		return "boolean " + strconv.FormatBool(x)
	}
	return fmt.Sprintf("%T", v)
}

var valueDecoderType = reflect.TypeFor[valueDecoder]()

// decode stores tree value v into rv (settable), reporting problems
// under path. A null value leaves rv at its zero value.
func (d *treeDecoder) decode(v any, rv reflect.Value, path string) {
	if v == nil {
		return
	}
	if rv.CanAddr() && rv.Addr().Type().Implements(valueDecoderType) {
		if err := rv.Addr().Interface().(valueDecoder).decodeTree(v); err != nil {
			d.errorf(path, "%v", err)
		}
		return
	}
	switch rv.Kind() {
	case reflect.Interface:
		rv.Set(reflect.ValueOf(v))
	case reflect.Pointer:
		nv := reflect.New(rv.Type().Elem())
		d.decode(v, nv.Elem(), path)
		rv.Set(nv)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			d.errorf(path, "want object, got %s", describe(v))
			return
		}
		si := infoFor(rv.Type())
		for _, k := range sortedKeys(m) {
			i, ok := si.fields[k]
			if !ok {
				if near := suggest(k, si.names); near != "" {
					d.unknown = append(d.unknown, pathMessage{keyPath(path, k), fmt.Sprintf("unknown field, ignored (did you mean %q?)", near)})
				} else if !si.open {
					d.unknown = append(d.unknown, pathMessage{keyPath(path, k), "unknown field, ignored"})
				}
				continue
			}
			d.decode(m[k], rv.Field(i), joinPath(path, k))
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			d.errorf(path, "want object, got %s", describe(v))
			return
		}
		out := reflect.MakeMapWithSize(rv.Type(), len(m))
		for _, k := range sortedKeys(m) {
			ev := reflect.New(rv.Type().Elem()).Elem()
			d.decode(m[k], ev, keyPath(path, k))
			out.SetMapIndex(reflect.ValueOf(k), ev)
		}
		rv.Set(out)
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			d.errorf(path, "want list, got %s", describe(v))
			return
		}
		out := reflect.MakeSlice(rv.Type(), len(l), len(l))
		for i, e := range l {
			d.decode(e, out.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		rv.Set(out)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			d.errorf(path, "want string, got %s", describe(v))
			return
		}
		rv.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			d.errorf(path, "want boolean, got %s", describe(v))
			return
		}
		rv.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := treeInt(v)
		if err != nil {
			d.errorf(path, "%v", err)
			return
		}
		if rv.OverflowInt(n) {
			d.errorf(path, "%d is out of range", n)
			return
		}
		rv.SetInt(n)
	default:
		d.errorf(path, "internal: cannot decode into %s", rv.Type())
	}
}

func treeInt(v any) (int64, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("want integer, got %s", describe(v))
	}
	if i, err := n.Int64(); err == nil {
		return i, nil
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, fmt.Errorf("want integer, got %s", describe(v))
	}
	return int64(f), nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// suggest returns the known name closest to an unknown one when it
// looks like a typo (case difference or edit distance at most 2).
func suggest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return k
		}
		if d := editDistance(strings.ToLower(name), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if len(name) <= 3 && bestD > 1 {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// duration is a duration written as a Go/Istio duration string such as
// "10s", "500ms" or "1h". Istio requires at least 1ms.
type duration time.Duration

func (d *duration) decodeTree(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("want duration string like \"10s\" or \"500ms\", got %s", describe(v))
	}
	p, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. \"10s\" or \"500ms\")", s)
	}
	if p < time.Millisecond {
		return fmt.Errorf("duration %q must be at least 1ms", s)
	}
	*d = duration(p)
	return nil
}

// intOrString is Kubernetes' IntOrString (a Service's targetPort).
type intOrString struct {
	IntVal   int
	StrVal   string
	IsString bool
}

func (x *intOrString) decodeTree(v any) error {
	switch t := v.(type) {
	case string:
		x.IsString, x.StrVal = true, t
		return nil
	case json.Number:
		n, err := treeInt(v)
		if err != nil {
			return err
		}
		if n < math.MinInt32 || n > math.MaxInt32 {
			return fmt.Errorf("%d is out of range", n)
		}
		x.IntVal = int(n)
		return nil
	}
	return fmt.Errorf("want port number or port name, got %s", describe(v))
}

func (x intOrString) String() string {
	if x.IsString {
		return x.StrVal
	}
	return strconv.Itoa(x.IntVal)
}

func (x intOrString) MarshalJSON() ([]byte, error) {
	if x.IsString {
		return json.Marshal(x.StrVal)
	}
	return json.Marshal(x.IntVal)
}

// MarshalJSON renders the duration as a string such as "10s".
func (d duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}
