package h2tunnel

import "sync"

// maxWindow is the largest flow-control window (RFC 9113 §6.9.1).
const maxWindow = 1<<31 - 1

// minWindowUpdate: window increments smaller than this are held back even
// past half the window, so tiny windows don't produce a frame per read.
const minWindowUpdate = 4 << 10

// Receive buffers are lists of pooled chunks so that an idle stream holds
// no memory and a busy one holds at most its window.
var chunkSizes = [...]int{4 << 10, 16 << 10, 64 << 10}

var chunkPools [len(chunkSizes)]sync.Pool

func getChunk(n int) *[]byte {
	i := 0
	for i < len(chunkSizes)-1 && n > chunkSizes[i] {
		i++
	}
	if p, ok := chunkPools[i].Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, chunkSizes[i])
	return &b
}

func putChunk(p *[]byte) {
	for i, s := range chunkSizes {
		if cap(*p) == s {
			*p = (*p)[:s]
			chunkPools[i].Put(p)
			return
		}
	}
}

// dataBuf is a FIFO of received DATA payload bytes.
type dataBuf struct {
	chunks []dchunk
	n      int // bytes buffered
}

// dchunk is a pooled buffer holding data in buf[r:w].
type dchunk struct {
	buf  *[]byte
	r, w int
}

func (b *dataBuf) Len() int { return b.n }

// Write copies p into the buffer.
func (b *dataBuf) Write(p []byte) {
	b.n += len(p)
	for len(p) > 0 {
		if len(b.chunks) == 0 || b.chunks[len(b.chunks)-1].w == len(*b.chunks[len(b.chunks)-1].buf) {
			b.chunks = append(b.chunks, dchunk{buf: getChunk(len(p))})
		}
		last := &b.chunks[len(b.chunks)-1]
		n := copy((*last.buf)[last.w:], p)
		last.w += n
		p = p[n:]
	}
}

// appendChunk takes ownership of c, whose first n bytes are data.
func (b *dataBuf) appendChunk(c *[]byte, n int) {
	b.chunks = append(b.chunks, dchunk{buf: c, w: n})
	b.n += n
}

// Read moves up to len(p) bytes out of the buffer.
func (b *dataBuf) Read(p []byte) int {
	total := 0
	for len(p) > 0 && b.n > 0 {
		c := &b.chunks[0]
		n := copy(p, (*c.buf)[c.r:c.w])
		c.r += n
		b.n -= n
		total += n
		p = p[n:]
		if c.r == c.w {
			putChunk(c.buf)
			k := copy(b.chunks, b.chunks[1:])
			b.chunks[k] = dchunk{}
			b.chunks = b.chunks[:k]
		}
	}
	return total
}

// reset drops the buffered bytes and returns how many there were.
func (b *dataBuf) reset() int {
	n := b.n
	for i := range b.chunks {
		putChunk(b.chunks[i].buf)
		b.chunks[i] = dchunk{}
	}
	b.chunks = b.chunks[:0]
	b.n = 0
	return n
}
