package h2tunnel

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

// TestTryWrite: TryWrite takes a small write at once when the connection's
// writer can send it, even while the socket holds the connection's writes,
// and otherwise takes nothing (a lone stream, which writes its own frame;
// a write too large to copy) and leaves it to Write; bytes keep their
// order across the two; a stream that can take no more says why.
func TestTryWrite(t *testing.T) {
	ts, p, held := heldPool(t)
	st, err := p.RoundTrip(context.Background(), ts.addr, wsRequest(ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	hc := held()
	time.Sleep(50 * time.Millisecond) // the connection's own frames go out
	if n, err := st.TryWrite([]byte("ping")); n != 0 || err != nil {
		t.Fatalf("lone stream: TryWrite took %d, %v; want nothing (its Write writes the frame itself)", n, err)
	}

	st2, err := p.RoundTrip(context.Background(), ts.addr, wsRequest(ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	time.Sleep(50 * time.Millisecond)
	hc.shut()
	took := make(chan int, 1)
	go func() {
		// A control frame still queued (not yet taken by the writer)
		// goes first: TryWrite takes nothing until the writer has it.
		deadline := time.Now().Add(2 * time.Second)
		for {
			n, err := st.TryWrite([]byte("a"))
			if err != nil {
				t.Error(err)
			}
			if n > 0 || time.Now().After(deadline) {
				took <- n
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	select {
	case n := <-took:
		hc.open()
		if n != 1 {
			t.Fatalf("TryWrite took %d of 1 byte with two streams open", n)
		}
	case <-time.After(5 * time.Second):
		hc.open()
		t.Fatal("TryWrite waited for the socket")
	}
	big := bytes.Repeat([]byte("B"), maxCopiedWrite+1)
	if n, err := st.TryWrite(big); n != 0 || err != nil {
		t.Fatalf("TryWrite of %d bytes took %d, %v; want nothing", len(big), n, err)
	}
	if _, err := st.Write(big); err != nil {
		t.Fatal(err)
	}
	if n, err := st.TryWrite([]byte("c")); err != nil {
		t.Fatal(err)
	} else if n == 0 { // a control frame queued meanwhile: Write, as the relay would
		if _, err := st.Write([]byte("c")); err != nil {
			t.Fatal(err)
		}
	}
	want := append(append([]byte("a"), big...), 'c')
	got := make([]byte, len(want))
	if _, err := io.ReadFull(st, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("echo: %d bytes in order %v, %v", len(got), bytes.Equal(got, want), err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := st.TryWrite([]byte("d")); n != 0 || err != ErrWriteAfterClose {
		t.Fatalf("after CloseWrite: TryWrite %d, %v; want %v", n, err, ErrWriteAfterClose)
	}
	st.Close()
}
