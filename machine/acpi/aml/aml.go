// Package aml encodes the small subset of the ACPI Machine Language that a
// VMM's DSDT needs: named objects, scopes, devices, packages, integers,
// strings, EISA IDs and resource templates (ACPI 6.5, chapter 20).
//
// Terms are plain values; nothing is encoded until AppendAML is called,
// which validates names and sizes and reports an *EncodeError instead of
// emitting AML the guest's interpreter would reject.
package aml

import (
	"encoding/binary"
	"fmt"
)

// Opcodes and prefixes (ACPI 6.5, 20.2).
const (
	zeroOp       = 0x00
	oneOp        = 0x01
	nameOp       = 0x08
	bytePrefix   = 0x0a
	wordPrefix   = 0x0b
	dwordPrefix  = 0x0c
	stringPrefix = 0x0d
	qwordPrefix  = 0x0e
	scopeOp      = 0x10
	bufferOp     = 0x11
	packageOp    = 0x12
	dualNamePfx  = 0x2e
	multiNamePfx = 0x2f
	extOpPrefix  = 0x5b
	deviceOp     = 0x82 // after extOpPrefix
	rootChar     = '\\'
	parentChar   = '^'
)

// maxPkgLength is the largest value a 4-byte PkgLength can hold (28 bits).
const maxPkgLength = 1<<28 - 1

// Term is an AML object that can be appended to a term list or package.
type Term interface {
	// AppendAML appends the encoding of the term to b.
	AppendAML(b []byte) ([]byte, error)
}

// EncodeError reports a term that cannot be encoded.
type EncodeError struct {
	What   string // kind of term: "name", "package", "EISA ID", ...
	Value  string // the offending value, for the message
	Reason string
}

func (e *EncodeError) Error() string {
	return fmt.Sprintf("aml: invalid %s %q: %s", e.What, e.Value, e.Reason)
}

// Integer is an AML integer constant, encoded in the shortest form.
type Integer uint64

// AppendAML implements Term.
func (i Integer) AppendAML(b []byte) ([]byte, error) {
	v := uint64(i)
	switch {
	case v == 0:
		return append(b, zeroOp), nil
	case v == 1:
		return append(b, oneOp), nil
	case v <= 0xff:
		return append(b, bytePrefix, byte(v)), nil
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16(append(b, wordPrefix), uint16(v)), nil
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32(append(b, dwordPrefix), uint32(v)), nil
	default:
		return binary.LittleEndian.AppendUint64(append(b, qwordPrefix), v), nil
	}
}

// String is an AML string constant: ASCII 0x01-0x7f, NUL-terminated.
type String string

// AppendAML implements Term.
func (s String) AppendAML(b []byte) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] > 0x7f {
			return b, &EncodeError{What: "string", Value: string(s), Reason: fmt.Sprintf("byte %#x at %d is not ASCII 0x01-0x7f", s[i], i)}
		}
	}
	b = append(b, stringPrefix)
	b = append(b, s...)
	return append(b, 0), nil
}

// EISAID is a compressed PNP ID such as "PNP0501" (ASL EisaId()): three
// upper-case letters and four hex digits, encoded as a DWord integer.
type EISAID string

// AppendAML implements Term.
func (id EISAID) AppendAML(b []byte) ([]byte, error) {
	v, err := id.value()
	if err != nil {
		return b, err
	}
	return Integer(v).AppendAML(b)
}

