package balancer

import "testing"

func TestRoundRobinRotates(t *testing.T) {
	b := New()
	eps := []string{"a", "b", "c"}
	var firsts []string
	for i := 0; i < 6; i++ {
		o, done := b.Order("c1", "ROUND_ROBIN", eps)
		if len(o) != 3 {
			t.Fatalf("order %v", o)
		}
		firsts = append(firsts, o[0])
		done()
	}
	want := []string{"a", "b", "c", "a", "b", "c"}
	for i := range want {
		if firsts[i] != want[i] {
			t.Fatalf("got %v want %v", firsts, want)
		}
	}
}

func TestLeastRequestAvoidsBusy(t *testing.T) {
	b := New()
	eps := []string{"busy", "idle"}
	for i := 0; i < 10; i++ {
		_, _ = b.Order("c", "ROUND_ROBIN", []string{"busy"}) // ten in flight, never done
	}
	idle := 0
	for i := 0; i < 200; i++ {
		o, done := b.Order("c", "LEAST_REQUEST", eps)
		if o[0] == "idle" {
			idle++
		}
		done()
	}
	// Two random choices pick "busy" only when both draws are "busy": ~1/4.
	if idle < 120 {
		t.Fatalf("least request picked the idle endpoint only %d/200 times", idle)
	}
	if b.Active("idle") != 0 {
		t.Fatalf("done did not release: %d", b.Active("idle"))
	}
}

func TestEmpty(t *testing.T) {
	o, done := New().Order("c", "", nil)
	done()
	if o != nil {
		t.Fatal(o)
	}
}
