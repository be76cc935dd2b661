package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Proc names a process to sample: Label is how reports call it (its comm
// when empty).
type Proc struct {
	Label string `json:"label"`
	PID   int    `json:"pid"`
}

// ParseProcs parses "PID" or "LABEL=PID" items (comma-separated lists are
// accepted inside an item).
func ParseProcs(items []string) ([]Proc, error) {
	var out []Proc
	for _, item := range items {
		for _, s := range strings.Split(item, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			label, num, ok := strings.Cut(s, "=")
			if !ok {
				label, num = "", s
			}
			pid, err := strconv.Atoi(num)
			if err != nil || pid <= 0 {
				return nil, fmt.Errorf("--pids %q: want PID or LABEL=PID", s)
			}
			out = append(out, Proc{Label: label, PID: pid})
		}
	}
	return out, nil
}

// ProcSample is one reading of a process's CPU time and resident memory.
type ProcSample struct {
	CPU    time.Duration // utime + stime
	RSSKiB int64         // VmRSS
}

// ReadProc samples /proc/PID (pid 0: this process).
func ReadProc(pid int) (ProcSample, error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return ProcSample{}, err
	}
	ticks, err := parseStatCPU(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("%s/stat: %w", dir, err)
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return ProcSample{}, err
	}
	rss, err := parseStatusRSS(status)
	if err != nil {
		return ProcSample{}, fmt.Errorf("%s/status: %w", dir, err)
	}
	return ProcSample{CPU: time.Duration(ticks) * time.Second / time.Duration(clockTicks), RSSKiB: rss}, nil
}

// ProcComm returns /proc/PID/comm, or "" when it cannot be read.
func ProcComm(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// parseStatCPU returns utime+stime in clock ticks from /proc/PID/stat. The
// second field (comm) is in parentheses and may itself contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatCPU(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no ')' after comm")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("only %d fields after comm", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime %q stime %q", f[11], f[12])
	}
	return ut + st, nil
}

// parseStatusRSS returns VmRSS in KiB from /proc/PID/status.
func parseStatusRSS(status []byte) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q", line)
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no VmRSS line (kernel thread or zombie?)")
}

// clockTicks is the kernel's USER_HZ (the unit of utime and stime), read
// from the auxiliary vector's AT_CLKTCK; 100 when it cannot be read.
var clockTicks = readClockTicks()

func readClockTicks() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	if hz := auxvClockTicks(b); hz > 0 {
		return hz
	}
	return 100
}

// auxvClockTicks finds AT_CLKTCK (17) in a 64-bit little-endian auxv.
func auxvClockTicks(b []byte) int64 {
	const atClkTck = 17
	for len(b) >= 16 {
		k := binary.LittleEndian.Uint64(b)
		v := binary.LittleEndian.Uint64(b[8:])
		if k == 0 {
			break
		}
		if k == atClkTck {
			return int64(v)
		}
		b = b[16:]
	}
	return 0
}
