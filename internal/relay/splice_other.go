//go:build !linux

package relay

import "net"

func canSplice(down, up net.Conn) bool { return false }

func spliceCopy(d *direction) error { panic("relay: splice is Linux-only") }
