package echo

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/coder/websocket"
)

func TestReadMessageLimit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		limit   int64
		tooBig  bool
		initCap int
	}{
		{"empty", 0, 1024, false, 0},
		{"below limit", 1000, 1024, false, 0},
		{"at limit", 1024, 1024, false, 0},
		{"one over limit", 1025, 1024, true, 0},
		{"at limit, buffer larger than limit", 1024, 1024, false, 4096},
		{"one over limit, buffer larger than limit", 1025, 1024, true, 4096},
		{"grows past the first buffer", 3*firstBufferSize + 7, 16 << 20, false, firstBufferSize},
		{"no limit", 3*firstBufferSize + 7, -1, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := bytes.Repeat([]byte("0123456789abcdef"), tc.size/16+1)[:tc.size]
			// One byte per Read: every boundary of the buffer and the limit
			// is crossed by a separate call.
			r := iotest.OneByteReader(bytes.NewReader(msg))
			got, err := readMessage(r, make([]byte, 0, tc.initCap), tc.limit)
			if tc.tooBig {
				if !errors.Is(err, errTooBig) {
					t.Fatalf("err = %v, want errTooBig", err)
				}
				if int64(len(got)) != tc.limit+1 {
					t.Fatalf("read %d bytes of an oversize message, want limit+1 = %d", len(got), tc.limit+1)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("read %d bytes, want the %d-byte message", len(got), len(msg))
			}
		})
	}
}

// TestEchoReusesBuffersSafely runs connections at once, each sending
// messages of varying sizes and contents that no other connection sends, so
// that a message buffer handed back to the pool too early, or shared between
// connections, shows up as a wrong echo (or as a race under -race).
func TestEchoReusesBuffersSafely(t *testing.T) {
	_, url := startServer(t, Config{})
	sizes := []int{64 << 10, 10, 3 * firstBufferSize, 0, firstBufferSize + 1, 1}
	var wg sync.WaitGroup
	for i := range 4 {
		c, _ := dial(t, url, nil)
		ctx := testCtx(t)
		wg.Go(func() {
			for round := range 20 {
				for j, n := range sizes {
					fill := fmt.Sprintf("conn %d round %d message %d|", i, round, j)
					msg := bytes.Repeat([]byte(fill), n/len(fill)+1)[:n]
					typ := websocket.MessageBinary
					if j%2 == 1 {
						typ = websocket.MessageText
					}
					if err := c.Write(ctx, typ, msg); err != nil {
						t.Error(err)
						return
					}
					gotTyp, got, err := c.Read(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					if gotTyp != typ || !bytes.Equal(got, msg) {
						t.Errorf("conn %d: echo of %v message of %d bytes came back as %v of %d bytes, or with other contents",
							i, typ, n, gotTyp, len(got))
						return
					}
				}
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}
