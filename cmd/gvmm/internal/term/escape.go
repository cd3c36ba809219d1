package term

import "io"

// The console escape, as QEMU's -serial mon:stdio has it.
const (
	escapeByte = 0x01 // Ctrl-A
	quitByte   = 'x'
)

// escapeBufSize is how much input one underlying Read takes.
const escapeBufSize = 512

// NewEscapeReader returns a reader of r's bytes with the console escape
// applied: Ctrl-A x calls onQuit (if not nil) and ends the stream with
// io.EOF, dropping anything read after it; Ctrl-A Ctrl-A yields one
// Ctrl-A; Ctrl-A followed by any other byte yields both. The pair may be
// split across reads of r. A Ctrl-A that is the last byte before r ends
// is passed through.
//
// The escape applies to piped input too, so a script can end a session
// the way a user does; a pipe carrying binary data has to double its
// Ctrl-A bytes. Other errors from r are returned as they are, after the
// bytes read before them.
func NewEscapeReader(r io.Reader, onQuit func()) io.Reader {
	return &escapeReader{r: r, onQuit: onQuit}
}

type escapeReader struct {
	r      io.Reader
	onQuit func()
	// buf holds input from r at buf[1:] and is filtered in place into
	// out; byte 0 is room for a Ctrl-A held over from the previous read,
	// which comes out ahead of the byte that follows it.
	buf [1 + escapeBufSize]byte
	out []byte // filtered bytes not yet returned
	esc bool   // the last byte read was an unpaired Ctrl-A
	err error  // returned once out is drained
}

func (e *escapeReader) Read(p []byte) (int, error) {
	for len(e.out) == 0 {
		if e.err != nil {
			return 0, e.err
		}
		e.fill()
	}
	n := copy(p, e.out)
	e.out = e.out[n:]
	return n, nil
}

// fill reads once from r and filters the bytes into out. Writing trails
// reading in buf: every input byte yields at most one output byte except
// the one after a held Ctrl-A, which yields two and uses buf[0].
func (e *escapeReader) fill() {
	n, err := e.r.Read(e.buf[1:])
	w := 0
	for _, b := range e.buf[1 : 1+n] {
		switch {
		case e.esc && b == quitByte:
			e.esc = false
			e.out = e.buf[:w]
			e.err = io.EOF
			if e.onQuit != nil {
				e.onQuit()
			}
			return
		case e.esc && b == escapeByte:
			e.esc = false
			e.buf[w] = escapeByte
			w++
		case e.esc:
			e.esc = false
			e.buf[w], e.buf[w+1] = escapeByte, b
			w += 2
		case b == escapeByte:
			e.esc = true
		default:
			e.buf[w] = b
			w++
		}
	}
	if err != nil {
		if e.esc {
			e.esc = false
			e.buf[w] = escapeByte
			w++
		}
		e.err = err
	}
	e.out = e.buf[:w]
}
