package wsobserve

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// frame builds one RFC 6455 frame. rsv is the three RSV bits (0-7); a masked
// frame uses a fixed key so tests are repeatable.
func frame(fin bool, rsv, op byte, payload []byte, mask bool) []byte {
	b0 := rsv<<4 | op
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	var mbit byte
	if mask {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		f = append(f, mbit|byte(n))
	case n <= 0xFFFF:
		f = append(f, mbit|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, mbit|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	if !mask {
		return append(f, payload...)
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i&3])
	}
	return f
}

func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func cat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

// conversation is a client→server stream exercising every frame kind.
func conversation(mask bool) []byte {
	return cat(
		frame(true, 0, OpText, []byte("hello"), mask),
		frame(false, 0, OpBinary, bytes.Repeat([]byte{1}, 300), mask),
		frame(true, 0, OpPing, []byte("p"), mask), // control between fragments
		frame(false, 0, OpContinuation, bytes.Repeat([]byte{2}, 70000), mask),
		frame(true, 0, OpContinuation, nil, mask),
		frame(true, 0, OpPong, nil, mask),
		frame(true, 0, OpText, []byte("world"), mask),
		frame(true, 0, OpClose, closePayload(1000, "bye ✓"), mask),
		frame(true, 0, OpClose, closePayload(1001, "second"), mask),
	)
}

func TestCountsWholeAndSplit(t *testing.T) {
	for _, mask := range []bool{false, true} {
		stream := conversation(mask)
		want := Stats{
			Bytes: int64(len(stream)), Frames: 9, Messages: 3, Pings: 1, Pongs: 1,
			CloseCode: 1000, CloseReason: "bye ✓", FrameBoundary: true,
		}
		var whole Observer
		whole.Feed(stream)
		if got := whole.Stats(); got != want {
			t.Fatalf("mask=%v whole: got %+v want %+v", mask, got, want)
		}
		var bytewise Observer
		for i := range stream {
			bytewise.Feed(stream[i : i+1])
		}
		if got := bytewise.Stats(); got != want {
			t.Fatalf("mask=%v byte-by-byte: got %+v want %+v", mask, got, want)
		}
		for _, chunk := range []int{2, 3, 7, 13, 4096} {
			var o Observer
			for p := stream; len(p) > 0; {
				n := min(chunk, len(p))
				o.Feed(p[:n])
				p = p[n:]
			}
			if got := o.Stats(); got != want {
				t.Fatalf("mask=%v chunk %d: got %+v want %+v", mask, chunk, got, want)
			}
		}
		if whole.Frames() != 9 || whole.Messages() != 3 || whole.Pings() != 1 || whole.Pongs() != 1 ||
			whole.Bytes() != int64(len(stream)) || whole.LastActivity().IsZero() {
			t.Fatal("published counters disagree with Stats")
		}
	}
}

func TestCloseWithoutPayload(t *testing.T) {
	var o Observer
	if _, _, ok := o.Close(); ok {
		t.Fatal("close reported before any frame")
	}
	o.Feed(frame(true, 0, OpClose, nil, true))
	if code, reason, ok := o.Close(); !ok || code != CloseNoStatus || reason != "" {
		t.Fatalf("Close() = %d %q %v", code, reason, ok)
	}
}

func TestFrameBoundary(t *testing.T) {
	f := frame(true, 0, OpBinary, make([]byte, 1000), true)
	var o Observer
	if !o.FrameBoundary() {
		t.Fatal("fresh observer not at boundary")
	}
	for i := range f {
		o.Feed(f[i : i+1])
		if at := o.FrameBoundary(); at != (i == len(f)-1) {
			t.Fatalf("after %d of %d bytes: boundary=%v", i+1, len(f), at)
		}
	}
	o.Feed(frame(false, 0, OpText, []byte("a"), true))
	if !o.FrameBoundary() || !o.InMessage() {
		t.Fatal("between fragments: want boundary and in-message")
	}
}

func TestHugeFrameSkippedByCounting(t *testing.T) {
	const size = 3 << 30 // declared 3 GiB; fed as the same 64 KiB chunk
	var hdr []byte
	hdr = append(hdr, 0x82, 127)
	hdr = binary.BigEndian.AppendUint64(hdr, size)
	var o Observer
	o.Feed(hdr)
	chunk := make([]byte, 64<<10)
	for fed := 0; fed < size; fed += len(chunk) {
		o.Feed(chunk)
		if fed+len(chunk) < size && o.FrameBoundary() {
			t.Fatal("boundary inside payload")
		}
	}
	o.Feed(frame(true, 0, OpPing, nil, false))
	if s := o.Stats(); s.Frames != 2 || s.Messages != 1 || s.Pings != 1 || !s.FrameBoundary {
		t.Fatalf("stats %+v", s)
	}
}

