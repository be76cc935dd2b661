package wsclient

import "strconv"

// closeCodeExplanations are the close-code names websockets 10.4 prints
// (websockets.frames.CLOSE_CODES), kept word for word.
var closeCodeExplanations = map[int]string{
	1000: "OK",
	1001: "going away",
	1002: "protocol error",
	1003: "unsupported type",
	1005: "no status code [internal]",
	1006: "connection closed abnormally [internal]",
	1007: "invalid data",
	1008: "policy violation",
	1009: "message too big",
	1010: "extension required",
	1011: "unexpected error",
	1012: "service restart",
	1013: "try again later",
	1014: "bad gateway",
	1015: "TLS failure [internal]",
}

// FormatClose renders a close code and reason exactly as websockets 10.4's
// Close.__str__ does: "1000 (OK)", "1001 (going away) bye", "3000
// (registered)", "4000 (private use)", "1004 (unknown)". The reason, when not
// empty, follows after one space.
func FormatClose(code int, reason string) string {
	var explanation string
	switch {
	case code >= 3000 && code < 4000:
		explanation = "registered"
	case code >= 4000 && code < 5000:
		explanation = "private use"
	default:
		var ok bool
		if explanation, ok = closeCodeExplanations[code]; !ok {
			explanation = "unknown"
		}
	}
	s := strconv.Itoa(code) + " (" + explanation + ")"
	if reason != "" {
		s += " " + reason
	}
	return s
}
