package h1

import (
	"strings"
	"testing"
)

func TestLowerAndTitleNames(t *testing.T) {
	for _, c := range []struct{ in, lower, title string }{
		{"Sec-WebSocket-Key", "sec-websocket-key", "Sec-WebSocket-Key"},
		{"USER-AGENT", "user-agent", "User-Agent"},
		{"x-request-id", "x-request-id", "X-Request-Id"},
		{"X-Custom-Thing", "x-custom-thing", "X-Custom-Thing"},
		{"A-Very-Long-Uncommon-Header-Name-Indeed", "a-very-long-uncommon-header-name-indeed", "A-Very-Long-Uncommon-Header-Name-Indeed"},
		{"", "", ""},
	} {
		if got := LowerName(c.in); got != c.lower {
			t.Errorf("LowerName(%q) = %q, want %q", c.in, got, c.lower)
		}
		if got := TitleName(c.lower); got != c.title {
			t.Errorf("TitleName(%q) = %q, want %q", c.lower, got, c.title)
		}
	}
	for lower, title := range titleNames {
		if strings.ToLower(title) != lower || len(lower) > maxCommonName {
			t.Errorf("titleNames[%q] = %q", lower, title)
		}
	}
}

func TestCommonNamesDoNotAllocate(t *testing.T) {
	names := []string{"Host", "User-Agent", "Sec-WebSocket-Extensions", "origin", "X-Forwarded-For"}
	if n := testing.AllocsPerRun(100, func() {
		for _, name := range names {
			_ = TitleName(LowerName(name))
		}
	}); n != 0 {
		t.Fatalf("%v allocations converting common names", n)
	}
}