func (id EISAID) value() (uint32, error) {
	bad := func(reason string) error { return &EncodeError{What: "EISA ID", Value: string(id), Reason: reason} }
	if len(id) != 7 {
		return 0, bad("want 3 letters and 4 hex digits")
	}
	var vendor uint16
	for i := 0; i < 3; i++ {
		c := id[i]
		if c < 'A' || c > 'Z' {
			return 0, bad("vendor must be upper-case letters")
		}
		vendor = vendor<<5 | uint16(c-'@') // 'A' is 1 in the 5-bit code
	}
	var product uint16
	for i := 3; i < 7; i++ {
		d, ok := hexDigit(id[i])
		if !ok {
			return 0, bad("product must be hex digits")
		}
		product = product<<4 | uint16(d)
	}
	// The ID is stored big-endian in memory: vendor word, then product word.
	var be [4]byte
	binary.BigEndian.PutUint16(be[0:], vendor)
	binary.BigEndian.PutUint16(be[2:], product)
	return binary.LittleEndian.Uint32(be[:]), nil
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// appendNameString encodes an ASL path such as "_S5", "\_SB_.PCI0" or
// "^COM1": an optional root or parent prefix, then 1..255 segments of up
// to four characters (padded with '_').
func appendNameString(b []byte, path string) ([]byte, error) {
	bad := func(reason string) error { return &EncodeError{What: "name", Value: path, Reason: reason} }
	rest := path
	switch {
	case len(rest) > 0 && rest[0] == rootChar:
		b = append(b, rootChar)
		rest = rest[1:]
	default:
		for len(rest) > 0 && rest[0] == parentChar {
			b = append(b, parentChar)
			rest = rest[1:]
		}
	}
	if rest == "" {
		return b, bad("no name segment")
	}
	var segs []string
	for start := 0; ; {
		end := start
		for end < len(rest) && rest[end] != '.' {
			end++
		}
		segs = append(segs, rest[start:end])
		if end == len(rest) {
			break
		}
		start = end + 1
	}
	switch n := len(segs); {
	case n == 2:
		b = append(b, dualNamePfx)
	case n > 255:
		return b, bad("more than 255 segments")
	case n > 2:
		b = append(b, multiNamePfx, byte(n))
	}
	for _, s := range segs {
		if err := checkNameSeg(s); err != nil {
			return b, bad(err.Error())
		}
		b = append(b, s...)
		for i := len(s); i < 4; i++ {
			b = append(b, '_')
		}
	}
	return b, nil
}

func checkNameSeg(s string) error {
	if len(s) == 0 || len(s) > 4 {
		return fmt.Errorf("segment %q must have 1 to 4 characters", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		lead := c == '_' || (c >= 'A' && c <= 'Z')
		if !lead && (i == 0 || c < '0' || c > '9') {
			return fmt.Errorf("segment %q: character %q not allowed here", s, c)
		}
	}
	return nil
}

// appendPkgLength encodes the PkgLength of a package whose contents after
// the PkgLength are n bytes long. The encoded value counts its own bytes.
func appendPkgLength(b []byte, n int) ([]byte, error) {
	if n+1 <= 0x3f {
		return append(b, byte(n+1)), nil
	}
	for extra := 1; extra <= 3; extra++ {
		total := n + 1 + extra
		if total < 1<<(4+8*extra) {
			// Lead byte: count of following bytes in bits 7-6, the
			// low nibble of the length in bits 3-0.
			b = append(b, byte(extra<<6)|byte(total&0x0f))
			for i := 0; i < extra; i++ {
				b = append(b, byte(total>>(4+8*i)))
			}
			return b, nil
		}
	}
	return b, &EncodeError{What: "package length", Value: fmt.Sprint(n), Reason: fmt.Sprintf("exceeds %d bytes", maxPkgLength)}
}

// appendPackage appends op, a PkgLength covering body, and body.
func appendPackage(b []byte, op []byte, body []byte) ([]byte, error) {
	b = append(b, op...)
	b, err := appendPkgLength(b, len(body))
	if err != nil {
		return b, err
	}
	return append(b, body...), nil
}

func appendTerms(b []byte, terms []Term) ([]byte, error) {
	for _, t := range terms {
		var err error
		if b, err = t.AppendAML(b); err != nil {
			return b, err
		}
	}
	return b, nil
}

type name struct {
	path  string
	value Term
}

// Name is DefName: Name(path, value).
func Name(path string, value Term) Term { return name{path, value} }

// AppendAML implements Term.
func (n name) AppendAML(b []byte) ([]byte, error) {
	b, err := appendNameString(append(b, nameOp), n.path)
	if err != nil {
		return b, err
	}
	return n.value.AppendAML(b)
}

// namedBlock is the shared shape of Scope and Device: an opcode, a
// PkgLength, a name and a term list.
type namedBlock struct {
	op    []byte
	path  string
	terms []Term
}

// Scope is DefScope: Scope(path) { terms }.
func Scope(path string, terms ...Term) Term {
	return namedBlock{op: []byte{scopeOp}, path: path, terms: terms}
}

// Device is DefDevice: Device(path) { terms }.
func Device(path string, terms ...Term) Term {
	return namedBlock{op: []byte{extOpPrefix, deviceOp}, path: path, terms: terms}
}

// AppendAML implements Term.
func (s namedBlock) AppendAML(b []byte) ([]byte, error) {
	body, err := appendNameString(nil, s.path)
	if err != nil {
		return b, err
	}
	if body, err = appendTerms(body, s.terms); err != nil {
		return b, err
	}
	return appendPackage(b, s.op, body)
}

type pkg []Term

// Package is DefPackage with up to 255 elements: Package() { elems }.
func Package(elems ...Term) Term { return pkg(elems) }

// AppendAML implements Term.
func (p pkg) AppendAML(b []byte) ([]byte, error) {
	if len(p) > 0xff {
		return b, &EncodeError{What: "package", Value: fmt.Sprintf("%d elements", len(p)), Reason: "more than 255 elements"}
	}
	body, err := appendTerms([]byte{byte(len(p))}, p)
	if err != nil {
		return b, err
	}
	return appendPackage(b, []byte{packageOp}, body)
}
