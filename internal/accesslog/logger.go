package accesslog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// Logger writes access-log lines to one destination. Log is safe for
// concurrent use: each line is encoded into a pooled buffer and written with a
// single Write call under a mutex, so lines never interleave.
type Logger struct {
	mu     sync.Mutex
	w      io.Writer
	closer io.Closer // nil when the destination is not ours to close

	lines  atomic.Int64
	errors atomic.Int64
}

// maxPooledBuf bounds the buffers kept in the pool; a line with huge header
// values is encoded once and then its buffer is dropped.
const maxPooledBuf = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// New returns a Logger writing to w. Close does not close w.
func New(w io.Writer) *Logger { return &Logger{w: w} }

// Open returns a Logger for path. "", "-" and "/dev/stdout" mean standard
// output (not closed by Close); "/dev/stderr" means standard error; anything
// else is a file opened for appending and created if missing.
func Open(path string) (*Logger, error) {
	switch path {
	case "", "-", "/dev/stdout":
		return New(os.Stdout), nil
	case "/dev/stderr":
		return New(os.Stderr), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return &Logger{w: f, closer: f}, nil
}

// Log writes r as one line. Write errors are counted (see Errors), not
// returned: a failing log destination must not fail the proxied traffic.
func (l *Logger) Log(r *Record) {
	if l == nil || r == nil {
		return
	}
	bp := bufPool.Get().(*[]byte)
	b := AppendJSON((*bp)[:0], r)
	l.mu.Lock()
	var err error
	if l.w == nil {
		err = errClosed
	} else {
		_, err = l.w.Write(b)
	}
	l.mu.Unlock()
	if err != nil {
		l.errors.Add(1)
	} else {
		l.lines.Add(1)
	}
	if cap(b) <= maxPooledBuf {
		*bp = b[:0]
		bufPool.Put(bp)
	}
}

var errClosed = errors.New("access log closed")

// Lines reports how many lines were written successfully.
func (l *Logger) Lines() int64 { return l.lines.Load() }

// Errors reports how many lines could not be written.
func (l *Logger) Errors() int64 { return l.errors.Load() }

// Close closes the destination if Open created it. Lines logged after Close
// are dropped and counted as errors.
func (l *Logger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w = nil
	if l.closer == nil {
		return nil
	}
	c := l.closer
	l.closer = nil
	return c.Close()
}
