package config

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// isDNSLabel reports an RFC 1123 label: lowercase alphanumerics and
// '-', starting and ending alphanumeric, at most 63 characters.
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// isDNS1035Label is a DNS label that starts with a letter (Service names).
func isDNS1035Label(s string) bool {
	return isDNSLabel(s) && s[0] >= 'a' && s[0] <= 'z'
}

// isDNSSubdomain reports an RFC 1123 subdomain (dot-separated labels,
// at most 253 characters).
func isDNSSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}

// isIANASvcName reports a Kubernetes named port: at most 15 lowercase
// alphanumerics and '-', at least one letter, no "--", no '-' at either end.
func isIANASvcName(s string) bool {
	if len(s) == 0 || len(s) > 15 || strings.Contains(s, "--") || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}

// isQualifiedName reports a label name part: at most 63 of [A-Za-z0-9-_.],
// starting and ending alphanumeric.
func isQualifiedName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && !((c == '-' || c == '_' || c == '.') && i > 0 && i < len(s)-1) {
			return false
		}
	}
	return true
}

func isLabelKey(k string) bool {
	prefix, name, ok := strings.Cut(k, "/")
	if !ok {
		return isQualifiedName(k)
	}
	return isDNSSubdomain(prefix) && isQualifiedName(name)
}

func isLabelValue(v string) bool { return v == "" || isQualifiedName(v) }

func (b *builder) checkLabels(loc location, path string, labels map[string]string) {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !isLabelKey(k) {
			b.errf(loc, keyPath(path, k), "invalid label key")
		} else if !isLabelValue(labels[k]) {
			b.errf(loc, keyPath(path, k), "invalid label value %q (at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric)", labels[k])
		}
	}
}

func (b *builder) checkPort(loc location, field string, port int) bool {
	if port < 1 || port > 65535 {
		b.errf(loc, field, "port %d out of range 1-65535", port)
		return false
	}
	return true
}

// isHostname reports a DNS name (labels of letters, digits, '-' and '_'),
// case-insensitive, optionally with a trailing dot.
func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// isWildcardHost reports "*" or "*.<hostname>" or a hostname.
func isWildcardHost(s string) bool {
	if s == "*" {
		return true
	}
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		return isHostname(rest)
	}
	return isHostname(s)
}

// checkDefaultEndpoint validates a Sidecar ingress defaultEndpoint:
// "host:port" with an IP literal or localhost, or a Unix socket
// "unix:///path" or "unix://@abstract".
func checkDefaultEndpoint(s string) error {
	if rest, ok := strings.CutPrefix(s, "unix://"); ok {
		if strings.HasPrefix(rest, "/") && len(rest) > 1 || strings.HasPrefix(rest, "@") && len(rest) > 1 {
			return nil
		}
		return fmt.Errorf("%q is not a Unix socket path (want unix:///path/to/socket or unix://@name)", s)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port or unix:///path (e.g. 127.0.0.1:8080)", s)
	}
	if host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%q: host %q is not an IP address (want e.g. 127.0.0.1:8080)", s, host)
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q out of range 1-65535", s, port)
	}
	return nil
}

// checkEgressHost validates a Sidecar egress host "namespace/dnsName".
func checkEgressHost(h string) error {
	ns, host, ok := strings.Cut(h, "/")
	if !ok {
		return fmt.Errorf("%q must be namespace/dnsName (e.g. \"*/*\", \"./*\" or \"default/websockets-server.default.svc.cluster.local\")", h)
	}
	if ns != "*" && ns != "." && ns != "~" && !isDNSLabel(ns) {
		return fmt.Errorf("%q: namespace %q must be *, ., ~ or a namespace name", h, ns)
	}
	if !isWildcardHost(host) {
		return fmt.Errorf("%q: %q is not a host name or wildcard like *.example.com", h, host)
	}
	return nil
}

// selectorMatches reports whether every selector label is set to the
// same value in labels. An empty selector matches nothing here; callers
// decide what an absent selector means.
func selectorMatches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// hostMatches reports whether pattern ("*", "*.suffix" or an exact
// name) matches the lowercase hostname h.
func hostMatches(pattern, h string) bool {
	pattern = strings.ToLower(pattern)
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(h, pattern[1:])
	}
	return pattern == h
}
