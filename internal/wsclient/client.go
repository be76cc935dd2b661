package wsclient

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// DefaultWait is how long, after the input ends in non-interactive mode,
// the client waits for the echoes of the lines it sent before closing.
const DefaultWait = 5 * time.Second

// DefaultDialTimeout bounds the TCP connection and opening handshake, as
// websockets' open_timeout does.
const DefaultDialTimeout = 10 * time.Second

// DefaultMaxMessageSize is the largest message the client accepts when
// Options.MaxMessageSize is zero.
const DefaultMaxMessageSize = 16 << 20

// Options configures Run.
type Options struct {
	// URL is the ws:// or wss:// URL to connect to.
	URL string
	// Header holds extra handshake request fields; a "Host" field sets the
	// request's Host.
	Header http.Header
	// ConnectTo maps a "host:port" of the URL to the "host:port" to connect
	// to instead (like curl's --connect-to), so a service name can be used
	// without DNS; the Host field and the URL stay as given.
	ConnectTo map[string]string
	// Subprotocols are offered in Sec-WebSocket-Protocol, in order.
	Subprotocols []string
	// Binary sends each input line as a binary message instead of text.
	Binary bool
	// Interactive selects the terminal behaviour described in the package
	// documentation.
	Interactive bool
	// Wait bounds, in non-interactive mode, the wait for echoes after the
	// input ends. Zero or negative means do not wait. Callers wanting the
	// default set DefaultWait.
	Wait time.Duration
	// DialTimeout bounds connecting; zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// MaxMessageSize is the largest message accepted; a larger one closes
	// the connection with 1009. Zero means DefaultMaxMessageSize, negative
	// means no limit.
	MaxMessageSize int64
}

// Run connects to opts.URL, prints "Connected to URL.", sends every line of
// in (without its trailing newline) as one message, prints every message
// received to out, and closes when in ends, when ctx is cancelled (send
// 1000 at once) or when the server closes. It always finishes by printing
// "Connection closed: CODE (EXPLANATION) [REASON]." with the close frame
// the server sent, or 1006 when the connection was lost without one.
//
// Run returns a *ConnectError when the connection cannot be opened; once it
// is open, the way it ends is reported on out and Run returns nil.
//
// Lines are read from in by a goroutine; if the server closes first, Run
// returns without waiting for in, and that goroutine stays blocked until
// its Read returns.
func Run(ctx context.Context, opts Options, in io.Reader, out io.Writer) error {
	p := &printer{w: out, tty: opts.Interactive}

	conn, err := dial(ctx, &opts)
	if err != nil {
		return &ConnectError{URL: opts.URL, Err: err}
	}
	limit := opts.MaxMessageSize
	if limit == 0 {
		limit = DefaultMaxMessageSize
	}
	conn.SetReadLimit(limit)
	p.line("Connected to " + opts.URL + ".")

	s := &session{conn: conn, p: p, notify: make(chan struct{}, 1), recvDone: make(chan struct{})}
	go s.receive()

	lines := make(chan string)
	stopInput := make(chan struct{})
	defer close(stopInput)
	go readLines(in, lines, stopInput)

	typ := websocket.MessageText
	if opts.Binary {
		typ = websocket.MessageBinary
	}

	p.prompt()
	sent := 0
	inputEnded := false
loop:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				inputEnded = true
				break loop
			}
			p.prompt()
			if err := conn.Write(ctx, typ, []byte(line)); err != nil {
				// The receiver reports how the connection ended.
				break loop
			}
			sent++
		case <-s.recvDone:
			break loop
		case <-ctx.Done():
			break loop
		}
	}

	if inputEnded && !opts.Interactive && opts.Wait > 0 {
		s.waitForEchoes(ctx, int64(sent), opts.Wait)
	}

	code, reason := s.close()
	p.over("Connection closed: " + FormatClose(code, reason) + ".")
	return nil
}

// session is one open connection: the receiving goroutine's state.
type session struct {
	conn *websocket.Conn
	p    *printer

	received atomic.Int64
	notify   chan struct{} // signalled after each received message
	closing  atomic.Bool   // set once the client starts its close handshake
	recvDone chan struct{} // closed when the receiver stops
	recvErr  error         // why the receiver stopped; read after recvDone
}

// receive prints incoming messages until the connection ends.
func (s *session) receive() {
	defer close(s.recvDone)
	for {
		typ, data, err := s.conn.Read(context.Background())
		if err != nil {
			s.recvErr = err
			return
		}
		if s.closing.Load() {
			// Like the Python client, messages arriving during the close
			// handshake are dropped.
			continue
		}
		if typ == websocket.MessageText {
			s.p.during("< " + string(data))
		} else {
			s.p.during("< (binary) " + hex.EncodeToString(data))
		}
		s.received.Add(1)
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

// waitForEchoes waits until want messages have been received, the
// connection ends, ctx is done or wait passes.
func (s *session) waitForEchoes(ctx context.Context, want int64, wait time.Duration) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for s.received.Load() < want {
		select {
		case <-s.notify:
		case <-s.recvDone:
			return
		case <-ctx.Done():
			return
		case <-timer.C:
			return
		}
	}
}

// close completes the close handshake (starting it with 1000 unless the
// server already closed) and returns the code and reason of the close frame
// received from the server: 1006 and "" when none arrived.
func (s *session) close() (int, string) {
	s.closing.Store(true)
	closeErr := s.conn.Close(websocket.StatusNormalClosure, "")
	<-s.recvDone

	var ce websocket.CloseError
	switch {
	case errors.As(s.recvErr, &ce):
		// The receiver read the server's close frame: its own close or the
		// answer to ours.
		return int(ce.Code), ce.Reason
	case closeErr == nil:
		// The close handshake read the server's answer, which carried the
		// same code as ours.
		return int(websocket.StatusNormalClosure), ""
	case errors.As(closeErr, &ce):
		return int(ce.Code), ce.Reason
	default:
		return int(websocket.StatusAbnormalClosure), ""
	}
}

// readLines sends each line of in, without its "\n", to lines and closes
// lines at end of input (a last line without "\n" is still sent). It stops
// early when stop is closed.
func readLines(in io.Reader, lines chan<- string, stop <-chan struct{}) {
	defer close(lines)
	br := bufio.NewReader(in)
	for {
		s, err := br.ReadString('\n')
		if err == nil || s != "" {
			select {
			case lines <- strings.TrimSuffix(s, "\n"):
			case <-stop:
				return
			}
		}
		if err != nil {
			return
		}
	}
}
