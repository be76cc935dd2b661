package relay

import (
	"net"
	"syscall"
	"time"
)

const (
	spliceMove     = 0x1 // SPLICE_F_MOVE
	spliceNonblock = 0x2 // SPLICE_F_NONBLOCK
	// spliceChunk is the most one splice moves: the default pipe capacity.
	// Larger pipes (F_SETPIPE_SZ) measured slower on loopback.
	spliceChunk = 64 << 10
)

func canSplice(down, up net.Conn) bool {
	_, ok1 := down.(*net.TCPConn)
	_, ok2 := up.(*net.TCPConn)
	return ok1 && ok2
}

// spliceCopy moves bytes from d.src to d.dst through a pipe with splice(2),
// so they never enter user space. It waits for readiness through the
// connections' RawConn, so deadlines and Close from another goroutine work as
// for Read and Write, and it updates the counters after every chunk.
func spliceCopy(d *direction) error {
	rsrc, err := d.src.(*net.TCPConn).SyscallConn()
	if err != nil {
		return &SideError{d.srcSide, "read", err}
	}
	rdst, err := d.dst().(*net.TCPConn).SyscallConn()
	if err != nil {
		return &SideError{d.other(), "write", err}
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return d.bufferCopy() // out of descriptors for a pipe: copy through a buffer instead
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	for {
		var n int64
		var serr error
		err := rsrc.Read(func(fd uintptr) bool {
			for {
				n, serr = syscall.Splice(int(fd), nil, p[1], nil, spliceChunk, spliceMove|spliceNonblock)
				if serr != syscall.EINTR {
					return serr != syscall.EAGAIN
				}
			}
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return &SideError{d.srcSide, "read", err}
		}
		if n == 0 {
			return nil // EOF
		}
		for n > 0 {
			var m int64
			var werr error
			err := rdst.Write(func(fd uintptr) bool {
				for {
					m, werr = syscall.Splice(p[0], nil, int(fd), nil, int(n), spliceMove|spliceNonblock)
					if werr != syscall.EINTR {
						return werr != syscall.EAGAIN
					}
				}
			})
			if err == nil {
				err = werr
			}
			if err == nil && m <= 0 {
				err = syscall.EIO // cannot happen with bytes in the pipe; never loop on it
			}
			if err != nil {
				return &SideError{d.other(), "write", err}
			}
			n -= m
			d.wrote(int(m), time.Now().UnixNano())
		}
	}
}
