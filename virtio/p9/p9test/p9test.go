// Package p9test builds raw 9P2000.L T-messages, as a driver would post
// them, for the tests of the 9p device and for the hostile guest.
package p9test

import (
	"encoding/binary"
	"fmt"
)

// Msg encodes a T-message: the size[4] type[1] tag[2] header, then each
// field in order (uint8, uint16, uint32 and uint64 little-endian, a
// string as a 9P string, []byte as raw bytes). Any other field type is a
// bug in the caller's test and panics.
func Msg(typ uint8, tag uint16, fields ...any) []byte {
	b := []byte{0, 0, 0, 0, typ, byte(tag), byte(tag >> 8)}
	le := binary.LittleEndian
	for _, f := range fields {
		switch v := f.(type) {
		case uint8:
			b = append(b, v)
		case uint16:
			b = le.AppendUint16(b, v)
		case uint32:
			b = le.AppendUint32(b, v)
		case uint64:
			b = le.AppendUint64(b, v)
		case string:
			b = le.AppendUint16(b, uint16(len(v)))
			b = append(b, v...)
		case []byte:
			b = append(b, v...)
		default:
			panic(fmt.Sprintf("p9test.Msg: field of type %T", f))
		}
	}
	le.PutUint32(b, uint32(len(b)))
	return b
}
