package wsclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// ConnectError reports that the WebSocket connection could not be opened:
// refused, unresolvable host, timeout, a non-101 answer or a handshake the
// client cannot accept. Its message is the one line the command prints,
// "Failed to connect to URL: cause.", as the Python client words it.
type ConnectError struct {
	URL string
	Err error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("Failed to connect to %s: %s.", e.URL, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// dial opens the WebSocket connection described by opts.
func dial(ctx context.Context, opts *Options) (*websocket.Conn, error) {
	u, err := url.Parse(opts.URL)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s isn't a valid URI", opts.URL)
	case u.Scheme != "ws" && u.Scheme != "wss":
		return nil, fmt.Errorf("%s isn't a valid URI: scheme isn't ws or wss", opts.URL)
	case u.Host == "":
		return nil, fmt.Errorf("%s isn't a valid URI: host is missing", opts.URL)
	}

	header := opts.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	host := header.Get("Host")
	header.Del("Host")

	timeout := opts.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// A transport of our own: no proxy from the environment (the Python
	// client uses none either) and HTTP/1.1 only, as RFC 6455 requires.
	d := &net.Dialer{}
	dialFn := d.DialContext
	if len(opts.ConnectTo) > 0 {
		dialFn = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if to, ok := opts.ConnectTo[addr]; ok {
				addr = to
			}
			return d.DialContext(ctx, network, addr)
		}
	}
	transport := &http.Transport{
		DialContext:         dialFn,
		TLSHandshakeTimeout: timeout,
	}
	defer transport.CloseIdleConnections()
	conn, resp, err := websocket.Dial(dctx, opts.URL, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: transport},
		HTTPHeader:      header,
		Host:            host,
		Subprotocols:    opts.Subprotocols,
		CompressionMode: websocket.CompressionNoContextTakeover,
	})
	if err != nil {
		return nil, connectCause(err, resp, timeout)
	}
	return conn, nil
}

// connectCause reduces a dial error to the part a user needs to read.
func connectCause(err error, resp *http.Response, timeout time.Duration) error {
	if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("server rejected WebSocket connection: HTTP %d", resp.StatusCode)
	}
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("timed out after %s during opening handshake", timeout)
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted during opening handshake")
	case errors.As(err, &dnsErr):
		return dnsErr
	case errors.As(err, &opErr):
		return opErr
	}
	var uErr *url.Error
	if errors.As(err, &uErr) {
		return uErr.Err
	}
	msg := err.Error()
	for _, prefix := range []string{"failed to WebSocket dial: ", "failed to send handshake request: "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return errors.New(msg)
}