func TestViolations(t *testing.T) {
	ok := frame(true, 0, OpText, []byte("x"), false)
	cases := []struct {
		name    string
		deflate bool
		stream  []byte
		want    Violation
		frames  int64
	}{
		{"reserved opcode 3", false, cat(ok, frame(true, 0, 3, nil, false), ok), ReservedOpcode, 1},
		{"reserved opcode 0xB", false, frame(true, 0, 0xB, nil, false), ReservedOpcode, 0},
		{"control too long", false, frame(true, 0, OpPing, make([]byte, 126), false), ControlTooLong, 0},
		{"fragmented control", false, frame(false, 0, OpPong, nil, true), ControlFragmented, 0},
		{"rsv1 without extension", false, frame(true, 4, OpText, []byte("x"), false), ReservedBits, 0},
		{"rsv2 with deflate", true, frame(true, 2, OpText, []byte("x"), false), ReservedBits, 0},
		{"rsv1 on control with deflate", true, frame(true, 4, OpPing, nil, false), ReservedBits, 0},
		{"rsv1 on continuation", true, cat(frame(false, 4, OpText, nil, false), frame(true, 4, OpContinuation, nil, false)), ReservedBits, 1},
		{"stray continuation", false, frame(true, 0, OpContinuation, nil, false), UnexpectedContinuation, 0},
		{"data inside fragmented", false, cat(frame(false, 0, OpText, nil, false), ok), ExpectedContinuation, 1},
		{"64-bit length msb", false, []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, BadLength, 0},
		{"one-byte close", false, frame(true, 0, OpClose, []byte{3}, false), BadClosePayload, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := Observer{PerMessageDeflate: c.deflate}
			o.Feed(c.stream)
			o.Feed(ok) // ignored: parsing stopped
			s := o.Stats()
			if s.Violation != c.want || o.Violation() != c.want || s.Frames != c.frames || s.FrameBoundary {
				t.Fatalf("got %+v (%v), want violation %v after %d frames", s, s.Violation, c.want, c.frames)
			}
			if s.Bytes != int64(len(c.stream)+len(ok)) {
				t.Fatalf("bytes %d", s.Bytes)
			}
			if c.want.String() == "" {
				t.Fatal("violation has no name")
			}
		})
	}
	o := Observer{PerMessageDeflate: true}
	o.Feed(cat(frame(false, 4, OpText, []byte("x"), true), frame(true, 0, OpContinuation, []byte("y"), true)))
	if s := o.Stats(); s.Violation != NoViolation || s.Messages != 1 {
		t.Fatalf("deflate message: %+v", s)
	}
}

func TestCloseFrame(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes: must be cut to ≤123 on a rune boundary
	for _, c := range []struct {
		code   int
		reason string
		mask   bool
	}{
		{CloseGoingAway, "sidecar draining", true},
		{CloseGoingAway, "sidecar draining", false},
		{CloseNormal, "", false},
		{CloseNormal, long, true},
		{0, "ignored", true},
	} {
		f := CloseFrame(c.code, c.reason, c.mask)
		if len(f) > 2+4+125 {
			t.Fatalf("frame too long: %d", len(f))
		}
		var o Observer
		o.Feed(f)
		code, reason, ok := o.Close()
		s := o.Stats()
		if !ok || s.Frames != 1 || s.Violation != NoViolation || !s.FrameBoundary {
			t.Fatalf("CloseFrame(%d,%q,%v) observed as %+v", c.code, c.reason, c.mask, s)
		}
		wantCode, wantReason := c.code, c.reason
		if c.code == 0 {
			wantCode, wantReason = CloseNoStatus, ""
		}
		if len(wantReason) > 123 {
			wantReason = strings.Repeat("é", 61)
		}
		if code != wantCode || reason != wantReason || !utf8.ValidString(reason) {
			t.Fatalf("CloseFrame(%d,%q,%v): got %d %q", c.code, c.reason, c.mask, code, reason)
		}
		if masked := f[1]&0x80 != 0; masked != c.mask {
			t.Fatalf("mask bit %v", masked)
		}
	}
}

