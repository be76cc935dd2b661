package httpproxy

import (
	"net"
	"regexp"
	"testing"
	"unsafe"
)

func TestAddrStrings(t *testing.T) {
	for _, c := range []struct {
		a    net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 8080}, "127.0.0.1:8080"}, // 16-byte IPv4-in-IPv6 form
		{&net.TCPAddr{IP: net.IPv4(10, 1, 2, 3).To4(), Port: 1}, "10.1.2.3:1"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 443, Zone: "eth0"}, "[fe80::1%eth0]:443"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::2"), Port: 15006}, "[2001:db8::2]:15006"},
		{&net.UnixAddr{Name: "/run/app.sock", Net: "unix"}, "/run/app.sock"},
		{nil, ""},
	} {
		if got := addrString(c.a); got != c.want {
			t.Errorf("addrString(%v) = %q, want %q", c.a, got, c.want)
		}
		if c.a != nil {
			if got := c.a.String(); got != c.want {
				t.Errorf("%v.String() = %q: addrString must match it", c.a, got)
			}
		}
		if got := sharedAddrString(c.a); got != c.want {
			t.Errorf("sharedAddrString(%v) = %q, want %q", c.a, got, c.want)
		}
	}
	a := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 15001}
	s1, s2 := sharedAddrString(a), sharedAddrString(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1).To4(), Port: 15001})
	if unsafe.StringData(s1) != unsafe.StringData(s2) {
		t.Error("sharedAddrString made a second string for the same address")
	}
}

func TestRequestIDIsUUIDv4(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 100 {
		id := newRequestID()
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("request id %q: not a fresh UUID v4", id)
		}
		seen[id] = true
	}
}
