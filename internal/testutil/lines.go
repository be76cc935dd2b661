package testutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

// LineFormat says how the JSON lines of an access log are read.
type LineFormat struct {
	// UseNumber decodes numbers as json.Number instead of float64.
	UseNumber bool
	// SkipText passes over the lines that do not start with "{", such as
	// the log of a process that writes its access log to the same stream.
	// Without it every line must be a JSON object.
	SkipText bool
}

// Decode returns the complete lines of data (a last line without its
// newline is still being written and is left out) decoded as JSON objects.
// It fails on a line that is not one JSON object.
func (f LineFormat) Decode(data []byte) ([]map[string]any, error) {
	var out []map[string]any
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return out, nil
		}
		line := data[:i]
		data = data[i+1:]
		if f.SkipText {
			line = bytes.TrimSpace(line)
			if !bytes.HasPrefix(line, []byte("{")) {
				continue
			}
		}
		rec, err := f.decodeLine(line)
		if err != nil {
			return out, fmt.Errorf("line is not a JSON object: %v\n%s", err, line)
		}
		out = append(out, rec)
	}
}

func (f LineFormat) decodeLine(line []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(line))
	if f.UseNumber {
		d.UseNumber()
	}
	var rec map[string]any
	if err := d.Decode(&rec); err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, errors.New("null")
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("more after the object")
	}
	return rec, nil
}

// Lines is an io.Writer that keeps what is written to it (an access log, a
// process's output), for a test to read while the writer goes on: as text,
// or as its JSON lines decoded. The zero value is ready to use, and Lines
// is safe for one writer and readers at the same time.
type Lines struct {
	LineFormat

	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns all that has been written so far.
func (l *Lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Records returns the complete lines written so far, decoded; it fails the
// test on a line that is not a JSON object.
func (l *Lines) Records(t testing.TB) []map[string]any {
	t.Helper()
	l.mu.Lock()
	recs, err := l.Decode(l.b.Bytes())
	l.mu.Unlock()
	if err != nil {
		t.Fatalf("access log: %v", err)
	}
	return recs
}

// Wait waits up to 10 seconds until at least n lines have been written and
// returns them all, decoded; it fails the test past that.
func (l *Lines) Wait(t testing.TB, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := l.Records(t)
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log has %d lines after 10s, want %d:\n%s", len(recs), n, l.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
