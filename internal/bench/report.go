package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteText writes a readable report of r.
func WriteText(w io.Writer, r *Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	label := r.Label
	if label == "" {
		label = r.URL
	}
	fmt.Fprintf(tw, "%s\t%s via %s\t%d conns", r.Mode, label, r.Addr, r.Conns)
	if r.Size > 0 {
		fmt.Fprintf(tw, " x %d B", r.Size)
	}
	if r.InFlight > 1 {
		fmt.Fprintf(tw, ", %d in flight each", r.InFlight)
	}
	fmt.Fprintf(tw, ", %.1f s\n", r.DurationSec)
	switch r.Mode {
	case ModeUpgrade:
		fmt.Fprintf(tw, "upgrades\t%d\t%.0f /s\n", r.Messages, r.UpgPerSec)
	case ModeIdle:
		fmt.Fprintf(tw, "open\t%d\tconnections held\n", r.OpenConns)
	default:
		fmt.Fprintf(tw, "messages\t%d\t%.0f msg/s, %.1f MB/s echoed\n", r.Messages, r.MsgPerSec, r.MBPerSec)
	}
	if l := r.Latency; l != nil {
		what := "round trip"
		if r.Mode == ModeUpgrade {
			what = "handshake"
		}
		fmt.Fprintf(tw, "%s µs\tp50 %.1f\tp99 %.1f  p99.9 %.1f  mean %.1f  max %.0f\n", what, l.P50, l.P99, l.P999, l.Mean, l.Max)
	}
	fmt.Fprintf(tw, "errors\t%d\t%s\n", r.Errors, r.Error)
	tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	per := "msg"
	if r.Mode == ModeUpgrade {
		per = "upgrade"
	}
	fmt.Fprintf(tw, "process\tpid\tcpu %%\tcpu µs/%s\trss KiB before\tafter\tper conn B\t\n", per)
	for _, p := range append(slices.Clone(r.Procs), r.Generator) {
		if p.Err != "" {
			fmt.Fprintf(tw, "%s\t%d\t%s\t\t\t\t\t\n", p.Label, p.PID, p.Err)
			continue
		}
		perConn := ""
		if p.RSSPerConn != 0 {
			perConn = fmt.Sprintf("%.0f", p.RSSPerConn)
		}
		pid := fmt.Sprint(p.PID)
		if p.PID == 0 {
			pid = "self"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.2f\t%d\t%d\t%s\t\n", p.Label, pid, p.CPUPercent, p.CPUUsPerMsg, p.RSSBefore, p.RSSAfter, perConn)
	}
	return tw.Flush()
}

// LoadResults reads every *.json report in dir.
func LoadResults(dir string) ([]*Result, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []*Result
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		r := new(Result)
		if err := json.Unmarshal(b, r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// metric is the headline number of a result and whether higher is better.
func metric(r *Result) (v float64, unit string) {
	switch r.Mode {
	case ModeLatency:
		if r.Latency == nil {
			return 0, "p50 µs"
		}
		return r.Latency.P50, "p50 µs"
	case ModeThroughput:
		return r.MsgPerSec, "msg/s"
	case ModeStream:
		return r.MBPerSec, "MB/s"
	case ModeUpgrade:
		return r.UpgPerSec, "upgrades/s"
	case ModeIdle:
		return procSum(r, func(p ProcReport) float64 { return p.RSSPerConn }), "proxy B/conn"
	}
	return 0, ""
}

func procSum(r *Result, f func(ProcReport) float64) float64 {
	s := 0.0
	for _, p := range r.Procs {
		s += f(p)
	}
	return s
}

func cpuPerMsg(r *Result) float64 {
	return procSum(r, func(p ProcReport) float64 { return p.CPUUsPerMsg })
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Pair is a headline comparison of two targets in one mode.
type Pair struct {
	Mode, A, B string
}

// DefaultPairs are the comparisons bench/compare.sh reports.
var DefaultPairs = []Pair{
	{ModeThroughput, "wsmesh-2hop-h1", "haproxy-2hop-h1"},
	{ModeLatency, "wsmesh-2hop-h1", "haproxy-2hop-h1"},
	{ModeThroughput, "wsmesh-2hop-h2", "haproxy-2hop-h2"},
	{ModeStream, "wsmesh-2hop-h2", "haproxy-2hop-h2"},
	{ModeLatency, "wsmesh-2hop-h2", "haproxy-2hop-h2"},
	{ModeStream, "wsmesh-1hop", "iocopy-1hop"},
	{ModeStream, "wsmesh-1hop-splice", "iocopy-1hop"},
	{ModeIdle, "wsmesh-2hop-h2", "haproxy-2hop-h2"},
}

// Summarize writes Markdown tables of results gathered over rounds: for
// each mode and target the median over rounds of its headline number, of
// its ratio to the direct target in the same round, and of its proxies'
// CPU per message; then the ratios of the given pairs. order fixes the
// order of targets (others follow by name).
func Summarize(w io.Writer, results []*Result, order []string, pairs []Pair) {
	// mode -> label -> round -> result
	by := map[string]map[string]map[int]*Result{}
	for _, r := range results {
		if by[r.Mode] == nil {
			by[r.Mode] = map[string]map[int]*Result{}
		}
		if by[r.Mode][r.Label] == nil {
			by[r.Mode][r.Label] = map[int]*Result{}
		}
		by[r.Mode][r.Label][r.Round] = r
	}
	rank := func(l string) int {
		if i := slices.Index(order, l); i >= 0 {
			return i
		}
		return len(order)
	}
	for _, mode := range Modes {
		labels := by[mode]
		if len(labels) == 0 {
			continue
		}
		names := make([]string, 0, len(labels))
		for l := range labels {
			names = append(names, l)
		}
		sort.Slice(names, func(i, j int) bool {
			if ri, rj := rank(names[i]), rank(names[j]); ri != rj {
				return ri < rj
			}
			return names[i] < names[j]
		})
		var unit string
		for _, r := range labels[names[0]] {
			_, unit = metric(r)
		}
		fmt.Fprintf(w, "\n### %s\n\n", mode)
		switch mode {
		case ModeLatency:
			fmt.Fprintf(w, "| target | p50 µs | p99 µs | p99.9 µs | p50 added vs direct µs | p50 / direct | proxy CPU µs/msg | rounds |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
		case ModeIdle:
			fmt.Fprintf(w, "| target | connections | %s | per process | rounds |\n|---|---:|---:|---|---:|\n", unit)
		default:
			per := "msg"
			if mode == ModeUpgrade {
				per = "upgrade"
			}
			fmt.Fprintf(w, "| target | %s | / direct | proxy CPU µs/%s | generator CPU %% | errors | rounds |\n|---|---:|---:|---:|---:|---:|---:|\n", unit, per)
		}
		direct := labels["direct"]
		for _, l := range names {
			var vals, ratios, cpus, p99s, p999s, added, gen, conns []float64
			var errs uint64
			var perProc []string
			for round, r := range labels[l] {
				v, _ := metric(r)
				vals = append(vals, v)
				cpus = append(cpus, cpuPerMsg(r))
				gen = append(gen, r.Generator.CPUPercent)
				errs += r.Errors
				conns = append(conns, float64(r.OpenConns))
				if r.Latency != nil {
					p99s = append(p99s, r.Latency.P99)
					p999s = append(p999s, r.Latency.P999)
				}
				if d, ok := direct[round]; ok {
					if dv, _ := metric(d); dv > 0 {
						ratios = append(ratios, v/dv)
						added = append(added, v-dv)
					}
				}
				if mode == ModeIdle && len(perProc) == 0 {
					for _, p := range r.Procs {
						perProc = append(perProc, fmt.Sprintf("%s %.0f", p.Label, p.RSSPerConn))
					}
				}
			}
			ratio := "—"
			if len(ratios) > 0 {
				ratio = fmt.Sprintf("%.2f", median(ratios))
			}
			cpu := "—"
			if median(cpus) > 0 {
				cpu = fmt.Sprintf("%.2f", median(cpus))
			}
			n := len(labels[l])
			switch mode {
			case ModeLatency:
				add := "—"
				if len(added) > 0 && l != "direct" {
					add = fmt.Sprintf("%+.1f", median(added))
				}
				fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f | %s | %s | %s | %d |\n", l, median(vals), median(p99s), median(p999s), add, ratio, cpu, n)
			case ModeIdle:
				fmt.Fprintf(w, "| %s | %.0f | %.0f | %s | %d |\n", l, median(conns), median(vals), strings.Join(perProc, ", "), n)
			default:
				fmt.Fprintf(w, "| %s | %s | %s | %s | %.0f | %d | %d |\n", l, num(median(vals)), ratio, cpu, median(gen), errs, n)
			}
		}
	}
	if len(pairs) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### head to head (median over rounds of the per-round ratio)\n\n| mode | A | B | A / B | A proxy CPU / B proxy CPU |\n|---|---|---|---:|---:|\n")
	for _, p := range pairs {
		a, b := by[p.Mode][p.A], by[p.Mode][p.B]
		var ratios, cpuRatios []float64
		for round, ra := range a {
			rb, ok := b[round]
			if !ok {
				continue
			}
			va, unit := metric(ra)
			vb, _ := metric(rb)
			if p.Mode == ModeLatency {
				// Compare the latency each proxy chain adds to direct.
				d, ok := by[p.Mode]["direct"][round]
				if !ok {
					continue
				}
				dv, _ := metric(d)
				va, vb = va-dv, vb-dv
				_ = unit
			}
			if vb != 0 {
				ratios = append(ratios, va/vb)
			}
			if cb := cpuPerMsg(rb); cb > 0 {
				cpuRatios = append(cpuRatios, cpuPerMsg(ra)/cb)
			}
		}
		if len(ratios) == 0 {
			continue
		}
		what := p.Mode
		if r := anyResult(a); r != nil {
			_, u := metric(r)
			what += " (" + u
			if p.Mode == ModeLatency {
				what += " added"
			}
			what += ")"
		}
		cr := "—"
		if len(cpuRatios) > 0 && p.Mode != ModeIdle {
			cr = fmt.Sprintf("%.2f", median(cpuRatios))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.2f | %s |\n", what, p.A, p.B, median(ratios), cr)
	}
}

func anyResult(m map[int]*Result) *Result {
	for _, r := range m {
		return r
	}
	return nil
}

func num(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}
