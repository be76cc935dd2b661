package h2tunnel

import (
	"errors"
	"fmt"

	"golang.org/x/net/http2"
)

// StreamError reports a stream ended by RST_STREAM. Remote is set when the
// peer sent it (log it as an upstream/downstream reset), clear when wsmesh
// reset the stream itself.
type StreamError struct {
	StreamID uint32
	Code     http2.ErrCode
	Remote   bool
}

func (e *StreamError) Error() string {
	who := "local"
	if e.Remote {
		who = "peer"
	}
	return fmt.Sprintf("h2tunnel: stream %d reset by %s: %v", e.StreamID, who, e.Code)
}

// GoAwayError reports a stream that the peer's GOAWAY excluded: its id is
// above LastStreamID, so the peer never processed it and it may be retried
// on another connection.
type GoAwayError struct {
	LastStreamID uint32
	Code         http2.ErrCode
	Debug        string
}

func (e *GoAwayError) Error() string {
	return fmt.Sprintf("h2tunnel: peer sent GOAWAY (last stream %d, %v %q): stream not processed", e.LastStreamID, e.Code, e.Debug)
}

var (
	// ErrExtendedConnectUnsupported is returned by RoundTrip for an
	// extended CONNECT (Request.Protocol set) when the peer's SETTINGS did
	// not set SETTINGS_ENABLE_CONNECT_PROTOCOL=1 (RFC 8441 §3). Nothing was
	// sent.
	ErrExtendedConnectUnsupported = errors.New("h2tunnel: peer does not support extended CONNECT (RFC 8441)")
	// ErrConnLost wraps the cause when the connection under a stream died
	// (I/O error, protocol error, keepalive timeout).
	ErrConnLost = errors.New("h2tunnel: connection lost")
	// ErrStreamClosed is returned after Close on the stream.
	ErrStreamClosed = errors.New("h2tunnel: stream closed")
	// ErrWriteAfterClose is returned by Write after CloseWrite.
	ErrWriteAfterClose = errors.New("h2tunnel: write after CloseWrite")
	// ErrNoResponse is returned by ServerStream.Write before WriteResponse.
	ErrNoResponse = errors.New("h2tunnel: write before WriteResponse")
	// ErrResponseWritten is returned by a second WriteResponse.
	ErrResponseWritten = errors.New("h2tunnel: response already written")
	// ErrPoolClosed is returned by RoundTrip after Pool.Close.
	ErrPoolClosed = errors.New("h2tunnel: pool closed")
	// ErrServerClosed is returned by ServeConn after Server.Close.
	ErrServerClosed = errors.New("h2tunnel: server closed")
	// ErrInvalidRequest is returned for a Request that cannot be sent as is.
	ErrInvalidRequest = errors.New("h2tunnel: invalid request")
	// errKeepalive is the cause when a PING went unanswered.
	errKeepalive = errors.New("keepalive PING not answered")
)

// connLost wraps a connection's cause for its streams.
func connLost(cause error) error {
	if cause == nil {
		return ErrConnLost
	}
	if errors.Is(cause, ErrConnLost) {
		return cause
	}
	return fmt.Errorf("%w: %w", ErrConnLost, cause)
}

// connErr is a connection error: GOAWAY with code, then close.
type connErr struct {
	code   http2.ErrCode
	reason string
}

func (e connErr) Error() string { return fmt.Sprintf("connection error %v: %s", e.code, e.reason) }

// streamErr is a stream error: RST_STREAM with code.
type streamErr struct {
	id     uint32
	code   http2.ErrCode
	reason string
}

func (e streamErr) Error() string {
	return fmt.Sprintf("stream %d error %v: %s", e.id, e.code, e.reason)
}

// PeerGoAwayError is the cause of a connection's end when the peer sent
// GOAWAY with an error code.
type PeerGoAwayError struct {
	Code  http2.ErrCode
	Debug string
}

func (e *PeerGoAwayError) Error() string {
	return fmt.Sprintf("peer sent GOAWAY %v %q", e.Code, e.Debug)
}

func errorf(base error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{base}, args...)...)
}
