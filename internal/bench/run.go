package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Modes.
const (
	ModeLatency    = "latency"
	ModeThroughput = "throughput"
	ModeStream     = "stream"
	ModeUpgrade    = "upgrade"
	ModeIdle       = "idle"
)

// Modes lists the modes in the order reports show them.
var Modes = []string{ModeLatency, ModeThroughput, ModeStream, ModeUpgrade, ModeIdle}

// Config is one run. Zero fields take the mode's defaults (Defaults).
type Config struct {
	Mode     string
	Target   *Target
	Conns    int           // connections (upgrade: concurrent openers)
	Size     int           // message payload bytes
	InFlight int           // stream: messages in flight per connection
	Duration time.Duration // measured window
	Warmup   time.Duration // before the window (idle: settle time after opening)
	Procs    []Proc        // processes to sample
	Label    string        // target name recorded in the report
	Round    int           // round number recorded in the report
	// Progress, when set, gets a progress line every second.
	Progress io.Writer
	// ProgressTTY rewrites one line with \r instead of printing lines.
	ProgressTTY bool
}

// Defaults fills zero fields with the mode's defaults.
func (c *Config) Defaults() error {
	type d struct{ conns, size, inflight int }
	defs := map[string]d{
		ModeLatency:    {1, 64, 1},
		ModeThroughput: {64, 1024, 1},
		ModeStream:     {4, 64 << 10, 8},
		ModeUpgrade:    {8, 0, 0},
		ModeIdle:       {1000, 0, 0},
	}
	def, ok := defs[c.Mode]
	if !ok {
		return fmt.Errorf("unknown mode %q (want latency, throughput, stream, upgrade or idle)", c.Mode)
	}
	if c.Conns <= 0 {
		c.Conns = def.conns
	}
	if c.Size <= 0 {
		c.Size = def.size
	}
	if c.InFlight <= 0 {
		c.InFlight = def.inflight
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	}
	return nil
}

// Result is one run's report (the JSON of wsmesh bench --json).
type Result struct {
	Mode        string  `json:"mode"`
	Label       string  `json:"label,omitempty"`
	Round       int     `json:"round,omitempty"`
	URL         string  `json:"url"`
	Addr        string  `json:"addr"`
	Conns       int     `json:"conns"`
	Size        int     `json:"size,omitempty"`
	InFlight    int     `json:"in_flight,omitempty"`
	DurationSec float64 `json:"duration_s"`

	Messages  uint64  `json:"messages"`            // echoed messages (upgrade: upgrades)
	MsgPerSec float64 `json:"msg_per_s,omitempty"` // latency, throughput, stream
	MBPerSec  float64 `json:"mb_per_s,omitempty"`  // echoed payload, 10^6 B/s
	UpgPerSec float64 `json:"upgrades_per_s,omitempty"`
	OpenConns int     `json:"open_conns,omitempty"` // idle: connections held

	Latency *LatencyReport `json:"latency_us,omitempty"`
	Errors  uint64         `json:"errors"`
	Error   string         `json:"first_error,omitempty"`

	Procs     []ProcReport `json:"procs,omitempty"`
	Generator ProcReport   `json:"generator"`
}

// LatencyReport holds round-trip (upgrade: handshake) times in µs.
type LatencyReport struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

// ProcReport is what one sampled process did during the window.
type ProcReport struct {
	Label       string  `json:"label"`
	PID         int     `json:"pid"`
	CPUSec      float64 `json:"cpu_s"`
	CPUPercent  float64 `json:"cpu_percent"`                  // of one core
	CPUUsPerMsg float64 `json:"cpu_us_per_msg"`               // per message (upgrade: per upgrade)
	RSSBefore   int64   `json:"rss_before_kib"`               // before the window (idle: before opening)
	RSSAfter    int64   `json:"rss_after_kib"`                // at the end of the window
	RSSPerConn  float64 `json:"rss_per_conn_bytes,omitempty"` // idle
	Err         string  `json:"error,omitempty"`
}

// worker holds one goroutine's counters, padded against false sharing.
type worker struct {
	msgs  atomic.Uint64
	bytes atomic.Uint64
	hist  Histogram
	_     [64]byte
}

type runState struct {
	cfg       *Config
	measuring atomic.Bool
	errs      atomic.Uint64
	errMu     sync.Mutex
	firstErr  error
	workers   []*worker
	open      atomic.Int64
}

func (s *runState) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // stopping: errors from closed connections are expected
	}
	s.errs.Add(1)
	s.errMu.Lock()
	if s.firstErr == nil {
		s.firstErr = err
	}
	s.errMu.Unlock()
}

func (s *runState) totals() (msgs, bytes uint64) {
	for _, w := range s.workers {
		msgs += w.msgs.Load()
		bytes += w.bytes.Load()
	}
	return
}

// RaiseFileLimit raises this process's RLIMIT_NOFILE soft limit to its hard
// limit (and the hard limit too when allowed) so that idle runs can hold
// many connections.
func RaiseFileLimit(want uint64) {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) != nil {
		return
	}
	if r.Max < want {
		nr := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nr) == nil {
			return
		}
	}
	r.Cur = r.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
}

