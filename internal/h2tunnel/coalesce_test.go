package h2tunnel

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
)

// TestCoalescedWritesKeepOrder: many streams on one connection write
// messages of sizes that take every path of tryDirectLocked (copied,
// direct, through the writer: up to 3 frames), interleaved with reads of
// the echo; every stream must get back exactly what it sent, then EOF.
func TestCoalescedWritesKeepOrder(t *testing.T) {
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: echoHandler})
	p := NewPool(PoolConfig{})
	defer p.Close()
	sizes := []int{1, 100, 1024, 5000, maxCopiedWrite, maxCopiedWrite + 1, 64 << 10, 150 << 10, 7}
	const streams, rounds = 16, 4
	var wg sync.WaitGroup
	for s := 0; s < streams; s++ {
		st, err := p.RoundTrip(context.Background(), ts.addr, wsRequest(ts.addr))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.Close()
			var sent bytes.Buffer
			got := make([]byte, 0, 1<<20)
			buf := make([]byte, 64<<10)
			seq := byte(s)
			for r := 0; r < rounds; r++ {
				for _, n := range sizes {
					msg := make([]byte, n)
					for i := range msg {
						seq++
						msg[i] = seq
					}
					sent.Write(msg)
					if _, err := st.Write(msg); err != nil {
						t.Error(err)
						return
					}
					// Keep at most ~256 KiB outstanding so the echo never
					// blocks on our window while we write.
					for sent.Len()-len(got) > 256<<10 {
						k, err := st.Read(buf)
						if err != nil {
							t.Error(err)
							return
						}
						got = append(got, buf[:k]...)
					}
				}
			}
			if err := st.CloseWrite(); err != nil {
				t.Error(err)
				return
			}
			rest, err := io.ReadAll(st)
			if err != nil {
				t.Error(err)
				return
			}
			got = append(got, rest...)
			if !bytes.Equal(got, sent.Bytes()) {
				t.Errorf("stream %d: echo differs (%d bytes sent, %d back)", st.ID(), sent.Len(), len(got))
			}
		}()
	}
	wg.Wait()
}
