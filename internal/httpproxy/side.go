package httpproxy

import (
	"log/slog"
	"time"
)

// SideDefaults fills the defaults that the outbound and inbound sides of a
// sidecar share for the listeners they serve with a Proxy configured by c.
// It returns logger, or slog.Default() when logger is nil, and detect, the
// time to wait for a new connection's first bytes (protocol detection):
// 5 seconds when detect is not positive, and never longer than
// c.HeaderReadTimeout when that is set, since detection counts against the
// time a client has to send its request head.
func (c Config) SideDefaults(logger *slog.Logger, detect time.Duration) (*slog.Logger, time.Duration) {
	if logger == nil {
		logger = slog.Default()
	}
	if detect <= 0 {
		detect = 5 * time.Second
	}
	if h := c.HeaderReadTimeout; h > 0 && h < detect {
		detect = h
	}
	return logger, detect
}