// Run performs one bounded run. It returns an error only when nothing could
// be measured (no connection could be opened, for instance); failures
// during the run are counted in Result.Errors.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Defaults(); err != nil {
		return nil, err
	}
	if cfg.Target == nil {
		return nil, errors.New("no target")
	}
	if cfg.Mode == ModeIdle {
		RaiseFileLimit(uint64(cfg.Conns) + 1024)
	}
	s := &runState{cfg: &cfg}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Open the connections first, so that a refused target fails fast.
	var conns []*wsConn
	if cfg.Mode != ModeUpgrade && cfg.Mode != ModeIdle {
		for i := 0; i < cfg.Conns; i++ {
			c, err := dialWS(ctx, cfg.Target, cfg.Size)
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return nil, fmt.Errorf("connection %d to %s: %w", i+1, cfg.Target.Addr, err)
			}
			conns = append(conns, c)
		}
	}
	var idleBefore []procOrErr
	if cfg.Mode == ModeIdle {
		idleBefore = sampleAll(cfg.Procs)
	}

	var wg sync.WaitGroup
	switch cfg.Mode {
	case ModeLatency, ModeThroughput:
		for _, c := range conns {
			w := &worker{}
			s.workers = append(s.workers, w)
			wg.Go(func() { s.pingPong(ctx, c, w) })
		}
	case ModeStream:
		for _, c := range conns {
			w := &worker{}
			s.workers = append(s.workers, w)
			wg.Go(func() { s.stream(ctx, c, w) })
		}
	case ModeUpgrade:
		for i := 0; i < cfg.Conns; i++ {
			w := &worker{}
			s.workers = append(s.workers, w)
			wg.Go(func() { s.upgrade(ctx, w) })
		}
	case ModeIdle:
		held := s.openIdle(ctx)
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		if len(held) == 0 {
			return nil, fmt.Errorf("idle: no connection could be opened: %v", s.firstErr)
		}
	}
	// Closing the connections ends blocked reads and writes when the run stops.
	stopConns := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			c.Close()
		}
	})
	defer stopConns()

	if cfg.Warmup > 0 {
		s.progress(ctx, "warmup", cfg.Warmup, nil)
	}
	startMsgs, startBytes := s.totals()
	before := sampleAll(cfg.Procs)
	self0, _ := ReadProc(0)
	t0 := time.Now()
	s.measuring.Store(true)
	s.progress(ctx, cfg.Mode, cfg.Duration, func() uint64 { m, _ := s.totals(); return m - startMsgs })
	s.measuring.Store(false)
	elapsed := time.Since(t0)
	endMsgs, endBytes := s.totals()
	after := sampleAll(cfg.Procs)
	self1, _ := ReadProc(0)
	openConns := int(s.open.Load())
	cancel()
	wg.Wait()

	msgs := endMsgs - startMsgs
	secs := elapsed.Seconds()
	res := &Result{
		Mode: cfg.Mode, Label: cfg.Label, Round: cfg.Round,
		URL: cfg.Target.URL.String(), Addr: cfg.Target.Addr,
		Conns: cfg.Conns, DurationSec: secs, Messages: msgs,
		Errors: s.errs.Load(),
	}
	if s.firstErr != nil {
		res.Error = s.firstErr.Error()
	}
	switch cfg.Mode {
	case ModeLatency, ModeThroughput, ModeStream:
		res.Size = cfg.Size
		res.MsgPerSec = float64(msgs) / secs
		res.MBPerSec = float64(endBytes-startBytes) / secs / 1e6
		if cfg.Mode == ModeStream {
			res.InFlight = cfg.InFlight
		}
	case ModeUpgrade:
		res.UpgPerSec = float64(msgs) / secs
	case ModeIdle:
		res.OpenConns = openConns
		before = idleBefore
	}
	if cfg.Mode != ModeStream && cfg.Mode != ModeIdle {
		var h Histogram
		for _, w := range s.workers {
			h.Merge(&w.hist)
		}
		if h.Count() > 0 {
			us := func(d time.Duration) float64 { return float64(d) / 1e3 }
			res.Latency = &LatencyReport{P50: us(h.Quantile(0.5)), P99: us(h.Quantile(0.99)),
				P999: us(h.Quantile(0.999)), Mean: us(h.Mean()), Max: us(h.Max())}
		}
	}
	for i, p := range cfg.Procs {
		res.Procs = append(res.Procs, procReport(p, before[i], after[i], elapsed, msgs, openConns, cfg.Mode == ModeIdle))
	}
	res.Generator = procReport(Proc{Label: "generator"}, procOrErr{s: self0}, procOrErr{s: self1}, elapsed, msgs, 0, false)
	return res, nil
}

// procOrErr is a sample or the reason there is none.
type procOrErr struct {
	s   ProcSample
	err error
}

func sampleAll(ps []Proc) []procOrErr {
	out := make([]procOrErr, len(ps))
	for i, p := range ps {
		s, err := ReadProc(p.PID)
		out[i] = procOrErr{s, err}
	}
	return out
}