// TestFeedAllocs checks that Feed allocates nothing for data and control
// frames and once, for the close payload, per Observer.
func TestFeedAllocs(t *testing.T) {
	stream := conversation(true)
	closes := len(frame(true, 0, OpClose, closePayload(1000, "bye ✓"), true)) + len(frame(true, 0, OpClose, closePayload(1001, "second"), true))
	noClose := stream[:len(stream)-closes]
	for _, c := range []struct {
		name   string
		stream []byte
		want   float64
	}{{"data and control", noClose, 0}, {"with close frames", stream, 1}} {
		var o Observer
		if n := testing.AllocsPerRun(50, func() {
			o = Observer{}
			for p := c.stream; len(p) > 0; {
				k := min(777, len(p))
				o.Feed(p[:k])
				p = p[k:]
			}
		}); n != c.want {
			t.Fatalf("%s: Feed allocates %v times per stream, want %v", c.name, n, c.want)
		}
	}
}

func TestFeedDoesNotModifyInput(t *testing.T) {
	stream := conversation(true)
	orig := bytes.Clone(stream)
	var o Observer
	o.Feed(stream)
	if !bytes.Equal(stream, orig) {
		t.Fatal("Feed modified its input")
	}
}

// feedSplit feeds data in pieces cut at the given points.
func feedSplit(o *Observer, data []byte, cuts ...int) {
	prev := 0
	for _, c := range cuts {
		c = max(prev, min(c, len(data)))
		o.Feed(data[prev:c])
		prev = c
	}
	o.Feed(data[prev:])
}

func FuzzObserver(f *testing.F) {
	f.Add(conversation(true)[:400], uint16(7), uint16(200), false)
	f.Add(conversation(false)[:300], uint16(1), uint16(2), false)
	f.Add(cat(frame(false, 4, OpText, []byte("x"), true), frame(true, 0, OpContinuation, nil, true)), uint16(3), uint16(9), true)
	f.Add(frame(true, 0, OpClose, closePayload(1001, "drain"), true), uint16(5), uint16(6), false)
	f.Add([]byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(4), uint16(4), false)
	f.Fuzz(func(t *testing.T, data []byte, cut1, cut2 uint16, deflate bool) {
		whole := Observer{PerMessageDeflate: deflate}
		whole.Feed(data)
		want := whole.Stats()
		orig := bytes.Clone(data)

		split := Observer{PerMessageDeflate: deflate}
		a, b := int(cut1)%(len(data)+1), int(cut2)%(len(data)+1)
		feedSplit(&split, data, min(a, b), max(a, b))
		if got := split.Stats(); got != want {
			t.Fatalf("split at %d,%d: %+v, whole: %+v", a, b, got, want)
		}
		bytewise := Observer{PerMessageDeflate: deflate}
		for i := range data {
			bytewise.Feed(data[i : i+1])
		}
		if got := bytewise.Stats(); got != want {
			t.Fatalf("byte by byte: %+v, whole: %+v", got, want)
		}
		if !bytes.Equal(data, orig) {
			t.Fatal("Feed modified its input")
		}
		if want.Messages > want.Frames || want.Pings+want.Pongs > want.Frames || want.Bytes != int64(len(data)) {
			t.Fatalf("inconsistent stats %+v", want)
		}
	})
}

// benchStream returns masked client frames with size-byte payloads, about
// total bytes in all, and how many frames that is.
func benchStream(size, total int) ([]byte, int) {
	payload := bytes.Repeat([]byte("x"), size)
	f := frame(true, 0, OpBinary, payload, true)
	n := max(1, total/len(f))
	return bytes.Repeat(f, n), n
}

func BenchmarkFeed(b *testing.B) {
	for _, size := range []int{64, 1 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("frame=%d", size), func(b *testing.B) {
			stream, frames := benchStream(size, 1<<20)
			const chunk = 32 << 10 // the relay's read size
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			var o Observer
			for b.Loop() {
				for p := stream; len(p) > 0; {
					n := min(chunk, len(p))
					o.Feed(p[:n])
					p = p[n:]
				}
			}
			if o.Violation() != NoViolation {
				b.Fatal(o.Violation())
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*frames), "ns/frame")
		})
	}
}

func TestToBoundary(t *testing.T) {
	var o Observer
	if o.ToBoundary() != 0 {
		t.Fatal("fresh observer is at a boundary")
	}
	frame := append([]byte{0x82, 0x7E, 0x01, 0x00}, make([]byte, 256)...) // binary, 256 B payload
	o.Feed(frame[:1])
	if o.ToBoundary() != -1 {
		t.Fatalf("inside a header: %d", o.ToBoundary())
	}
	o.Feed(frame[1:4])
	if o.ToBoundary() != 256 {
		t.Fatalf("after the header: %d", o.ToBoundary())
	}
	o.Feed(frame[4:100])
	if o.ToBoundary() != 160 {
		t.Fatalf("mid payload: %d", o.ToBoundary())
	}
	o.Feed(frame[100:])
	if o.ToBoundary() != 0 || !o.FrameBoundary() {
		t.Fatalf("after the frame: %d", o.ToBoundary())
	}
}
