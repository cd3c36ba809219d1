package p9

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// 9P2000.L message types (the kernel's include/net/9p/9p.h).
const (
	msgTstatfs      = 8
	msgTlopen       = 12
	msgTlcreate     = 14
	msgTsymlink     = 16
	msgTmknod       = 18
	msgTrename      = 20
	msgTreadlink    = 22
	msgTgetattr     = 24
	msgTsetattr     = 26
	msgTxattrwalk   = 30
	msgTxattrcreate = 32
	msgTreaddir     = 40
	msgTfsync       = 50
	msgTlock        = 52
	msgTlink        = 70
	msgTmkdir       = 72
	msgTrenameat    = 74
	msgTunlinkat    = 76
	msgTversion     = 100
	msgTauth        = 102
	msgTattach      = 104
	msgTflush       = 108
	msgTwalk        = 110
	msgTread        = 116
	msgTwrite       = 118
	msgTclunk       = 120
	msgTremove      = 122

	msgRlerror  = 7
	msgRversion = 101
	msgRflush   = 109
)

// HeaderSize is size[4] type[1] tag[2].
const HeaderSize = 7

// A QID is type[1] version[4] path[8]; QTDIR marks a folder.
const (
	qidSize    = 13
	qidTypeDir = 0x80
)

// noFid is NOFID: no fid, as Tattach's afid.
const noFid = 0xffffffff

// changesFids are the requests whose answers create, move, open or
// drop fids, or remove what fids name: the device follows them (fidTable).
var changesFids = map[uint8]bool{
	msgTattach: true, msgTwalk: true, msgTlopen: true, msgTlcreate: true, msgTclunk: true,
	msgTremove: true, msgTunlinkat: true, msgTrenameat: true, msgTrename: true,
}

// dotL is the protocol version served.
const dotL = "9P2000.L"

// noTag is the tag of Tversion.
const noTag = 0xffff

// rreadHeader is Rread's header and count[4], the part of an msize that
// is not data.
const rreadHeader = HeaderSize + 4

// layouts give each T-message's fields after the header as the server
// decodes them: '1', '2', '4', '8' an integer of that many bytes, 's' a
// string (length[2] and bytes), 'n' a count[2] of strings that follow (the
// rest of Twalk), 'd' Twrite's count[4] and exactly that much data.
var layouts = map[uint8]string{
	msgTstatfs:      "4",
	msgTlopen:       "44",
	msgTlcreate:     "4s444",
	msgTsymlink:     "4ss4",
	msgTmknod:       "4s4444",
	msgTrename:      "44s",
	msgTreadlink:    "4",
	msgTgetattr:     "48",
	msgTsetattr:     "4444488888",
	msgTxattrwalk:   "44s",
	msgTxattrcreate: "4s84",
	msgTreaddir:     "484",
	msgTfsync:       "4",
	msgTlock:        "414884s",
	msgTlink:        "44s",
	msgTmkdir:       "4s44",
	msgTrenameat:    "4s4s",
	msgTunlinkat:    "4s4",
	msgTversion:     "4s",
	msgTauth:        "4ss4",
	msgTattach:      "44ss4",
	msgTflush:       "2",
	msgTwalk:        "44n",
	msgTread:        "484",
	msgTwrite:       "48d",
	msgTclunk:       "4",
	msgTremove:      "4",
}

// Errors of ParseRequest. With ErrUnknownType and ErrMalformed the
// header was readable: the request is answered with an Rlerror.
var (
	ErrShortHeader  = errors.New("9p: message shorter than its header")
	ErrSizeMismatch = errors.New("9p: size field differs from the request's length")
	ErrTooLarge     = errors.New("9p: message larger than the negotiated msize")
	ErrUnknownType  = errors.New("9p: not a 9P2000.L request this server handles")
	ErrMalformed    = errors.New("9p: fields run past the message")
	ErrNoTag        = errors.New("9p: NOTAG on a request other than Tversion")
)

// Request is a validated T-message. Msg aliases the caller's buffer.
type Request struct {
	Type uint8
	Tag  uint16
	Msg  []byte
}

