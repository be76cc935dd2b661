package wsclient

import "testing"

func TestFormatClose(t *testing.T) {
	tests := []struct {
		code   int
		reason string
		want   string
	}{
		{1000, "", "1000 (OK)"},
		{1001, "", "1001 (going away)"},
		{1001, "server restarting", "1001 (going away) server restarting"},
		{1004, "", "1004 (unknown)"},
		{1005, "", "1005 (no status code [internal])"},
		{1006, "", "1006 (connection closed abnormally [internal])"},
		{1007, "bad text", "1007 (invalid data) bad text"},
		{1009, "", "1009 (message too big)"},
		{1015, "", "1015 (TLS failure [internal])"},
		{2999, "", "2999 (unknown)"},
		{3000, "x", "3000 (registered) x"},
		{4000, "bye", "4000 (private use) bye"},
		{4999, "", "4999 (private use)"},
		{5000, "", "5000 (unknown)"},
	}
	for _, tt := range tests {
		if got := FormatClose(tt.code, tt.reason); got != tt.want {
			t.Errorf("FormatClose(%d, %q) = %q, want %q", tt.code, tt.reason, got, tt.want)
		}
	}
}
