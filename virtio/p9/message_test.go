package p9

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/virtio/p9/p9test"
)

// validRequests are one well-formed message of every type served, as
// the kernel encodes them; the fuzz targets start from them.
func validRequests() [][]byte {
	return [][]byte{
		p9test.Msg(msgTversion, noTag, uint32(128<<10), "9P2000.L"),
		p9test.Msg(msgTattach, 1, uint32(0), uint32(0xffffffff), "root", "", uint32(0)),
		p9test.Msg(msgTwalk, 2, uint32(0), uint32(1), uint16(2), "a", "b"),
		p9test.Msg(msgTlopen, 3, uint32(1), uint32(0)),
		p9test.Msg(msgTread, 4, uint32(1), uint64(0), uint32(4096)),
		p9test.Msg(msgTwrite, 5, uint32(1), uint64(0), uint32(3), []byte("abc")),
		p9test.Msg(msgTgetattr, 6, uint32(1), uint64(0x3fff)),
		p9test.Msg(msgTsetattr, 7, uint32(1), uint32(1), uint32(0o644), uint32(0), uint32(0), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0)),
		p9test.Msg(msgTlcreate, 8, uint32(0), "f", uint32(2), uint32(0o644), uint32(0)),
		p9test.Msg(msgTmkdir, 9, uint32(0), "d", uint32(0o755), uint32(0)),
		p9test.Msg(msgTsymlink, 10, uint32(0), "l", "/etc", uint32(0)),
		p9test.Msg(msgTmknod, 11, uint32(0), "n", uint32(0o10644), uint32(0), uint32(0), uint32(0)),
		p9test.Msg(msgTreaddir, 12, uint32(1), uint64(0), uint32(8192)),
		p9test.Msg(msgTrenameat, 13, uint32(0), "a", uint32(0), "b"),
		p9test.Msg(msgTunlinkat, 14, uint32(0), "a", uint32(0)),
		p9test.Msg(msgTlink, 15, uint32(0), uint32(1), "h"),
		p9test.Msg(msgTrename, 16, uint32(1), uint32(0), "r"),
		p9test.Msg(msgTreadlink, 17, uint32(1)),
		p9test.Msg(msgTstatfs, 18, uint32(0)),
		p9test.Msg(msgTfsync, 19, uint32(1), uint32(0)),
		p9test.Msg(msgTlock, 20, uint32(1), uint8(0), uint32(0), uint64(0), uint64(0), uint32(1), "host"),
		p9test.Msg(msgTxattrwalk, 21, uint32(1), uint32(2), "user.x"),
		p9test.Msg(msgTxattrcreate, 22, uint32(1), "user.x", uint64(3), uint32(0)),
		p9test.Msg(msgTflush, 23, uint16(4)),
		p9test.Msg(msgTclunk, 24, uint32(1)),
		p9test.Msg(msgTremove, 25, uint32(1)),
		p9test.Msg(msgTauth, 26, uint32(5), "u", "a", uint32(0)),
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
		{"size too small", append(p9test.Msg(msgTclunk, 1, uint32(1)), 0), ErrSizeMismatch},
		{"size too large", p9test.Msg(msgTclunk, 1, uint32(1))[:10], ErrSizeMismatch},
		{"unknown type", p9test.Msg(1, 1), ErrUnknownType},
		{"Tgetlock", p9test.Msg(54, 1, uint32(1)), ErrUnknownType},
		{"an R-message", p9test.Msg(msgRversion, 1, uint32(1), ""), ErrUnknownType},
		{"NOTAG", p9test.Msg(msgTclunk, noTag, uint32(1)), ErrNoTag},
		{"missing fid", p9test.Msg(msgTclunk, 1), ErrMalformed},
		{"string length past the end", p9test.Msg(msgTwalk, 1, uint32(0), uint32(1), uint16(1), uint16(5), []byte("ab")), ErrMalformed},
		{"names past the end", p9test.Msg(msgTwalk, 1, uint32(0), uint32(1), uint16(3), "a"), ErrMalformed},
		{"write count over the data", p9test.Msg(msgTwrite, 1, uint32(1), uint64(0), uint32(4), []byte("abc")), ErrMalformed},
		{"write count under the data", p9test.Msg(msgTwrite, 1, uint32(1), uint64(0), uint32(2), []byte("abc")), ErrMalformed},
		{"setattr cut short", p9test.Msg(msgTsetattr, 1, uint32(1), uint32(1), uint32(0o644)), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRequest(tt.msg, MaxMessageSize, MaxMessageSize)
			assert.ErrorIs(t, err, tt.want)
		})
	}
	big := p9test.Msg(msgTwrite, 1, uint32(1), uint64(0), uint32(8192), make([]byte, 8192))
	_, err := ParseRequest(big, 8192, MaxMessageSize)
	assert.ErrorIs(t, err, ErrTooLarge)
}

func TestParseRequestLimits(t *testing.T) {
	r, err := ParseRequest(p9test.Msg(msgTversion, noTag, uint32(1<<30), "9P2000.L.Google.7"), MaxMessageSize, MaxMessageSize)
	require.NoError(t, err)
	assert.Equal(t, p9test.Msg(msgTversion, noTag, uint32(MaxMessageSize), "9P2000.L"), r.Msg, "msize capped, plain 9P2000.L")
	r, err = ParseRequest(p9test.Msg(msgTversion, noTag, uint32(8192), "9P2000.u"), MaxMessageSize, MaxMessageSize)
	require.NoError(t, err)
	assert.Equal(t, p9test.Msg(msgTversion, noTag, uint32(8192), "9P2000.u"), r.Msg, "left for the server to refuse")
	for _, typ := range []uint8{msgTread, msgTreaddir} {
		r, err = ParseRequest(p9test.Msg(typ, 1, uint32(1), uint64(0), uint32(1<<30)), 8192, MaxMessageSize)
		require.NoError(t, err)
		assert.Equal(t, uint32(8192-rreadHeader), binary.LittleEndian.Uint32(r.Msg[HeaderSize+12:]), "type %d: count fits msize", typ)
	}
}