func procReport(p Proc, a, b procOrErr, elapsed time.Duration, msgs uint64, conns int, idle bool) ProcReport {
	r := ProcReport{Label: p.Label, PID: p.PID}
	if r.Label == "" && p.PID != 0 {
		r.Label = ProcComm(p.PID)
	}
	if a.err != nil || b.err != nil {
		r.Err = errors.Join(a.err, b.err).Error()
		return r
	}
	cpu := b.s.CPU - a.s.CPU
	r.CPUSec = cpu.Seconds()
	r.CPUPercent = 100 * cpu.Seconds() / elapsed.Seconds()
	if msgs > 0 {
		r.CPUUsPerMsg = float64(cpu.Microseconds()) / float64(msgs)
	}
	r.RSSBefore, r.RSSAfter = a.s.RSSKiB, b.s.RSSKiB
	if idle && conns > 0 {
		r.RSSPerConn = float64(b.s.RSSKiB-a.s.RSSKiB) * 1024 / float64(conns)
	}
	return r
}

// progress waits d (or until ctx ends), writing a progress line every
// second when configured. count, if set, gives the messages so far.
func (s *runState) progress(ctx context.Context, phase string, d time.Duration, count func() uint64) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	var tick <-chan time.Time
	if s.cfg.Progress != nil && d >= 2*time.Second {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			if s.cfg.ProgressTTY && tick != nil {
				fmt.Fprint(s.cfg.Progress, "\r\033[K")
			}
			return
		case <-tick:
			el := time.Since(start)
			line := fmt.Sprintf("%s %s %4.0fs/%.0fs", s.cfg.Label, phase, el.Seconds(), d.Seconds())
			if count != nil {
				line += fmt.Sprintf("  %d msgs  %.0f/s", count(), float64(count())/el.Seconds())
			}
			if s.cfg.Mode == ModeIdle {
				line += fmt.Sprintf("  %d open", s.open.Load())
			}
			if e := s.errs.Load(); e > 0 {
				line += fmt.Sprintf("  %d errors", e)
			}
			if s.cfg.ProgressTTY {
				fmt.Fprint(s.cfg.Progress, "\r\033[K"+line)
			} else {
				fmt.Fprintln(s.cfg.Progress, line)
			}
		}
	}
}

// pingPong sends one message and waits for its echo, over and over.
func (s *runState) pingPong(ctx context.Context, c *wsConn, w *worker) {
	defer c.Close()
	for ctx.Err() == nil {
		t := time.Now()
		if err := c.writeMessage(); err != nil {
			s.fail(ctx, err)
			return
		}
		n, err := c.readMessage()
		if err != nil {
			s.fail(ctx, err)
			return
		}
		if s.measuring.Load() {
			w.hist.Record(time.Since(t))
		}
		w.msgs.Add(1)
		w.bytes.Add(uint64(n))
	}
}

// stream keeps cfg.InFlight messages in flight on c: a writer sends while
// fewer are outstanding, the reader counts echoes and frees a slot.
func (s *runState) stream(ctx context.Context, c *wsConn, w *worker) {
	defer c.Close()
	slots := make(chan struct{}, s.cfg.InFlight)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			if err := c.writeMessage(); err != nil {
				s.fail(ctx, err)
				c.Close()
				return
			}
		}
	})
	for {
		n, err := c.readMessage()
		if err != nil {
			s.fail(ctx, err)
			c.Close()
			break
		}
		<-slots
		w.msgs.Add(1)
		w.bytes.Add(uint64(n))
	}
	wg.Wait()
}

// upgrade opens a WebSocket, closes it with a close handshake, and repeats.
func (s *runState) upgrade(ctx context.Context, w *worker) {
	for ctx.Err() == nil {
		t := time.Now()
		c, err := dialWS(ctx, s.cfg.Target, 0)
		if err != nil {
			s.fail(ctx, err)
			if !sleepCtx(ctx, 10*time.Millisecond) {
				return
			}
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		if s.measuring.Load() {
			w.hist.Record(time.Since(t))
		}
		err = c.closeHandshake(2 * time.Second)
		stop()
		if err != nil {
			s.fail(ctx, fmt.Errorf("close handshake: %w", err))
			continue
		}
		w.msgs.Add(1)
	}
}

// openIdle opens cfg.Conns connections with up to 64 handshakes at a time
// and returns those that opened; failures are counted as errors.
func (s *runState) openIdle(ctx context.Context) []*wsConn {
	const parallel = 64
	held := make([]*wsConn, s.cfg.Conns)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for i := 0; i < parallel; i++ {
		wg.Go(func() {
			for {
				j := next.Add(1) - 1
				if j >= int64(s.cfg.Conns) || ctx.Err() != nil {
					return
				}
				c, err := dialWS(ctx, s.cfg.Target, 0)
				if err != nil {
					s.fail(ctx, err)
					continue
				}
				held[j] = c
				s.open.Add(1)
			}
		})
	}
	wg.Wait()
	out := held[:0]
	for _, c := range held {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
