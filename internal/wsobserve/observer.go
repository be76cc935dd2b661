// Package wsobserve watches one direction of a WebSocket byte stream and
// reads RFC 6455 frame headers as the bytes go past, without buffering or
// changing them. It counts frames, messages, pings and pongs, remembers the
// first close frame's code and reason, notes protocol errors, and knows
// whether the stream stands at a frame boundary, which is where a proxy may
// inject a frame of its own (a close 1001 when draining) without corrupting
// the stream.
//
// Payloads are skipped by counting; only the payload of a close frame (at most
// 125 bytes) is copied, into a fixed array inside the Observer. Feed never
// allocates.
package wsobserve

import (
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// Close status codes wsmesh uses or reports.
const (
	CloseNormal      = 1000
	CloseGoingAway   = 1001
	CloseNoStatus    = 1005 // reported for a close frame without payload; never sent
	CloseAbnormal    = 1006 // never sent
	maxControlLength = 125
)

// Violation names the first RFC 6455 framing error the observer saw. The
// observer only records it: the bytes are relayed unchanged and the endpoints
// decide what to do.
type Violation uint8

// Violations the observer detects.
const (
	NoViolation            Violation = iota
	ReservedOpcode                   // opcode 3-7 or 0xB-0xF
	ControlTooLong                   // control frame payload over 125 bytes
	ControlFragmented                // control frame with FIN=0
	ReservedBits                     // RSV bit set that no negotiated extension allows
	UnexpectedContinuation           // continuation frame outside a fragmented message
	ExpectedContinuation             // new data frame inside a fragmented message
	BadLength                        // 64-bit length with the most significant bit set
	BadClosePayload                  // close payload of exactly one byte
)

var violationNames = [...]string{
	NoViolation:            "",
	ReservedOpcode:         "reserved opcode",
	ControlTooLong:         "control frame longer than 125 bytes",
	ControlFragmented:      "fragmented control frame",
	ReservedBits:           "reserved bits set",
	UnexpectedContinuation: "continuation frame without a message to continue",
	ExpectedContinuation:   "new data frame inside a fragmented message",
	BadLength:              "payload length with the most significant bit set",
	BadClosePayload:        "close frame with a one-byte payload",
}

func (v Violation) String() string {
	if int(v) < len(violationNames) {
		return violationNames[v]
	}
	return "unknown violation"
}

// Observer parses the frame headers of one direction of a WebSocket
// connection. The zero value is ready to use for a stream without extensions.
//
// Feed must be called from one goroutine at a time. Bytes, LastActivity,
// Close and Violation may be called from any goroutine while Feed runs: they
// see the state as of the end of a completed Feed call. Frames, Messages,
// Pings, Pongs, Stats, FrameBoundary and ToBoundary read the parser's own
// state and must be called from the feeding goroutine or after feeding has
// stopped. (A sidecar holds two Observers per open WebSocket; the counters
// it reads only when the connection has ended are not published twice.)
type Observer struct {
	// PerMessageDeflate allows RSV1 on the first frame of a data message, as
	// the permessage-deflate extension (RFC 7692) does. Set it before the
	// first Feed when the 101 response negotiated that extension.
	PerMessageDeflate bool

	// Parser state, touched only by Feed.
	hdr        [14]byte // a frame header split across Feed calls
	hdrN       uint8    // bytes buffered in hdr
	opcode     uint8    // opcode of the frame whose payload is being skipped
	masked     bool     // that frame is masked
	collecting bool     // copying that frame's payload into closeBuf
	fragmented bool     // inside a message whose final frame has not come
	mask       [4]byte  // that frame's masking key
	remain     uint64   // payload bytes of that frame still to come
	closeN     uint8    // bytes in closeBuf
	// closeBuf holds the first close frame's payload. It is allocated
	// when that frame starts: most of an Observer's life has no close
	// frame, and idle WebSockets are many.
	closeBuf *[maxControlLength]byte

	frames, messages, pings, pongs int64
	violation                      Violation
	closeCode                      uint16 // the reason is closeBuf[2:closeN], kept once published

	// Published at the end of each Feed for readers on other goroutines.
	pub struct {
		bytes, last atomic.Int64
		violation   atomic.Uint32
		closed      atomic.Bool
	}
}

// Feed observes p, the next bytes of the stream, which may split frames and
// headers anywhere. It never modifies or retains p, and allocates only once,
// 125 bytes for the payload of the first close frame. After
// a protocol violation it stops parsing and only counts bytes and activity.
func (o *Observer) Feed(p []byte) { o.FeedAt(p, time.Now().UnixNano()) }

// FeedAt is Feed for bytes seen at now (Unix nanoseconds, as
// time.Now().UnixNano()), for a caller that has read the clock already:
// a relay reads it once per chunk for its own counters and the observer.
func (o *Observer) FeedAt(p []byte, now int64) {
	if len(p) == 0 {
		return
	}
	o.pub.bytes.Store(o.pub.bytes.Load() + int64(len(p))) // one writer
	o.pub.last.Store(now)
	if o.violation != NoViolation {
		return
	}
	o.parse(p)
	if o.violation != NoViolation {
		o.pub.violation.Store(uint32(o.violation))
	}
}

func (o *Observer) parse(p []byte) {
	for len(p) > 0 && o.violation == NoViolation {
		if o.remain > 0 {
			n := uint64(len(p))
			if n > o.remain {
				n = o.remain
			}
			if o.collecting {
				o.collect(p[:n])
			}
			o.remain -= n
			p = p[n:]
			if o.remain == 0 {
				o.endFrame()
			}
			continue
		}
		if o.hdrN == 0 && len(p) >= 2 {
			// Fast path: the whole header is in p.
			if need := headerLen(p[0], p[1]); len(p) >= need {
				o.startFrame(p[:need])
				p = p[need:]
				continue
			}
		}
		// Slow path: gather a split header in o.hdr.
		var need int
		switch {
		case o.hdrN >= 2:
			need = headerLen(o.hdr[0], o.hdr[1])
		case o.hdrN == 1:
			need = headerLen(o.hdr[0], p[0])
		case len(p) >= 2:
			need = headerLen(p[0], p[1])
		default:
			need = 1
		}
		n := copy(o.hdr[o.hdrN:need], p)
		o.hdrN += uint8(n)
		p = p[n:]
		if o.hdrN >= 2 && int(o.hdrN) == headerLen(o.hdr[0], o.hdr[1]) {
			h := o.hdr[:o.hdrN]
			o.hdrN = 0
			o.startFrame(h)
		}
	}
}

// headerLen is the full header length implied by its first two bytes.
func headerLen(b0, b1 byte) int {
	n := 2
	if b1&0x80 != 0 {
		n += 4
	}
	switch b1 & 0x7F {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	return n
}

func (o *Observer) startFrame(h []byte) {
	fin := h[0]&0x80 != 0
	rsv := h[0] & 0x70
	op := h[0] & 0x0F
	o.masked = h[1]&0x80 != 0
	length := uint64(h[1] & 0x7F)
	i := 2
	switch length {
	case 126:
		length = uint64(binary.BigEndian.Uint16(h[2:]))
		i = 4
	case 127:
		length = binary.BigEndian.Uint64(h[2:])
		i = 10
		if length>>63 != 0 {
			o.violation = BadLength
			return
		}
	}
	if o.masked {
		copy(o.mask[:], h[i:i+4])
	}
	control := op >= 0x8
	switch {
	case op > OpBinary && op < OpClose, op > OpPong:
		o.violation = ReservedOpcode
	case control && !fin:
		o.violation = ControlFragmented
	case control && length > maxControlLength:
		o.violation = ControlTooLong
	case rsv&0x30 != 0, rsv != 0 && (!o.PerMessageDeflate || control || op == OpContinuation):
		o.violation = ReservedBits
	case op == OpContinuation && !o.fragmented:
		o.violation = UnexpectedContinuation
	case (op == OpText || op == OpBinary) && o.fragmented:
		o.violation = ExpectedContinuation
	}
	if o.violation != NoViolation {
		return
	}
	o.frames++
	o.opcode = op
	switch op {
	case OpContinuation, OpText, OpBinary:
		o.fragmented = !fin
		if fin {
			o.messages++
		}
	case OpPing:
		o.pings++
	case OpPong:
		o.pongs++
	case OpClose:
		if o.collecting = !o.pub.closed.Load(); o.collecting {
			o.closeN = 0
			if o.closeBuf == nil && length > 0 {
				o.closeBuf = new([maxControlLength]byte)
			}
		}
	}
	o.remain = length
	if length == 0 {
		o.endFrame()
	}
}

// collect copies close-frame payload, unmasking it when the frame is masked.
func (o *Observer) collect(p []byte) {
	off := int(o.closeN)
	n := copy(o.closeBuf[off:], p)
	if o.masked {
		for j := range n {
			o.closeBuf[off+j] ^= o.mask[(off+j)&3]
		}
	}
	o.closeN += uint8(n)
}

func (o *Observer) endFrame() {
	if !o.collecting {
		return
	}
	o.collecting = false
	switch o.closeN {
	case 0:
		o.closeCode = CloseNoStatus
	case 1:
		o.violation = BadClosePayload
		return
	default:
		o.closeCode = binary.BigEndian.Uint16(o.closeBuf[:2])
	}
	// Publishing after writing code and reason lets Close read them safely.
	o.pub.closed.Store(true)
}

// FrameBoundary reports whether every byte fed so far completes a frame, so
// that a frame written next would not land inside another frame. It is false
// after a violation, since the boundaries are then unknown.
func (o *Observer) FrameBoundary() bool {
	return o.hdrN == 0 && o.remain == 0 && o.violation == NoViolation
}

// ToBoundary returns how many more bytes complete the current frame: 0 at a
// frame boundary, the payload bytes still to come once a frame's header has
// been seen, and -1 when that is not known yet (inside a header: feed one
// byte at a time) or never will be (after a violation). Call it from the
// feeding goroutine.
func (o *Observer) ToBoundary() int64 {
	switch {
	case o.violation != NoViolation:
		return -1
	case o.hdrN != 0:
		return -1
	case o.remain > 1<<62:
		return 1 << 62
	}
	return int64(o.remain)
}

// InMessage reports whether a fragmented data message has begun and not yet
// ended. A proxy may still inject a control frame there (RFC 6455 allows
// control frames between fragments), but not a data frame.
func (o *Observer) InMessage() bool { return o.fragmented }

// Bytes returns how many bytes were fed.
func (o *Observer) Bytes() int64 { return o.pub.bytes.Load() }

// Frames returns the number of complete frame headers seen. Call it from
// the feeding goroutine or after feeding has stopped.
func (o *Observer) Frames() int64 { return o.frames }

// Messages returns the number of data messages seen (frames with FIN=1 and a
// data or continuation opcode). Control frames are not messages. Call it
// from the feeding goroutine or after feeding has stopped.
func (o *Observer) Messages() int64 { return o.messages }

// Pings returns the number of ping frames seen. Call it from the feeding
// goroutine or after feeding has stopped.
func (o *Observer) Pings() int64 { return o.pings }

// Pongs returns the number of pong frames seen. Call it from the feeding
// goroutine or after feeding has stopped.
func (o *Observer) Pongs() int64 { return o.pongs }

// LastActivity returns when bytes were last fed (any bytes: data, ping, pong),
// or the zero time if none were.
func (o *Observer) LastActivity() time.Time {
	ns := o.pub.last.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Close returns the code and reason of the first complete close frame, with
// ok false if none has been seen. A close frame without payload reports 1005.
func (o *Observer) Close() (code int, reason string, ok bool) {
	if !o.pub.closed.Load() {
		return 0, "", false
	}
	if o.closeN < 2 {
		return int(o.closeCode), "", true
	}
	return int(o.closeCode), string(o.closeBuf[2:o.closeN]), true
}

// Violation returns the first protocol violation seen, or NoViolation.
func (o *Observer) Violation() Violation { return Violation(o.pub.violation.Load()) }

// Stats is a snapshot of what an Observer has seen.
type Stats struct {
	Bytes, Frames, Messages, Pings, Pongs int64
	CloseCode                             int // 0: no close frame seen
	CloseReason                           string
	Violation                             Violation
	FrameBoundary                         bool
}

// Stats returns a snapshot. Call it from the feeding goroutine or after
// feeding has stopped.
func (o *Observer) Stats() Stats {
	s := Stats{
		Bytes: o.pub.bytes.Load(), Frames: o.frames, Messages: o.messages,
		Pings: o.pings, Pongs: o.pongs, Violation: o.violation,
		FrameBoundary: o.FrameBoundary(),
	}
	if code, reason, ok := o.Close(); ok {
		s.CloseCode, s.CloseReason = code, reason
	}
	return s
}

// CloseFrame returns a close frame with code and reason, masked with a fresh
// random key when mask is true (frames a client sends must be masked). Code 0
// gives a close frame without payload. The reason is cut at a UTF-8 boundary
// to fit the 125-byte control frame limit.
func CloseFrame(code int, reason string, mask bool) []byte {
	if code == 0 {
		reason = ""
	}
	if len(reason) > maxControlLength-2 {
		cut := maxControlLength - 2
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	n := 0
	if code != 0 {
		n = 2 + len(reason)
	}
	f := make([]byte, 0, 2+4+n)
	f = append(f, 0x80|OpClose, byte(n))
	var key [4]byte
	if mask {
		f[1] |= 0x80
		randomKey(key[:])
		f = append(f, key[:]...)
	}
	start := len(f)
	if code != 0 {
		f = binary.BigEndian.AppendUint16(f, uint16(code))
		f = append(f, reason...)
	}
	if mask {
		for j := range f[start:] {
			f[start+j] ^= key[j&3]
		}
	}
	return f
}

func randomKey(k []byte) { _, _ = rand.Read(k) }
