// Package discovery provides where configuration snapshots come from.
// A Source has a current *config.Snapshot at all times, replaces it
// atomically when a new valid configuration appears, and tells
// subscribers. FileSource watches YAML files and directories; an invalid
// change is logged and the snapshot in force stays, so nothing already
// accepted is lost.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/wsmesh/wsmesh/internal/config"
)

// Source supplies configuration snapshots.
type Source interface {
	// Run watches for changes until ctx ends, then stops everything it
	// started and returns.
	Run(ctx context.Context) error
	// Current returns the snapshot in force; never nil.
	Current() *config.Snapshot
	// Subscribe returns a channel that receives each new snapshot. It is
	// buffered with room for one: a slow subscriber skips to the latest.
	// The channel is closed when Run returns.
	Subscribe() <-chan *config.Snapshot
}

// DefaultDebounce is how long FileSource waits after the last file
// event before reloading, so that an editor's save (often several
// events: write temp, rename, chmod) causes one reload.
const DefaultDebounce = 100 * time.Millisecond

// FileSource loads configuration from files and directories (as
// config.Load) and reloads it when they change.
type FileSource struct {
	paths    []string
	log      *slog.Logger
	debounce time.Duration

	cur atomic.Pointer[config.Snapshot]

	reloadMu sync.Mutex // serializes reloads
	lastErr  atomic.Pointer[errorBox]

	subscribers
}

type errorBox struct{ err error }

var _ Source = (*FileSource)(nil)

// NewFileSource loads paths once and returns a source holding that
// snapshot. It fails if the configuration is invalid. A nil log
// discards log output.
func NewFileSource(paths []string, log *slog.Logger) (*FileSource, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	snap, err := config.Load(paths...)
	if err != nil {
		return nil, err
	}
	s := &FileSource{paths: append([]string(nil), paths...), log: log, debounce: DefaultDebounce}
	s.cur.Store(snap)
	for _, w := range snap.Warnings {
		log.Warn("config warning", "warning", w)
	}
	log.Info("config loaded", "version", snap.Version, "files", len(snap.Files()), "warnings", len(snap.Warnings))
	return s, nil
}

// Current returns the snapshot in force.
func (s *FileSource) Current() *config.Snapshot { return s.cur.Load() }

// LastError returns the error of the last reload attempt, or nil if it
// succeeded (the snapshot in force is then the newest).
func (s *FileSource) LastError() error {
	if b := s.lastErr.Load(); b != nil {
		return b.err
	}
	return nil
}

// Reload loads the configuration now. If it is valid and differs from
// the snapshot in force, it replaces it and subscribers are told; if it
// is invalid, the error is logged and returned and nothing changes.
func (s *FileSource) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	snap, err := config.Load(s.paths...)
	if err != nil {
		s.lastErr.Store(&errorBox{err})
		s.log.Error("config reload failed; keeping the configuration in force",
			"version", s.Current().Version, "error", err.Error())
		return err
	}
	s.lastErr.Store(&errorBox{nil})
	old := s.Current()
	if old != nil && old.Version == snap.Version {
		return nil
	}
	for _, w := range snap.Warnings {
		s.log.Warn("config warning", "warning", w)
	}
	s.cur.Store(snap)
	s.log.Info("config reloaded", "version", snap.Version, "previous", old.Version, "warnings", len(snap.Warnings))
	s.publish(snap)
	return nil
}

// Run watches the configured paths until ctx ends: the directories named
// (any change in them), the parent directory of each file named (which
// also sees editors that save by renaming a new file over the old one,
// and Kubernetes ConfigMap volume swaps), and the parent of each
// directory named (so a directory that is removed and created again is
// watched again). Events are debounced; each burst causes one reload.
// Run returns nil when ctx ends, after closing the watcher and the
// subscriber channels; it can be called once.
func (s *FileSource) Run(ctx context.Context) error {
	if !s.startRunning() {
		return errors.New("discovery: FileSource.Run called twice")
	}
	defer s.closeSubscribers()

	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("discovery: watch: %w", err)
	}
	defer w.Close()

	ws := newWatchSet(w, s.paths, s.log)
	ws.sync()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ws.relevant(ev) {
				timer.Reset(s.debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			s.log.Warn("config watch error", "error", err)
			timer.Reset(s.debounce)
		case <-timer.C:
			ws.sync() // re-add watches on directories that came back
			_ = s.Reload()
		}
	}
}

// watchSet decides which directories to watch and which events matter.
type watchSet struct {
	w   *fsnotify.Watcher
	log *slog.Logger
	// dirs: directories whose every event matters (named directories,
	// parents of named files).
	dirs map[string]bool
	// names: parent directory -> base names whose events matter there
	// (the named directories themselves).
	names   map[string]map[string]bool
	watched map[string]bool
}

func newWatchSet(w *fsnotify.Watcher, paths []string, log *slog.Logger) *watchSet {
	ws := &watchSet{w: w, log: log, dirs: map[string]bool{}, names: map[string]map[string]bool{}, watched: map[string]bool{}}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			abs = p
		}
		abs = filepath.Clean(abs)
		if st, err := os.Stat(abs); err == nil && st.IsDir() {
			ws.dirs[abs] = true
			parent := filepath.Dir(abs)
			if ws.names[parent] == nil {
				ws.names[parent] = map[string]bool{}
			}
			ws.names[parent][filepath.Base(abs)] = true
		} else {
			ws.dirs[filepath.Dir(abs)] = true
		}
	}
	return ws
}

// sync adds watches that are missing (a directory may have been removed
// and created again; fsnotify drops a watch when its directory goes).
func (ws *watchSet) sync() {
	want := map[string]bool{}
	for d := range ws.dirs {
		want[d] = true
	}
	for d := range ws.names {
		want[d] = true
	}
	current := map[string]bool{}
	for _, d := range ws.w.WatchList() {
		current[filepath.Clean(d)] = true
	}
	for d := range want {
		if current[d] {
			continue
		}
		if err := ws.w.Add(d); err != nil {
			if !ws.watched[d] || !errors.Is(err, os.ErrNotExist) {
				ws.log.Debug("config watch: cannot watch directory yet", "dir", d, "error", err)
			}
			continue
		}
		ws.watched[d] = true
	}
}

func (ws *watchSet) relevant(ev fsnotify.Event) bool {
	if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write) && !ev.Has(fsnotify.Create) {
		return false
	}
	name := filepath.Clean(ev.Name)
	dir := filepath.Dir(name)
	if ws.dirs[dir] || ws.dirs[name] {
		return true
	}
	return ws.names[dir][filepath.Base(name)]
}
