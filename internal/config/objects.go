package config

import (
	"errors"
	"slices"
	"strings"
)

// Document is one named input of ParseDocuments: what Load reads from a
// file, without the file system. Name is used in messages (FieldError.File)
// and, with Data, in the snapshot's Version.
type Document struct {
	Name string
	Data []byte
}

// ParseDocuments builds one Snapshot from several named inputs, as Load
// does from several files: in the order given, every problem reported,
// joined with errors.Join. Sources that are not files (the Kubernetes API
// server) use it with one Document per object, named after the object, so
// that the same objects give the same snapshot whichever way they came.
func ParseDocuments(docs []Document) (*Snapshot, error) {
	b := newBuilder()
	for _, d := range docs {
		b.addFile(d.Name, d.Data)
	}
	return b.finish()
}

// ParseDocumentsSkipping builds a Snapshot from docs like ParseDocuments,
// but leaves out the documents that have errors instead of failing: it
// parses, removes every document an error names (FieldError.File), and
// parses again until the rest is valid. rejected maps each left-out
// document's name to its errors. err is non-nil only when an error names
// no document of docs (which the parser does not do today): then nothing
// is built.
//
// When fallback has a document of the same name as a rejected one (the
// version of an object accepted earlier), that version is tried in its
// place before the document is left out, so a bad update of an object
// keeps the object as it was.
func ParseDocumentsSkipping(docs []Document, fallback map[string][]byte) (snap *Snapshot, rejected map[string]error, err error) {
	cur := slices.Clone(docs)
	usedFallback := map[string]bool{}
	// Each round removes or replaces at least one document, and each
	// document can be replaced once, so this ends.
	for round := 0; round <= 2*len(docs)+1; round++ {
		snap, perr := ParseDocuments(cur)
		if perr == nil {
			return snap, rejected, nil
		}
		byDoc := map[string][]error{}
		for _, e := range flattenErrors(perr) {
			var fe *FieldError
			if !errors.As(e, &fe) || !hasDocument(cur, fe.File) {
				return nil, rejected, perr
			}
			byDoc[fe.File] = append(byDoc[fe.File], e)
		}
		next := cur[:0:0]
		for _, d := range cur {
			errs, bad := byDoc[d.Name]
			if !bad {
				next = append(next, d)
				continue
			}
			if old, ok := fallback[d.Name]; ok && !usedFallback[d.Name] && string(old) != string(d.Data) {
				usedFallback[d.Name] = true
				next = append(next, Document{Name: d.Name, Data: old})
			}
			if rejected == nil {
				rejected = map[string]error{}
			}
			if _, seen := rejected[d.Name]; !seen {
				rejected[d.Name] = errors.Join(errs...)
			}
		}
		cur = next
	}
	return nil, rejected, errors.New("config: documents with errors could not be separated from valid ones")
}

func hasDocument(docs []Document, name string) bool {
	for _, d := range docs {
		if d.Name == name {
			return true
		}
	}
	return false
}

// flattenErrors undoes errors.Join, recursively.
func flattenErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrors(e)...)
		}
		return out
	}
	return []error{err}
}

// ObjectDocumentName is the name a non-file source gives the Document of
// one object, as in error messages: "kubernetes:Service/default/web".
// Cluster-scoped objects have no namespace part.
func ObjectDocumentName(source, kind, namespace, name string) string {
	var b strings.Builder
	b.WriteString(source)
	b.WriteByte(':')
	b.WriteString(kind)
	b.WriteByte('/')
	if namespace != "" {
		b.WriteString(namespace)
		b.WriteByte('/')
	}
	b.WriteString(name)
	return b.String()
}
