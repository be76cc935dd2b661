package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// relHeapAlloc returns a sidecar's live heap in bytes right after a
// garbage collection (pprof's heap page with gc=1 runs one first and ends
// with runtime.MemStats, including "# HeapAlloc = N").
func relHeapAlloc(t testing.TB, m *mesh, side string) int64 {
	t.Helper()
	code, body, err := m.adminGet(side, "/debug/pprof/heap?gc=1&debug=1")
	if err != nil || code != 200 {
		t.Fatalf("%s pprof heap: %d %v", side, code, err)
	}
	i := strings.Index(body, "\n# HeapAlloc = ")
	if i < 0 {
		t.Fatalf("%s pprof heap: no HeapAlloc line", side)
	}
	v, _, _ := strings.Cut(body[i+len("\n# HeapAlloc = "):], "\n")
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		t.Fatalf("%s pprof heap: HeapAlloc %q", side, v)
	}
	return n
}

// relLogLine is the part of an access-log line the soak checks; decoding
// into it is much faster than into a map, for 10,000 lines under -race.
type relLogLine struct {
	Path          string `json:"path"`
	ResponseCode  int    `json:"response_code"`
	ResponseFlags string `json:"response_flags"`
	CloseCode     *int   `json:"websocket_close_code"`
}

// relWaitLogCount waits up to timeout until a sidecar's access log has at
// least n complete lines, then decodes them all.
func relWaitLogCount(t testing.TB, m *mesh, side string, n int, timeout time.Duration) []relLogLine {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(m.accessLogFile[side])
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if k := bytes.Count(b, []byte("\n")); k < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s access log has %d lines after %v, want %d", side, k, timeout, n)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		b = b[:bytes.LastIndexByte(b, '\n')]
		out := make([]relLogLine, 0, n)
		for line := range bytes.SplitSeq(b, []byte("\n")) {
			var rec relLogLine
			if err := json.Unmarshal(line, &rec); err != nil {
				t.Fatalf("%s access log: line is not JSON: %v\n%s", side, err, line)
			}
			out = append(out, rec)
		}
		return out
	}
}

