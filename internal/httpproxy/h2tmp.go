package httpproxy

import (
	"bufio"
	"context"
	"net"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/h1"
)

func (p *Proxy) upgradeOverH2(ctx context.Context, c net.Conn, br *bufio.Reader, req *h1.Request, t *Target, rec *accesslog.Record) (bool, bool) {
	return false, false
}
func (p *Proxy) forwardPlainOverH2(ctx context.Context, c net.Conn, br *bufio.Reader, req *h1.Request, t *Target, rec *accesslog.Record, keep bool) bool {
	return p.forwardH1(ctx, c, br, req, t, rec, keep)
}
