//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd && !dragonfly

package wsclient

import "os"

// IsTerminal reports whether f is a character device, the best guess at a
// terminal available on this platform.
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
