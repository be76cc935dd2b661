package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// metricValue reads one unlabelled sample from a sidecar's
// /stats/prometheus.
func metricValue(t testing.TB, m *mesh, side, name string) float64 {
	t.Helper()
	code, body, err := m.adminGet(side, "/stats/prometheus")
	if err != nil || code != 200 {
		t.Fatalf("%s /stats/prometheus: %d %v", side, code, err)
	}
	mm := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if mm == nil {
		t.Fatalf("%s: no %s in /stats/prometheus", side, name)
	}
	v, err := strconv.ParseFloat(mm[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// goroutines reads the goroutine count from a sidecar's pprof endpoint.
func goroutines(t testing.TB, m *mesh, side string) int {
	t.Helper()
	code, body, err := m.adminGet(side, "/debug/pprof/goroutine?debug=1")
	if err != nil || code != 200 {
		t.Fatalf("%s goroutine profile: %d %v", side, code, err)
	}
	mm := regexp.MustCompile(`goroutine profile: total (\d+)`).FindStringSubmatch(body)
	if mm == nil {
		t.Fatalf("%s: no total in the goroutine profile", side)
	}
	n, _ := strconv.Atoi(mm[1])
	return n
}

// TestIdleWebSocketsParkThroughH2Mesh holds idle WebSockets through two
// sidecars over HTTP/2 and checks that once quiet they hold no goroutine
// in either sidecar (both directions parked), that traffic wakes every one
// of them with nothing lost, and that they close and log as usual.
func TestIdleWebSocketsParkThroughH2Mesh(t *testing.T) {
	const n = 200
	m := newMesh(t, meshOptions{app: "echo", h2: true, allowConnect: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := map[string]int{"client": goroutines(t, m, "client"), "server": goroutines(t, m, "server")}
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		c, err := relDial(ctx, m, fmt.Sprintf("/park/%03d", i))
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		conns[i] = c
		if err := relEcho(ctx, c, "before parking"); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 2 {
		for _, side := range []string{"client", "server"} {
			deadline := time.Now().Add(30 * time.Second)
			for metricValue(t, m, side, "wsmesh_relay_directions_parked") < 2*n {
				if time.Now().After(deadline) {
					t.Fatalf("round %d: %s sidecar parked %v directions, want %d", round, side, metricValue(t, m, side, "wsmesh_relay_directions_parked"), 2*n)
				}
				time.Sleep(100 * time.Millisecond)
			}
			// A WebSocket that held goroutines would add two or three each.
			if g := goroutines(t, m, side); g > base[side]+n/10 {
				t.Errorf("round %d: %s sidecar has %d goroutines with %d idle WebSockets (%d before they opened)", round, side, g, n, base[side])
			}
		}
		for i, c := range conns {
			if err := relEcho(ctx, c, fmt.Sprintf("after parking, round %d, %d", round, i)); err != nil {
				t.Fatalf("WebSocket %d: %v", i, err)
			}
		}
	}
	// Each sidecar's HTTP/2 side passed the echoes on from the connection's
	// reader (the client's upstream, the server's downstream).
	for _, side := range []string{"client", "server"} {
		if v := metricValue(t, m, side, "wsmesh_relay_inline_forwards_total"); v < n {
			t.Errorf("%s sidecar forwarded %v reads inline, want at least %d", side, v, n)
		}
	}
	for _, c := range conns {
		if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
			t.Fatal(err)
		}
	}
	for _, side := range []string{"client", "server"} {
		for _, rec := range m.waitLogLines(t, side, n) {
			if fmt.Sprint(rec["websocket_close_code"]) != "1000" || rec["response_flags"] != "-" ||
				fmt.Sprint(rec["websocket_messages_downstream"]) != "3" || fmt.Sprint(rec["websocket_messages_upstream"]) != "3" {
				t.Fatalf("%s log line: %v", side, rec)
			}
		}
	}
}
