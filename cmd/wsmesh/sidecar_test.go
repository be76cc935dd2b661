package main

import (
	"runtime/debug"
	"testing"

	"github.com/spf13/cobra"
)

// gcPercent reads the current GOGC setting.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	newCmd := func(args ...string) (*cobra.Command, int) {
		var pct int
		cmd := &cobra.Command{}
		cmd.Flags().IntVar(&pct, "gc-percent", defaultGCPercent, "")
		if err := cmd.Flags().Parse(args); err != nil {
			t.Fatal(err)
		}
		return cmd, pct
	}

	cmd, pct := newCmd()
	if err := setGCPercent(cmd, pct); err != nil || gcPercent() != defaultGCPercent {
		t.Fatalf("default: err %v, GOGC %d, want %d", err, gcPercent(), defaultGCPercent)
	}
	cmd, pct = newCmd("--gc-percent", "0")
	if err := setGCPercent(cmd, pct); err == nil {
		t.Fatal("--gc-percent 0 accepted")
	}

	t.Setenv("GOGC", "200")
	debug.SetGCPercent(200)
	cmd, pct = newCmd()
	if err := setGCPercent(cmd, pct); err != nil || gcPercent() != 200 {
		t.Fatalf("GOGC set, flag not: err %v, GOGC %d, want the environment's 200", err, gcPercent())
	}
	cmd, pct = newCmd("--gc-percent", "30")
	if err := setGCPercent(cmd, pct); err != nil || gcPercent() != 30 {
		t.Fatalf("GOGC and flag set: err %v, GOGC %d, want the flag's 30", err, gcPercent())
	}
}
