package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	prevHi := int64(-1)
	for i := 0; i < histBuckets; i++ {
		lo, hi := bucketBounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, want %d", i, lo, prevHi+1)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d]: bucketOf gives %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if lo >= histLinear && float64(hi-lo+1)/float64(lo) > 1.0/64+1e-9 {
			t.Fatalf("bucket %d [%d,%d] wider than 1/64", i, lo, hi)
		}
		prevHi = hi
		if hi < 0 || hi == 1<<63-1 {
			break
		}
	}
}

func TestQuantileExactSmall(t *testing.T) {
	var h Histogram
	for v := 1; v <= 100; v++ {
		h.Record(time.Duration(v))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50}, {0.99, 99}, {0.999, 100}, {1, 100}, {0.01, 1}, {0, 1}} {
		if got := h.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if h.Mean() != 50 { // 50.5 truncated
		t.Errorf("Mean = %v", h.Mean())
	}
	if h.Max() != 100 || h.Count() != 100 {
		t.Errorf("Max %v Count %d", h.Max(), h.Count())
	}
}

func TestQuantileMatchesSortWithinPrecision(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var a, b Histogram
	var all []int64
	for i := 0; i < 200000; i++ {
		v := int64(r.ExpFloat64()*50000) + 20000 // ~20µs + exp(50µs)
		all = append(all, v)
		if i%2 == 0 {
			a.Record(time.Duration(v))
		} else {
			b.Record(time.Duration(v))
		}
	}
	a.Merge(&b)
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		idx := int(float64(len(all))*q+0.999999) - 1
		want := float64(all[idx])
		got := float64(a.Quantile(q))
		if d := (got - want) / want; d > 0.01 || d < -0.01 {
			t.Errorf("q=%v: got %v want %v (%.2f%%)", q, got, want, d*100)
		}
	}
	if a.Count() != 200000 {
		t.Fatalf("count %d", a.Count())
	}
}

func TestQuantileEmpty(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram should report 0")
	}
}