// ParseRequest checks msg, the device-readable bytes of one chain,
// against the 9P2000.L framing and the field layout of its type, so that
// the server never meets a message it cannot decode. msize bounds the
// message. It also lowers what would make an answer larger than msize:
// Tversion's msize to maxMsize, Tread's and Treaddir's count to fit.
func ParseRequest(msg []byte, msize, maxMsize uint32) (Request, error) {
	if len(msg) < HeaderSize {
		return Request{}, ErrShortHeader
	}
	le := binary.LittleEndian
	r := Request{Type: msg[4], Tag: le.Uint16(msg[5:]), Msg: msg}
	if size := le.Uint32(msg); uint64(size) != uint64(len(msg)) {
		return r, fmt.Errorf("%w: size %d, %d bytes", ErrSizeMismatch, size, len(msg))
	}
	if uint64(len(msg)) > uint64(msize) {
		return r, fmt.Errorf("%w: %d bytes, msize %d", ErrTooLarge, len(msg), msize)
	}
	layout, ok := layouts[r.Type]
	if !ok {
		return r, fmt.Errorf("%w: type %d", ErrUnknownType, r.Type)
	}
	if r.Tag == noTag && r.Type != msgTversion {
		return r, ErrNoTag
	}
	if err := checkLayout(msg[HeaderSize:], layout); err != nil {
		return r, fmt.Errorf("%w: type %d: %w", ErrMalformed, r.Type, err)
	}
	body := msg[HeaderSize:]
	switch r.Type {
	case msgTversion:
		le.PutUint32(body, min(le.Uint32(body), maxMsize))
		if version := string(body[6:]); strings.HasPrefix(version, dotL+".") {
			// The server's own extensions (9P2000.L.Google.N) are for
			// its own client; the kernel's 9P2000.L is what is served.
			r.Msg = append(le.AppendUint16(append(msg[:HeaderSize:HeaderSize], body[:4]...), uint16(len(dotL))), dotL...)
			le.PutUint32(r.Msg, uint32(len(r.Msg)))
		}
	case msgTread, msgTreaddir:
		if limit := msize - rreadHeader; le.Uint32(body[12:]) > limit {
			le.PutUint32(body[12:], limit)
		}
	}
	return r, nil
}

// checkLayout walks b along layout and requires every field to fit.
func checkLayout(b []byte, layout string) error {
	off := 0
	need := func(n int) error {
		if n > len(b)-off {
			return fmt.Errorf("field at offset %d needs %d bytes, %d left", off+HeaderSize, n, len(b)-off)
		}
		return nil
	}
	str := func() error {
		if err := need(2); err != nil {
			return err
		}
		n := int(binary.LittleEndian.Uint16(b[off:]))
		off += 2
		if err := need(n); err != nil {
			return err
		}
		off += n
		return nil
	}
	for _, f := range []byte(layout) {
		switch f {
		case '1', '2', '4', '8':
			n := int(f - '0')
			if err := need(n); err != nil {
				return err
			}
			off += n
		case 's':
			if err := str(); err != nil {
				return err
			}
		case 'n':
			if err := need(2); err != nil {
				return err
			}
			count := int(binary.LittleEndian.Uint16(b[off:]))
			off += 2
			for range count {
				if err := str(); err != nil {
					return err
				}
			}
		case 'd':
			if err := need(4); err != nil {
				return err
			}
			count := uint64(binary.LittleEndian.Uint32(b[off:]))
			off += 4
			if count != uint64(len(b)-off) {
				return fmt.Errorf("Twrite count %d with %d bytes of data", count, len(b)-off)
			}
			off = len(b)
		}
	}
	return nil
}

// lerror encodes an Rlerror answering tag with errno.
func lerror(tag uint16, errno uint32) []byte {
	b := make([]byte, HeaderSize+4)
	binary.LittleEndian.PutUint32(b, uint32(len(b)))
	b[4] = msgRlerror
	binary.LittleEndian.PutUint16(b[5:], tag)
	binary.LittleEndian.PutUint32(b[HeaderSize:], errno)
	return b
}

// rflush encodes the Rflush answering tag.
func rflush(tag uint16) []byte {
	b := make([]byte, HeaderSize)
	binary.LittleEndian.PutUint32(b, uint32(len(b)))
	b[4] = msgRflush
	binary.LittleEndian.PutUint16(b[5:], tag)
	return b
}
