package console

import (
	"io"
	"unicode/utf8"
)

// maxSGR bounds the SGR sequence a Filter holds until its final byte:
// longer CSI sequences are dropped as they come, never buffered.
const maxSGR = 64

// Control bytes the filter treats specially.
const (
	bs  = 0x08
	tab = 0x09
	lf  = 0x0a
	cr  = 0x0d
	can = 0x18 // cancels a sequence
	sub = 0x1a // cancels a sequence
	esc = 0x1b
	bel = 0x07 // ends an OSC string, as xterm accepts
	del = 0x7f
)

// filterState is where the filter is in an escape sequence, after the
// DEC parser's states (vt100.net/emu/dec_ansi_parser), without the ones
// that only matter to a terminal.
type filterState uint8

const (
	ground    filterState = iota
	escape                // after ESC
	escInter              // ESC and intermediates: dropped up to the final byte
	csi                   // ESC [ and parameters, held while it may be SGR
	csiIgnore             // a CSI sequence that is not SGR, dropped up to the final byte
	str                   // OSC, DCS, SOS, PM or APC: dropped up to ST or BEL
	strEsc                // ESC inside a string: ST if \ follows
)

// Filter passes a guest's console output on to a terminal with what
// cannot harm it: printable text (valid UTF-8 without C1 controls), LF,
// CR, tab, backspace and SGR sequences (colours and attributes, ESC [
// params m). Every other control byte and escape sequence is dropped
// whole, so that a guest cannot retitle the terminal, move or hide its
// cursor, switch its character set, redefine keys, write to the
// clipboard or have the terminal answer into the admin's input. Its
// state carries over from one Write to the next; it holds at most
// maxSGR bytes.
type Filter struct {
	w     io.Writer
	state filterState
	seq   []byte // the CSI sequence held, from ESC
	utf   []byte // an incomplete UTF-8 sequence
	out   []byte // reused for each Write's output
}

// NewFilter returns a Filter writing to w.
func NewFilter(w io.Writer) *Filter {
	return &Filter{w: w, seq: make([]byte, 0, maxSGR), utf: make([]byte, 0, utf8.UTFMax)}
}

// Write filters p and writes what remains to the underlying writer; it
// reports len(p) unless that write fails.
func (f *Filter) Write(p []byte) (int, error) {
	f.out = f.out[:0]
	for _, b := range p {
		f.step(b)
	}
	if len(f.out) == 0 {
		return len(p), nil
	}
	if _, err := f.w.Write(f.out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// step takes one byte.
func (f *Filter) step(b byte) {
	// Anywhere: CAN and SUB cancel a sequence, ESC starts a new one.
	switch {
	case b == can || b == sub:
		f.reset()
		return
	case b == esc && f.state != str:
		f.reset()
		f.state = escape
		f.seq = append(f.seq, b)
		return
	}
	switch f.state {
	case ground:
		f.text(b)
	case escape:
		switch {
		case b == '[':
			f.state = csi
			f.seq = append(f.seq, b)
		case b == ']' || b == 'P' || b == 'X' || b == '^' || b == '_':
			f.state = str
		case b >= 0x20 && b <= 0x2f:
			f.state = escInter
		case b >= 0x30 && b <= 0x7e:
			f.reset() // a whole ESC sequence, dropped
		default:
			// A control byte inside: dropped, the sequence goes on.
		}
	case escInter:
		if b >= 0x30 && b <= 0x7e {
			f.reset()
		}
	case csi:
		switch {
		case b >= '0' && b <= '9' || b == ';' || b == ':':
			if len(f.seq) == maxSGR-1 {
				f.state = csiIgnore
				return
			}
			f.seq = append(f.seq, b)
		case b == 'm':
			f.out = append(append(f.out, f.seq...), b)
			f.reset()
		case b >= 0x40 && b <= 0x7e:
			f.reset() // another CSI command
		case b >= 0x20 && b <= 0x3f:
			f.state = csiIgnore // a private prefix or an intermediate: not SGR
		case b >= 0x80:
			f.reset()
		}
	case csiIgnore:
		switch {
		case b >= 0x40 && b <= 0x7e:
			f.reset()
		case b >= 0x80:
			f.reset()
		}
	case str:
		switch b {
		case esc:
			f.state = strEsc
		case bel:
			f.reset()
		}
	case strEsc:
		// ESC \ is ST; ESC then anything else also ends the string, as
		// xterm does, and starts a sequence of its own.
		f.reset()
		if b != '\\' {
			f.state = escape
			f.seq = append(f.seq, esc)
			f.step(b)
		}
	}
}

// text takes a byte outside any sequence.
func (f *Filter) text(b byte) {
	if len(f.utf) > 0 || b >= 0x80 {
		f.utf = append(f.utf, b)
		r, size := utf8.DecodeRune(f.utf)
		switch {
		case r == utf8.RuneError && size <= 1 && utf8.FullRune(f.utf):
			// Invalid: drop the first byte, take the rest again.
			rest := append([]byte(nil), f.utf[1:]...)
			f.utf = f.utf[:0]
			for _, c := range rest {
				f.text(c)
			}
		case r == utf8.RuneError && size <= 1:
			// Incomplete: wait for more.
		default:
			// U+0080 to U+009F are the C1 controls (CSI, OSC, ...),
			// which some terminals obey in their UTF-8 form.
			if r < 0x80 || r > 0x9f {
				f.out = append(f.out, f.utf[:size]...)
			}
			f.utf = f.utf[:0]
		}
		return
	}
	switch {
	case b >= 0x20 && b < del, b == lf, b == cr, b == tab, b == bs:
		f.out = append(f.out, b)
	}
}

// reset returns to text, dropping what was held: a sequence, or a
// UTF-8 sequence a control byte cut short.
func (f *Filter) reset() {
	f.state, f.seq, f.utf = ground, f.seq[:0], f.utf[:0]
}
