package p9

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// validRequests are one well-formed message of every type served, as
// the kernel encodes them; the fuzz targets start from them.
func validRequests() [][]byte {
	return [][]byte{
		msg(msgTversion, noTag, uint32(128<<10), "9P2000.L"),
		msg(msgTattach, 1, uint32(0), uint32(0xffffffff), "root", "", uint32(0)),
		msg(msgTwalk, 2, uint32(0), uint32(1), uint16(2), "a", "b"),
		msg(msgTlopen, 3, uint32(1), uint32(0)),
		msg(msgTread, 4, uint32(1), uint64(0), uint32(4096)),
		msg(msgTwrite, 5, uint32(1), uint64(0), uint32(3), []byte("abc")),
		msg(msgTgetattr, 6, uint32(1), uint64(0x3fff)),
		msg(msgTsetattr, 7, uint32(1), uint32(1), uint32(0o644), uint32(0), uint32(0), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0)),
		msg(msgTlcreate, 8, uint32(0), "f", uint32(2), uint32(0o644), uint32(0)),
		msg(msgTmkdir, 9, uint32(0), "d", uint32(0o755), uint32(0)),
		msg(msgTsymlink, 10, uint32(0), "l", "/etc", uint32(0)),
		msg(msgTmknod, 11, uint32(0), "n", uint32(0o10644), uint32(0), uint32(0), uint32(0)),
		msg(msgTreaddir, 12, uint32(1), uint64(0), uint32(8192)),
		msg(msgTrenameat, 13, uint32(0), "a", uint32(0), "b"),
		msg(msgTunlinkat, 14, uint32(0), "a", uint32(0)),
		msg(msgTlink, 15, uint32(0), uint32(1), "h"),
		msg(msgTrename, 16, uint32(1), uint32(0), "r"),
		msg(msgTreadlink, 17, uint32(1)),
		msg(msgTstatfs, 18, uint32(0)),
		msg(msgTfsync, 19, uint32(1), uint32(0)),
		msg(msgTlock, 20, uint32(1), uint8(0), uint32(0), uint64(0), uint64(0), uint32(1), "host"),
		msg(msgTxattrwalk, 21, uint32(1), uint32(2), "user.x"),
		msg(msgTxattrcreate, 22, uint32(1), "user.x", uint64(3), uint32(0)),
		msg(msgTflush, 23, uint16(4)),
		msg(msgTclunk, 24, uint32(1)),
		msg(msgTremove, 25, uint32(1)),
		msg(msgTauth, 26, uint32(5), "u", "a", uint32(0)),
	}
}

func TestParseRequestAcceptsWellFormed(t *testing.T) {
	for _, m := range validRequests() {
		r, err := ParseRequest(append([]byte(nil), m...), MaxMessageSize, MaxMessageSize)
		require.NoError(t, err, "type %d", m[4])
		assert.Equal(t, m[4], r.Type)
		assert.Equal(t, binary.LittleEndian.Uint16(m[5:]), r.Tag)
	}
}

func TestParseRequestRefuses(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"empty", nil, ErrShortHeader},
		{"six bytes", []byte{6, 0, 0, 0, msgTclunk, 0}, ErrShortHeader},
		{"size too small", append(msg(msgTclunk, 1, uint32(1)), 0), ErrSizeMismatch},
		{"size too large", msg(msgTclunk, 1, uint32(1))[:10], ErrSizeMismatch},
		{"unknown type", msg(1, 1), ErrUnknownType},
		{"Tgetlock", msg(54, 1, uint32(1)), ErrUnknownType},
		{"an R-message", msg(msgRversion, 1, uint32(1), ""), ErrUnknownType},
		{"NOTAG", msg(msgTclunk, noTag, uint32(1)), ErrNoTag},
		{"missing fid", msg(msgTclunk, 1), ErrMalformed},
		{"string length past the end", msg(msgTwalk, 1, uint32(0), uint32(1), uint16(1), uint16(5), []byte("ab")), ErrMalformed},
		{"names past the end", msg(msgTwalk, 1, uint32(0), uint32(1), uint16(3), "a"), ErrMalformed},
		{"write count over the data", msg(msgTwrite, 1, uint32(1), uint64(0), uint32(4), []byte("abc")), ErrMalformed},
		{"write count under the data", msg(msgTwrite, 1, uint32(1), uint64(0), uint32(2), []byte("abc")), ErrMalformed},
		{"setattr cut short", msg(msgTsetattr, 1, uint32(1), uint32(1), uint32(0o644)), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRequest(tt.msg, MaxMessageSize, MaxMessageSize)
			assert.ErrorIs(t, err, tt.want)
		})
	}
	big := msg(msgTwrite, 1, uint32(1), uint64(0), uint32(8192), make([]byte, 8192))
	_, err := ParseRequest(big, 8192, MaxMessageSize)
	assert.ErrorIs(t, err, ErrTooLarge)
}

func TestParseRequestLimits(t *testing.T) {
	r, err := ParseRequest(msg(msgTversion, noTag, uint32(1<<30), "9P2000.L.Google.7"), MaxMessageSize, MaxMessageSize)
	require.NoError(t, err)
	assert.Equal(t, msg(msgTversion, noTag, uint32(MaxMessageSize), "9P2000.L"), r.Msg, "msize capped, plain 9P2000.L")
	r, err = ParseRequest(msg(msgTversion, noTag, uint32(8192), "9P2000.u"), MaxMessageSize, MaxMessageSize)
	require.NoError(t, err)
	assert.Equal(t, msg(msgTversion, noTag, uint32(8192), "9P2000.u"), r.Msg, "left for the server to refuse")
	for _, typ := range []uint8{msgTread, msgTreaddir} {
		r, err = ParseRequest(msg(typ, 1, uint32(1), uint64(0), uint32(1<<30)), 8192, MaxMessageSize)
		require.NoError(t, err)
		assert.Equal(t, uint32(8192-rreadHeader), binary.LittleEndian.Uint32(r.Msg[HeaderSize+12:]), "type %d: count fits msize", typ)
	}
}
