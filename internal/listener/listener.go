// Package listener runs accept loops: each accepted connection is handed to
// a handler in its own goroutine, and Serve returns only after every handler
// it started has returned, so shutdown leaves nothing running.
package listener

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/wsmesh/wsmesh/internal/detect"
	"github.com/wsmesh/wsmesh/internal/intercept"
)

// Handler serves one accepted connection and closes it.
type Handler func(ctx context.Context, c net.Conn)

// Serve accepts on ln until ctx ends or ln is closed, then waits for the
// handlers of accepted connections to return. Handlers see connCtx, which
// ends when drain is cancelled (nil: when ctx ends).
func Serve(ctx context.Context, connCtx context.Context, ln net.Listener, h Handler, log *slog.Logger) error {
	if connCtx == nil {
		connCtx = ctx
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off, as net/http does.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			log.Warn("accept failed; retrying", "listener", ln.Addr().String(), "cause", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-ctx.Done():
				return nil
			}
		}
		delay = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			h(connCtx, c)
		}()
	}
}

// OriginalConn is an intercepted connection whose LocalAddr is the address
// the client connected to before an iptables redirect, as Envoy reports it
// (downstream_local_address).
type OriginalConn struct {
	net.Conn
	Original net.Addr
}

// LocalAddr returns the original destination.
func (c *OriginalConn) LocalAddr() net.Addr { return c.Original }

// CloseWrite half-closes the underlying TCP connection.
func (c *OriginalConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// TCPConn returns the underlying TCP socket (nil if it is not one), so
// that a relay can read and write it with raw system calls.
func (c *OriginalConn) TCPConn() *net.TCPConn {
	tc, _ := c.Conn.(*net.TCPConn)
	return tc
}

// SyscallConn returns the underlying socket's, so that a relay can wait
// for an idle connection's bytes without a goroutine.
func (c *OriginalConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// Intercepted prepares a connection an iptables REDIRECT sent to a
// transparent listener: it recovers the original destination (see
// package intercept) and detects the protocol from the first bytes. It
// closes c and reports false when there is no original destination, or
// when c was addressed to the listener itself (nothing to route it to).
func Intercepted(c net.Conn, detectTimeout time.Duration, log *slog.Logger) (*OriginalConn, *bufio.Reader, detect.Protocol, bool) {
	dst, err := intercept.OriginalDst(c)
	if err != nil {
		log.Warn("no original destination; closing", "downstream", c.RemoteAddr().String(), "cause", err)
		c.Close()
		return nil, nil, 0, false
	}
	if local, ok := c.LocalAddr().(*net.TCPAddr); ok && local.AddrPort() == dst {
		log.Warn("connection addressed to the transparent port itself, not redirected; closing", "downstream", c.RemoteAddr().String())
		c.Close()
		return nil, nil, 0, false
	}
	oc := &OriginalConn{Conn: c, Original: net.TCPAddrFromAddrPort(dst)}
	br := bufio.NewReaderSize(oc, 4096)
	proto, err := detect.Detect(oc, br, detectTimeout)
	if err != nil {
		c.Close()
		return nil, nil, 0, false
	}
	return oc, br, proto, true
}
