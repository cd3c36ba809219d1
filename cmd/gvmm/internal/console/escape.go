package console

import "io"

// Escape sequence bytes, as in QEMU's "-serial mon:stdio".
const (
	escapeChar = 0x01 // Ctrl-A
	quitChar   = 'x'
)

// readSize bounds what one Read takes from the underlying reader; the
// decoded output is at most one byte longer (a Ctrl-A held over from the
// previous Read followed by an ordinary byte).
const readSize = 4096

// escapeReader decodes the Ctrl-A escape; see NewEscapeReader.
type escapeReader struct {
	r      io.Reader
	onQuit func()

	in      [readSize]byte
	outBuf  [readSize + 1]byte
	out     []byte // decoded bytes not yet returned, in outBuf
	escaped bool   // the last byte read was an unpaired Ctrl-A
	quit    bool   // Ctrl-A x seen: EOF once out is drained
	err     error  // the underlying reader's error, returned once out is drained
}

// NewEscapeReader returns a reader of r that interprets QEMU's console
// escape: Ctrl-A x calls onQuit (once) and ends the stream with io.EOF,
// discarding whatever follows; Ctrl-A Ctrl-A yields one Ctrl-A; Ctrl-A
// followed by any other byte yields both bytes. A Ctrl-A and the byte
// after it may arrive in separate reads; a Ctrl-A at the end of r is
// passed through.
//
// The escape applies whether or not r is a terminal, so input piped into
// the guest must double every 0x01 byte, and a pipe carrying Ctrl-A x ends
// the session there. The reader is not safe for concurrent use.
func NewEscapeReader(r io.Reader, onQuit func()) io.Reader {
	return &escapeReader{r: r, onQuit: onQuit}
}

func (e *escapeReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	// A read that yields nothing (only a held Ctrl-A) must not be
	// reported as a 0-byte success: read again.
	for len(e.out) == 0 {
		switch {
		case e.quit:
			return 0, io.EOF
		case e.err != nil:
			return 0, e.err
		}
		n, err := e.r.Read(e.in[:])
		e.decode(e.in[:n])
		if err != nil {
			if e.escaped && !e.quit {
				e.escaped = false
				e.out = append(e.out, escapeChar)
			}
			e.err = err
		}
	}
	n := copy(p, e.out)
	e.out = e.out[n:]
	return n, nil
}

// decode turns in into e.out, which is empty on entry.
func (e *escapeReader) decode(in []byte) {
	e.out = e.outBuf[:0]
	for _, c := range in {
		if !e.escaped {
			if c == escapeChar {
				e.escaped = true
			} else {
				e.out = append(e.out, c)
			}
			continue
		}
		e.escaped = false
		switch c {
		case quitChar:
			e.quit = true
			e.onQuit()
			return
		case escapeChar:
			e.out = append(e.out, escapeChar)
		default:
			e.out = append(e.out, escapeChar, c)
		}
	}
}
