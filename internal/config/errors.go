package config

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoRoute is wrapped by the errors of Route, RouteFrom and
// ClusterForAddress when no cluster matches (Envoy's response flag NR).
var ErrNoRoute = errors.New("no route")

// FieldError is one validation problem. Load and Parse return all of
// them joined with errors.Join; use errors.As on the joined error's
// Unwrap() []error to inspect them one by one.
type FieldError struct {
	File     string // file name as given to Load or Parse
	Document int    // 1-based document index in the file; 0 for the whole file or set
	Item     int    // 1-based index in the items of a List document; 0 otherwise
	Kind     string // resource kind, when known
	Name     string // resource name, when known
	Field    string // field path such as spec.ports[0].targetPort; empty for the whole document
	Reason   string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.location())
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

func (e *FieldError) location() string {
	return location{file: e.File, doc: e.Document, item: e.Item, kind: e.Kind, name: e.Name}.String()
}

// location names where a resource was written.
type location struct {
	file       string
	doc        int
	item       int
	kind, name string
}

func (l location) String() string {
	var b strings.Builder
	b.WriteString(l.file)
	if l.doc > 0 {
		fmt.Fprintf(&b, ": document %d", l.doc)
		if l.item > 0 {
			fmt.Fprintf(&b, " item %d", l.item)
		}
		switch {
		case l.kind != "" && l.name != "":
			fmt.Fprintf(&b, " (%s %s)", l.kind, l.name)
		case l.kind != "":
			fmt.Fprintf(&b, " (%s)", l.kind)
		}
	}
	return b.String()
}

func (l location) fieldError(field, format string, args ...any) *FieldError {
	return &FieldError{File: l.file, Document: l.doc, Item: l.item, Kind: l.kind, Name: l.name, Field: field, Reason: fmt.Sprintf(format, args...)}
}
