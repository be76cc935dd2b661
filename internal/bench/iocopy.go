package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// Relay is the baseline the one-hop sidecar is measured against: accept a
// TCP connection, dial Upstream, and io.Copy both ways. With two
// *net.TCPConn, io.Copy ends in TCPConn.ReadFrom, which uses splice(2) on
// Linux; Buffered hides ReadFrom and WriteTo so that the bytes go through a
// 32 KiB user-space buffer instead. It knows nothing of HTTP or WebSocket.
type Relay struct {
	Upstream string
	Buffered bool
}

// Serve relays every connection accepted on ln until ctx ends, then closes
// ln and every relayed connection and waits for them.
func (r *Relay) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		wg.Go(func() { r.relay(ctx, c) })
	}
}

func (r *Relay) relay(ctx context.Context, down net.Conn) {
	defer down.Close()
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", r.Upstream)
	if err != nil {
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { down.Close(); up.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { r.pipe(up, down) })
	r.pipe(down, up)
	wg.Wait()
}

// pipe copies src to dst, then half-closes dst.
func (r *Relay) pipe(dst, src net.Conn) {
	if r.Buffered {
		_, _ = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, 32<<10))
	} else {
		_, _ = io.Copy(dst, src)
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		_ = dst.Close()
	}
}
