package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/examples"
	"github.com/wsmesh/wsmesh/internal/testutil"
)

// freePort is testutil.FreePort.
var freePort = testutil.FreePort

// exampleOnFreePorts copies a shipped example with its loopback ports
// (8080, 15006, 18080) moved to free ones, so the test never collides.
func exampleOnFreePorts(t *testing.T, sub string, skip string) string {
	t.Helper()
	dir := t.TempDir()
	repl := strings.NewReplacer(
		"8080", fmt.Sprint(freePort(t)),
		"15006", fmt.Sprint(freePort(t)),
		"18080", fmt.Sprint(freePort(t)),
	)
	entries, err := examples.FS.ReadDir(sub)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if skip != "" && strings.Contains(e.Name(), skip) {
			continue
		}
		b, err := examples.FS.ReadFile(sub + "/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), []byte(repl.Replace(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func runDemo(t *testing.T, o Options) (transcript string, client, server map[string]any) {
	t.Helper()
	var out bytes.Buffer
	o.Out = &out
	o.ClientAdmin, o.ServerAdmin = "127.0.0.1:0", "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Run(ctx, o); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	s := out.String()
	var lines []map[string]any
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "{") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("log line %q: %v", l, err)
			}
			lines = append(lines, m)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("want 2 access-log lines, got %d:\n%s", len(lines), s)
	}
	return s, lines[0], lines[1]
}

func TestDemoHTTP1(t *testing.T) {
	dir := exampleOnFreePorts(t, "http1", "")
	s, cl, sl := runDemo(t, Options{ConfigDir: dir})
	for _, want := range []string{"> hello\n< hello\n> world\n< world\nConnection closed: 1000 (OK).\n", "Connected to ws://websockets-server.default.svc.cluster.local:"} {
		if !strings.Contains(s, want) {
			t.Fatalf("transcript lacks %q:\n%s", want, s)
		}
	}
	if cl["protocol"] != "HTTP/1.1" || sl["protocol"] != "HTTP/1.1" || cl["response_code"] != 101.0 {
		t.Fatalf("client %v\nserver %v", cl, sl)
	}
}

func TestDemoHTTP2(t *testing.T) {
	dir := exampleOnFreePorts(t, "http2", "")
	s, cl, sl := runDemo(t, Options{ConfigDir: dir, H2: true})
	if !strings.Contains(s, "< world\n") || cl["protocol"] != "HTTP/1.1" || sl["protocol"] != "HTTP/2" {
		t.Fatalf("%s", s)
	}
}

func TestDemoHTTP2WithoutAllowConnectFallsBack(t *testing.T) {
	dir := exampleOnFreePorts(t, "http2", "envoyfilter")
	s, cl, sl := runDemo(t, Options{ConfigDir: dir, H2: true})
	if !strings.Contains(s, "does NOT allow extended CONNECT") || sl["protocol"] != "HTTP/1.1" ||
		!strings.Contains(cl["response_code_details"].(string), "http1_fallback") {
		t.Fatalf("%s", s)
	}
}