// relChurn opens total WebSockets to pathFmt (with the index) through the
// mesh, workers at a time, at most rate per second: each echoes one
// message and closes with 1000. It returns how many failed and the first
// failures.
func relChurn(ctx context.Context, m *mesh, total, workers int, rate float64, pathFmt string) (failed int64, firstErrs []error) {
	jobs := make(chan int)
	go func() {
		defer close(jobs)
		start := time.Now()
		for i := range total {
			// Pace: job i is due at start + i/rate.
			if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var nfail atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				err := func() error {
					cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
					defer cancel()
					c, err := relDial(cctx, m, fmt.Sprintf(pathFmt, i))
					if err != nil {
						return err
					}
					defer c.CloseNow()
					if err := relEcho(cctx, c, "soak "+strconv.Itoa(i)); err != nil {
						return err
					}
					return c.Close(websocket.StatusNormalClosure, "")
				}()
				if err != nil {
					nfail.Add(1)
					mu.Lock()
					if len(firstErrs) < 10 {
						firstErrs = append(firstErrs, fmt.Errorf("connection %d: %w", i, err))
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return nfail.Load(), firstErrs
}

// TestReliabilitySoakChurn churns 10,000 WebSockets (open, echo one
// message, close) through both sidecars over about 30 seconds with 50
// workers, and then checks that the sidecars leak nothing: goroutines and
// file descriptors return to their baseline, the live heap after a
// collection stays within 4 MiB of it (400 bytes per connection: any
// per-connection leak of a buffer, a record or a map entry shows), and
// RSS stays under 2× baseline + 30 MiB (the Go runtime keeps freed heap
// for a while and returns it gradually, so RSS is only a coarse bound:
// leaking one 32 KiB relay buffer per connection would be 312 MiB). Each
// side's access log has the 10,000 lines, all 101.
func TestReliabilitySoakChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("30-second soak skipped in -short mode")
	}
	const (
		total   = 10000
		workers = 50
		seconds = 30
		warmup  = 300
	)
	m := newMesh(t, meshOptions{app: "echo"})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	sides := []string{"client", "server"}

	// Warm up (buffer pools, goroutine stacks, the access-log writer),
	// then take the baseline once everything has closed.
	if failed, errs := relChurn(ctx, m, warmup, workers, 1000, "/warm/%05d"); failed > 0 {
		t.Fatalf("warm-up: %d of %d failed: %v", failed, warmup, errs)
	}
	settle := func() {
		for _, side := range sides {
			relWaitOpenConnections(t, m, side, 0, 20*time.Second)
		}
		relWaitLogCount(t, m, "client", warmup, 20*time.Second)
		relWaitLogCount(t, m, "server", warmup, 20*time.Second)
		time.Sleep(time.Second)
	}
	settle()
	type usage struct {
		goroutines, fds int
		rssKiB, heap    int64
	}
	measure := func(side string) usage {
		return usage{
			goroutines: relGoroutines(t, m, side),
			fds:        procFDCount(t, m.pid(side)),
			rssKiB:     relRSSKiB(t, m.pid(side)),
			heap:       relHeapAlloc(t, m, side),
		}
	}
	base := map[string]usage{}
	for _, side := range sides {
		base[side] = measure(side)
	}

	// The soak, with the sidecars' RSS and goroutines sampled.
	peak := map[string]usage{}
	sampleDone := make(chan struct{})
	var sampleWG sync.WaitGroup
	sampleWG.Go(func() {
		for {
			for _, side := range sides {
				p := peak[side]
				p.rssKiB = max(p.rssKiB, relRSSKiB(t, m.pid(side)))
				p.fds = max(p.fds, procFDCount(t, m.pid(side)))
				peak[side] = p
			}
			select {
			case <-sampleDone:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	})
	start := time.Now()
	failed, errs := relChurn(ctx, m, total, workers, float64(total)/seconds, "/soak/%05d")
	took := time.Since(start)
	close(sampleDone)
	sampleWG.Wait()
	t.Logf("%d WebSockets in %v (%.0f/s), %d failed", total, took.Round(time.Millisecond), float64(total)/took.Seconds(), failed)
	if failed > 0 {
		t.Errorf("%d of %d WebSockets failed: %v", failed, total, errs)
	}

	// Every WebSocket is in both access logs, as a 101.
	for _, side := range sides {
		lines := relWaitLogCount(t, m, side, warmup+total, 30*time.Second)
		n, bad := 0, 0
		for _, rec := range lines {
			if !strings.HasPrefix(rec.Path, "/soak/") {
				continue
			}
			n++
			if rec.ResponseCode != 101 || rec.CloseCode == nil || *rec.CloseCode != 1000 || rec.ResponseFlags != "-" {
				if bad++; bad <= 5 {
					t.Errorf("%s line: %+v", side, rec)
				}
			}
		}
		if n != total-int(failed) || bad > 0 {
			t.Errorf("%s access log: %d /soak/ lines (%d not 101/1000/-), want %d", side, n, bad, total-int(failed))
		}
	}
	// Nothing leaks once the churn is over.
	for _, side := range sides {
		relWaitOpenConnections(t, m, side, 0, 20*time.Second)
	}
	time.Sleep(time.Second)
	for _, side := range sides {
		b := base[side]
		gr := relWaitGoroutines(t, m, side, b.goroutines+3, 20*time.Second)
		fds := relWaitFDs(t, m.pid(side), b.fds+2, 20*time.Second)
		// Heap and RSS: the runtime returns freed memory gradually; give
		// it up to 10 seconds to come under the bounds.
		var heap, rss int64
		deadline := time.Now().Add(10 * time.Second)
		for {
			heap, rss = relHeapAlloc(t, m, side), relRSSKiB(t, m.pid(side))
			if (heap <= b.heap+4<<20 && rss <= 2*b.rssKiB+30<<10) || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("%s sidecar: goroutines %d -> %d; fds %d -> %d (peak %d); live heap %d -> %d KiB; RSS %d -> %d KiB (peak %d)",
			side, b.goroutines, gr, b.fds, fds, peak[side].fds, b.heap>>10, heap>>10, b.rssKiB, rss, peak[side].rssKiB)
		if heap > b.heap+4<<20 {
			t.Errorf("%s sidecar's live heap grew from %d to %d KiB over %d WebSockets", side, b.heap>>10, heap>>10, total)
		}
		if rss > 2*b.rssKiB+30<<10 {
			t.Errorf("%s sidecar's RSS grew from %d to %d KiB, over the bound of 2× + 30 MiB", side, b.rssKiB, rss)
		}
	}
}
