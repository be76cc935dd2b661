package relay

import (
	"context"
	"reflect"
	"sync"
)

// ctxWatch ends relays when their context ends, with one context.AfterFunc
// per context instead of one per relay: the relays of a listener share its
// context, and a callback registered on a context costs about 170 bytes, a
// sizeable part of what an idle WebSocket holds.
type ctxWatch struct {
	mu     sync.Mutex
	groups map[context.Context]*ctxGroup
}

// ctxGroup is the relays waiting on one context.
type ctxGroup struct {
	stop   func() bool
	relays map[*relayState]struct{}
}

var watch ctxWatch

// add arranges for r.onCtxDone to run when r.ctx ends, and sets
// r.ctxGrouped or r.stopCtx for finishLocked to undo it. r.ctx must be able
// to end (Done is not nil).
func (w *ctxWatch) add(r *relayState) {
	if reflect.TypeOf(r.ctx).Kind() != reflect.Pointer {
		// Not surely usable as a map key (a struct holding an
		// uncomparable value would panic): this relay watches its
		// context alone. Every context of the standard library is a
		// pointer.
		r.stopCtx = context.AfterFunc(r.ctx, r.onCtxDone)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.groups == nil {
		w.groups = make(map[context.Context]*ctxGroup)
	}
	g := w.groups[r.ctx]
	if g == nil {
		ctx := r.ctx
		g = &ctxGroup{relays: make(map[*relayState]struct{})}
		g.stop = context.AfterFunc(ctx, func() { w.fire(ctx, g) })
		w.groups[ctx] = g
	}
	g.relays[r] = struct{}{}
	r.ctxGrouped = true
}

// fire ends every relay of g, whose context ended.
func (w *ctxWatch) fire(ctx context.Context, g *ctxGroup) {
	w.mu.Lock()
	if w.groups[ctx] == g {
		delete(w.groups, ctx) // relays added from now on get a new group
	}
	relays := make([]*relayState, 0, len(g.relays))
	for r := range g.relays {
		relays = append(relays, r)
	}
	g.relays = nil
	w.mu.Unlock()
	for _, r := range relays {
		// Each on its own goroutine: one relay whose lock is held by a
		// write to a stalled peer must not hold up the others.
		go r.onCtxDone()
	}
}

// remove stops watching r's context; the group goes when its last relay
// does. Called with r.mu held.
func (w *ctxWatch) remove(r *relayState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.groups[r.ctx]
	if g == nil {
		return // fired
	}
	if _, ok := g.relays[r]; !ok {
		return
	}
	delete(g.relays, r)
	if len(g.relays) == 0 {
		g.stop()
		delete(w.groups, r.ctx)
	}
}
