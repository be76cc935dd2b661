package bench

import (
	"encoding/binary"
	"os"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	// comm with spaces and a ')' inside, as a process may name itself.
	stat := "4242 (we ird) (x) S 1 4242 4242 0 -1 4194560 1203 0 0 0 731 269 0 0 20 0 5 0 123 1000 200 18446744073709551615\n"
	got, err := parseStatCPU([]byte(stat))
	if err != nil || got != 1000 {
		t.Fatalf("parseStatCPU = %d, %v; want 1000", got, err)
	}
	if _, err := parseStatCPU([]byte("12 (x) S 1 2")); err == nil {
		t.Fatal("short stat accepted")
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Fatal("stat without comm accepted")
	}
}

func TestParseStatusRSS(t *testing.T) {
	status := "Name:\twsmesh\nVmPeak:\t  1000 kB\nVmRSS:\t   20480 kB\nRssAnon:\t 1 kB\n"
	got, err := parseStatusRSS([]byte(status))
	if err != nil || got != 20480 {
		t.Fatalf("parseStatusRSS = %d, %v", got, err)
	}
	if _, err := parseStatusRSS([]byte("Name:\tkthreadd\n")); err == nil {
		t.Fatal("status without VmRSS accepted")
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSKiB <= 0 {
		t.Fatalf("RSS %d", s.RSSKiB)
	}
	if clockTicks <= 0 {
		t.Fatalf("clockTicks %d", clockTicks)
	}
	if _, err := ReadProc(0); err != nil {
		t.Fatal(err)
	}
}

func TestAuxvClockTicks(t *testing.T) {
	b := make([]byte, 48)
	binary.LittleEndian.PutUint64(b[0:], 6) // AT_PAGESZ
	binary.LittleEndian.PutUint64(b[8:], 4096)
	binary.LittleEndian.PutUint64(b[16:], 17) // AT_CLKTCK
	binary.LittleEndian.PutUint64(b[24:], 250)
	if got := auxvClockTicks(b); got != 250 {
		t.Fatalf("got %d", got)
	}
	if got := auxvClockTicks(b[:16]); got != 0 {
		t.Fatalf("got %d without AT_CLKTCK", got)
	}
}

func TestParseProcs(t *testing.T) {
	got, err := ParseProcs([]string{"12", "client=34,server=56"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Proc{{"", 12}, {"client", 34}, {"server", 56}}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v want %v", got, want)
		}
	}
	for _, bad := range []string{"x", "a=0", "a=-3", "=b"} {
		if _, err := ParseProcs([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
