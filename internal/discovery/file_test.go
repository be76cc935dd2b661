package discovery

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/config"
	"github.com/wsmesh/wsmesh/internal/testutil"
)

func service(name string, port int) string {
	return "apiVersion: v1\nkind: Service\nmetadata:\n  name: " + name + "\nspec:\n  ports:\n  - name: http\n    port: " + strconv.Itoa(port) + "\n"
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

type harness struct {
	t      *testing.T
	src    *FileSource
	sub    <-chan *config.Snapshot
	logs   *testutil.Lines
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, paths ...string) *harness {
	t.Helper()
	logs := &testutil.Lines{}
	src, err := NewFileSource(paths, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	src.debounce = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, src: src, sub: src.Subscribe(), logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- src.Run(ctx) }()
	// Let Run add its watches before the test changes files.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		src.mu.Lock()
		running := src.running
		src.mu.Unlock()
		if running {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		h.t.Error("Run did not return after cancel")
	}
}

// waitFor waits for a published snapshot satisfying ok.
func (h *harness) waitFor(desc string, ok func(*config.Snapshot) bool) *config.Snapshot {
	h.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case s := <-h.sub:
			if ok(s) {
				if h.src.Current() != s && h.src.Current().Version != s.Version {
					h.t.Fatalf("Current not updated")
				}
				return s
			}
		case <-timeout:
			h.t.Fatalf("timed out waiting for %s; logs:\n%s", desc, h.logs.String())
			return nil
		}
	}
}

func (h *harness) expectNoSnapshot(d time.Duration) {
	h.t.Helper()
	select {
	case s := <-h.sub:
		h.t.Fatalf("unexpected snapshot %s", s.Version)
	case <-time.After(d):
	}
}

func hasService(name string) func(*config.Snapshot) bool {
	return func(s *config.Snapshot) bool {
		_, err := s.Route(80, name+".default.svc.cluster.local")
		return err == nil
	}
}

func not(f func(*config.Snapshot) bool) func(*config.Snapshot) bool {
	return func(s *config.Snapshot) bool { return !f(s) }
}

func TestNewFileSourceInvalid(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), "kind: [")
	if _, err := NewFileSource([]string{dir}, nil); err == nil || !strings.Contains(err.Error(), "a.yaml: document 1: invalid YAML") {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewFileSource([]string{filepath.Join(dir, "missing.yaml")}, nil); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestReloadOnChangeInDirectory(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), service("one", 80))
	h := start(t, dir)
	first := h.src.Current()
	if !hasService("one")(first) {
		t.Fatal("initial snapshot lacks service one")
	}

	// A change in place.
	write(t, filepath.Join(dir, "a.yaml"), service("two", 80))
	s := h.waitFor("service two", hasService("two"))
	if s.Version == first.Version || hasService("one")(s) {
		t.Fatal("old content still in force")
	}

	// A new file in the directory.
	write(t, filepath.Join(dir, "b.yml"), service("three", 80))
	h.waitFor("service three", hasService("three"))

	// An invalid change: logged with the full error, old snapshot stays.
	before := h.src.Current()
	write(t, filepath.Join(dir, "b.yml"), service("three", 0))
	h.expectNoSnapshot(300 * time.Millisecond)
	if h.src.Current() != before {
		t.Fatal("invalid config replaced the snapshot")
	}
	if err := h.src.LastError(); err == nil || !strings.Contains(err.Error(), "b.yml: document 1 (Service three): spec.ports[0].port: port 0 out of range") {
		t.Fatalf("LastError = %v", err)
	}
	if !strings.Contains(h.logs.String(), "keeping the configuration in force") || !strings.Contains(h.logs.String(), "spec.ports[0].port") {
		t.Fatalf("logs:\n%s", h.logs.String())
	}

	// Fixing it applies.
	write(t, filepath.Join(dir, "b.yml"), service("four", 80))
	h.waitFor("service four", hasService("four"))
	if h.src.LastError() != nil {
		t.Fatal("LastError not cleared")
	}

	// Deleting a file from the directory is a valid change.
	if err := os.Remove(filepath.Join(dir, "b.yml")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("service four removed", not(hasService("four")))

	// Non-YAML files do not count; a rewrite with the same content does
	// not publish a new snapshot.
	write(t, filepath.Join(dir, "notes.txt"), "hello")
	write(t, filepath.Join(dir, "a.yaml"), service("two", 80))
	h.expectNoSnapshot(300 * time.Millisecond)

	// Deleting the last file is an error: the snapshot in force stays.
	before = h.src.Current()
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	h.expectNoSnapshot(300 * time.Millisecond)
	if h.src.Current() != before || !hasService("two")(h.src.Current()) {
		t.Fatal("deleting every file dropped the configuration")
	}
}

func TestReloadNamedFileRenameReplace(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mesh.yaml")
	write(t, file, service("one", 80))
	h := start(t, file)

	// An editor's save: write a temporary file, rename it over the original.
	tmp := filepath.Join(dir, ".mesh.yaml.swp")
	write(t, tmp, service("two", 80))
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	h.waitFor("service two", hasService("two"))

	// The named file is deleted: an error, the snapshot stays.
	before := h.src.Current()
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	h.expectNoSnapshot(300 * time.Millisecond)
	if h.src.Current() != before || h.src.LastError() == nil {
		t.Fatal("deleting the named file changed the snapshot or left no error")
	}

	// It comes back: reloaded.
	write(t, file, service("three", 80))
	h.waitFor("service three", hasService("three"))
}

func TestDirectoryRemovedAndRecreated(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "conf")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "a.yaml"), service("one", 80))
	h := start(t, dir)

	before := h.src.Current()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	h.expectNoSnapshot(300 * time.Millisecond)
	if h.src.Current() != before {
		t.Fatal("snapshot changed when the directory went away")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "a.yaml"), service("two", 80))
	h.waitFor("service two", hasService("two"))
	// The directory is watched again.
	write(t, filepath.Join(dir, "a.yaml"), service("three", 80))
	h.waitFor("service three", hasService("three"))
}

func TestSubscribersLatestWinsAndClose(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a.yaml")
	write(t, file, service("one", 80))
	src, err := NewFileSource([]string{file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	slow := src.Subscribe()
	for _, name := range []string{"two", "three", "four"} {
		write(t, file, service(name, 80))
		if err := src.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	// The slow subscriber holds only the latest snapshot.
	s := <-slow
	if !hasService("four")(s) || s != src.Current() {
		t.Fatal("subscriber did not get the latest snapshot")
	}
	select {
	case s := <-slow:
		t.Fatalf("stale snapshot %v", s.Version)
	default:
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- src.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok := <-slow; ok {
		t.Fatal("subscriber channel not closed after Run")
	}
	if _, ok := <-src.Subscribe(); ok {
		t.Fatal("Subscribe after Run must return a closed channel")
	}
	if err := src.Run(context.Background()); err == nil {
		t.Fatal("second Run accepted")
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for i := 0; i < 3; i++ {
		dir := t.TempDir()
		write(t, filepath.Join(dir, "a.yaml"), service("one", 80))
		src, err := NewFileSource([]string{dir, filepath.Join(dir, "a.yaml")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- src.Run(ctx) }()
		time.Sleep(30 * time.Millisecond)
		write(t, filepath.Join(dir, "a.yaml"), service("two", 80))
		time.Sleep(150 * time.Millisecond)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}
