package wsclient

import (
	"io"
	"sync"
)

// printer writes the client's output lines. In interactive mode it uses the
// VT100 sequences of websockets 10.4's print_during_input and
// print_over_input so that messages appear above the "> " prompt line; in
// non-interactive mode it writes plain lines. It is safe for concurrent use.
type printer struct {
	mu  sync.Mutex
	w   io.Writer
	tty bool
}

func (p *printer) write(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = io.WriteString(p.w, s)
}

// line prints s on a line of its own.
func (p *printer) line(s string) { p.write(s + "\n") }

// prompt shows the input prompt (interactive mode only).
func (p *printer) prompt() {
	if p.tty {
		p.write("> ")
	}
}

// during prints s while the user may be typing on the prompt line: save the
// cursor, open a blank line above the prompt, print s there, restore the
// cursor one line lower (where the prompt has moved).
func (p *printer) during(s string) {
	if !p.tty {
		p.line(s)
		return
	}
	p.write("\x1b7" + "\n" + "\x1b[A" + "\x1b[L" + s + "\n" + "\x1b8" + "\x1b[B")
}

// over prints s in place of the prompt line: carriage return, erase the
// line, print s.
func (p *printer) over(s string) {
	if !p.tty {
		p.line(s)
		return
	}
	p.write("\r" + "\x1b[K" + s + "\n")
}
