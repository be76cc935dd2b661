package config_test

import (
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/wsmesh/wsmesh/internal/config"
)

// FuzzParse checks that Parse never panics, that every error names the
// file, and that a snapshot it accepts can be queried and dumped.
// Seeds: testdata/fuzz/FuzzParse plus the guide's documents.
func FuzzParse(f *testing.F) {
	for _, p := range guideFiles {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := config.Parse("fuzz.yaml", data)
		if err != nil {
			for _, m := range errorsOf(err) {
				if !strings.HasPrefix(m, "fuzz.yaml") {
					t.Fatalf("error does not name the file: %q", m)
				}
			}
			if s != nil {
				t.Fatal("snapshot returned with an error")
			}
			return
		}
		if _, err := json.Marshal(s.Dump()); err != nil {
			t.Fatalf("Dump: %v", err)
		}
		for _, c := range s.Clusters() {
			_, _ = s.Route(c.Port, c.Host)
			_, _ = s.ClusterForAddress(netip.MustParseAddr("10.0.0.1"), c.Port)
		}
		_, _ = s.Route(80, "")
		_, _ = s.Route(8080, "localhost:8080")
		if w, err := s.Workload("websockets-server"); err == nil {
			out, in := s.Listeners(w)
			for _, l := range append(out, in...) {
				_, _, _ = s.InboundTarget(w, l.Port)
				_, _ = s.RouteFrom(w, l.Port, "websockets-server")
			}
			_, _ = s.AllowConnect(w)
		}
	})
}
