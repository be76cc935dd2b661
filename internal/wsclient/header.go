package wsclient

import (
	"fmt"
	"net/http"
	"strings"
)

// ParseHeaders turns "Name: value" strings (as given to -H/--header) into
// an http.Header, keeping repeated names as several values. A "Host" entry
// is kept in the result; Run sends it as the request's Host.
func ParseHeaders(lines []string) (http.Header, error) {
	h := make(http.Header, len(lines))
	for _, l := range lines {
		name, value, ok := strings.Cut(l, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" {
			return nil, fmt.Errorf("header %q is not in the form 'Name: value'", l)
		}
		if !isToken(name) {
			return nil, fmt.Errorf("header %q: %q is not a valid field name", l, name)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return nil, fmt.Errorf("header %q: the value contains CR, LF or NUL", l)
		}
		h.Add(name, value)
	}
	return h, nil
}

// isToken reports whether s is an RFC 9110 token (a valid field name).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}
