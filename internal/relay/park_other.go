//go:build !linux

package relay

import "syscall"

func pollerAvailable() bool { return false }

func (d *direction) parkSocket(rc syscall.RawConn) bool { return false }

func (d *direction) watchSocket(fd uintptr) bool { return false }

func (d *direction) forgetToken() {}
