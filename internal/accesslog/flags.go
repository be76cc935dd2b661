package accesslog

import (
	"fmt"
	"strings"
)

// Flags is a set of Envoy response flags (%RESPONSE_FLAGS%). Its String
// method writes the short codes in Envoy's order joined by ",", or "-" for the
// empty set, exactly as Envoy logs them.
type Flags uint32

// Envoy's response flags, in the order Envoy prints them. The comment gives
// the short code that appears in access logs and in the response_flags label.
const (
	FailedLocalHealthCheck           Flags = 1 << iota // LH
	NoHealthyUpstream                                  // UH
	UpstreamRequestTimeout                             // UT
	LocalReset                                         // LR
	UpstreamRemoteReset                                // UR
	UpstreamConnectionFailure                          // UF
	UpstreamConnectionTermination                      // UC
	UpstreamOverflow                                   // UO
	NoRouteFound                                       // NR
	DelayInjected                                      // DI
	FaultInjected                                      // FI
	RateLimited                                        // RL
	UnauthorizedExternalService                        // UAEX
	RateLimitServiceError                              // RLSE
	DownstreamConnectionTermination                    // DC
	UpstreamRetryLimitExceeded                         // URX
	StreamIdleTimeout                                  // SI
	InvalidEnvoyRequestHeaders                         // IH
	DownstreamProtocolError                            // DPE
	UpstreamMaxStreamDurationReached                   // UMSDR
	ResponseFromCacheFilter                            // RFCF
	NoFilterConfigFound                                // NFCF
	DurationTimeout                                    // DT
	UpstreamProtocolError                              // UPE
	NoClusterFound                                     // NC
	OverloadManager                                    // OM
	DNSResolutionFailed                                // DF
	DropOverload                                       // DO
	DownstreamRemoteReset                              // DR
	UnconditionalDropOverload                          // UDO

	flagCount = iota
)

var flagNames = [flagCount]string{
	"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL",
	"UAEX", "RLSE", "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF",
	"DT", "UPE", "NC", "OM", "DF", "DO", "DR", "UDO",
}

// String returns the flags as Envoy logs them, e.g. "UF,URX", or "-".
func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	return string(f.AppendTo(make([]byte, 0, 16)))
}

// AppendTo appends f as String would, without allocating when dst has room.
func (f Flags) AppendTo(dst []byte) []byte {
	if f == 0 {
		return append(dst, '-')
	}
	first := true
	for i := range flagCount {
		if f&(1<<i) == 0 {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, flagNames[i]...)
	}
	return dst
}

// Has reports whether every flag in g is set in f.
func (f Flags) Has(g Flags) bool { return f&g == g }

// ParseFlags parses Envoy's short form ("UF,URX", "-" or "") into Flags.
func ParseFlags(s string) (Flags, error) {
	if s == "" || s == "-" {
		return 0, nil
	}
	var f Flags
	for part := range strings.SplitSeq(s, ",") {
		i := flagIndex(part)
		if i < 0 {
			return f, fmt.Errorf("unknown response flag %q", part)
		}
		f |= 1 << i
	}
	return f, nil
}

func flagIndex(code string) int {
	for i, n := range flagNames {
		if n == code {
			return i
		}
	}
	return -1
}
