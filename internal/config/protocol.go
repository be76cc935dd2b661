package config

import "strings"

// Protocol is an Istio protocol name as selected for a port.
type Protocol string

// The protocols of Istio's protocol selection. ProtocolAuto (the empty
// string) means the protocol is not declared and is sniffed from the
// first bytes of each connection.
const (
	ProtocolAuto      Protocol = ""
	ProtocolHTTP      Protocol = "HTTP"
	ProtocolHTTP2     Protocol = "HTTP2"
	ProtocolHTTPProxy Protocol = "HTTP_PROXY"
	ProtocolGRPC      Protocol = "GRPC"
	ProtocolGRPCWeb   Protocol = "GRPC-Web"
	ProtocolHTTPS     Protocol = "HTTPS"
	ProtocolTCP       Protocol = "TCP"
	ProtocolTLS       Protocol = "TLS"
	ProtocolMongo     Protocol = "Mongo"
	ProtocolMySQL     Protocol = "MySQL"
	ProtocolRedis     Protocol = "Redis"
	ProtocolUDP       Protocol = "UDP"
)

// ParseProtocol parses an Istio protocol name case-insensitively
// ("http", "HTTP2", "grpc-web", ...). ok is false for an unknown name.
func ParseProtocol(s string) (p Protocol, ok bool) {
	switch strings.ToLower(s) {
	case "http":
		return ProtocolHTTP, true
	case "http2":
		return ProtocolHTTP2, true
	case "http_proxy":
		return ProtocolHTTPProxy, true
	case "grpc":
		return ProtocolGRPC, true
	case "grpc-web":
		return ProtocolGRPCWeb, true
	case "https":
		return ProtocolHTTPS, true
	case "tcp":
		return ProtocolTCP, true
	case "tls":
		return ProtocolTLS, true
	case "mongo":
		return ProtocolMongo, true
	case "mysql":
		return ProtocolMySQL, true
	case "redis":
		return ProtocolRedis, true
	case "udp":
		return ProtocolUDP, true
	}
	return ProtocolAuto, false
}

// IsHTTP reports whether the protocol is carried over HTTP (HTTP/1.1,
// HTTP/2, gRPC), the ports that Istio's mesh-wide h2UpgradePolicy
// applies to.
func (p Protocol) IsHTTP() bool {
	switch p {
	case ProtocolHTTP, ProtocolHTTP2, ProtocolHTTPProxy, ProtocolGRPC, ProtocolGRPCWeb:
		return true
	}
	return false
}

// String returns the protocol name, or "auto" for ProtocolAuto.
func (p Protocol) String() string {
	if p == ProtocolAuto {
		return "auto"
	}
	return string(p)
}

// servicePortProtocol applies Istio's protocol selection to a
// Kubernetes Service port: UDP ports are UDP; then appProtocol; then the
// port name ("grpc-web..." first, then the prefix before the first "-",
// or the whole name); anything else is sniffed (ProtocolAuto).
func servicePortProtocol(name, appProtocol, transport string) Protocol {
	if strings.EqualFold(transport, "UDP") {
		return ProtocolUDP
	}
	if appProtocol != "" {
		switch strings.ToLower(appProtocol) {
		case "kubernetes.io/h2c":
			return ProtocolHTTP2
		case "kubernetes.io/ws":
			return ProtocolHTTP
		case "kubernetes.io/wss":
			return ProtocolHTTPS
		}
		if p, ok := ParseProtocol(appProtocol); ok {
			return p
		}
	}
	if len(name) >= len("grpc-web") && strings.EqualFold(name[:len("grpc-web")], "grpc-web") {
		return ProtocolGRPCWeb
	}
	prefix := name
	if i := strings.IndexByte(name, '-'); i >= 0 {
		prefix = name[:i]
	}
	if p, ok := ParseProtocol(prefix); ok {
		return p
	}
	return ProtocolAuto
}
