package httpproxy

import "sync/atomic"

// Limiter bounds the downstream connections a sidecar serves at once. Past
// the bound a new HTTP/1.1 connection gets one 503 with flag OM (overload)
// naming the limit, instead of the process running out of memory or file
// descriptors. A nil *Limiter or a zero Max admits everything.
type Limiter struct {
	Max int64
	cur atomic.Int64
}

// Acquire admits one connection, reporting false when over the bound.
func (l *Limiter) Acquire() bool {
	if l == nil || l.Max <= 0 {
		return true
	}
	if l.cur.Add(1) > l.Max {
		l.cur.Add(-1)
		return false
	}
	return true
}

// Release ends an admitted connection.
func (l *Limiter) Release() {
	if l != nil && l.Max > 0 {
		l.cur.Add(-1)
	}
}

// Current is the number of admitted connections.
func (l *Limiter) Current() int64 {
	if l == nil {
		return 0
	}
	return l.cur.Load()
}
