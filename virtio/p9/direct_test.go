package p9

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/virtio/p9/p9test"
)

// TestRead: a Tread returns the file's bytes at its offset, whatever the
// layout of the answer's buffers, capped by the request and the room; a
// fid that cannot be read gets the server's error.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 10000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), data, 0o644))
	const room = 16 << 10
	r := newRig(t, dir, false, room, 16<<20)
	ok(t, r, p9test.Msg(msgTversion, noTag, uint32(room), dotL))
	ok(t, r, p9test.Msg(msgTattach, 1, uint32(1), uint32(noFid), "", "", uint32(0)))
	const readFid, writeFid, dirFid = 2, 3, 4
	ok(t, r, p9test.Msg(msgTwalk, 2, uint32(1), uint32(readFid), uint16(1), "f"))
	ok(t, r, p9test.Msg(msgTlopen, 3, uint32(readFid), uint32(unix.O_RDONLY)))
	ok(t, r, p9test.Msg(msgTwalk, 4, uint32(1), uint32(writeFid), uint16(1), "f"))
	ok(t, r, p9test.Msg(msgTlopen, 5, uint32(writeFid), uint32(unix.O_WRONLY)))
	ok(t, r, p9test.Msg(msgTwalk, 6, uint32(1), uint32(dirFid), uint16(0)))
	ok(t, r, p9test.Msg(msgTlopen, 7, uint32(dirFid), uint32(unix.O_RDONLY|unix.O_DIRECTORY)))

	tests := []struct {
		name  string
		fid   uint32
		off   uint64
		count uint32
		sizes []uint32
		want  []byte
		errno unix.Errno
	}{
		{"whole file, one buffer", readFid, 0, 10000, []uint32{room}, data, 0},
		{"header, then pages", readFid, 100, 5000, []uint32{rreadHeader, 4096, 4096}, data[100:5100], 0},
		{"capped by the buffers", readFid, 0, 9000, []uint32{rreadHeader, 4096}, data[:4096], 0},
		{"header and data in odd pieces", readFid, 3, 50, []uint32{5, 7, 20, 100}, data[3:53], 0},
		{"short at the end", readFid, 9990, 100, []uint32{room}, data[9990:], 0},
		{"past the end", readFid, 20000, 100, []uint32{room}, []byte{}, 0},
		{"room for the header only", readFid, 0, 100, []uint32{rreadHeader}, []byte{}, 0},
		{"offset past int64", readFid, 1 << 63, 10, []uint32{room}, nil, unix.EINVAL},
		{"write-only fid", writeFid, 0, 10, []uint32{room}, nil, unix.EPERM},
		{"folder", dirFid, 0, 10, []uint32{room}, nil, unix.EISDIR},
		{"unknown fid", 99, 0, 10, []uint32{room}, nil, unix.EBADF},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tag := uint16(100 + i)
			var resp []byte
			select {
			case resp = <-r.submitInto(p9test.Msg(msgTread, tag, tt.fid, tt.off, tt.count), tt.sizes...):
			case <-time.After(waitFor):
				t.Fatal("no answer")
			}
			require.GreaterOrEqual(t, len(resp), HeaderSize+4)
			assert.Equal(t, tag, binary.LittleEndian.Uint16(resp[5:]))
			if tt.errno != 0 {
				assert.Equal(t, unix.ErrnoName(tt.errno), unix.ErrnoName(unix.Errno(lerrno(resp))))
				return
			}
			require.Equal(t, byte(msgRread), resp[4], "errno %d", lerrno(resp))
			n := binary.LittleEndian.Uint32(resp[HeaderSize:])
			assert.Equal(t, uint32(len(resp)), binary.LittleEndian.Uint32(resp), "size")
			require.Equal(t, len(tt.want), int(n))
			assert.Equal(t, tt.want, resp[rreadHeader:])
		})
	}
}

// TestWrite: a Twrite lands in the file at its offset, or at its end for
// a fid opened O_APPEND; a fid that cannot be written gets the server's
// error.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(file, []byte("0123456789"), 0o644))
	r := newRig(t, dir, false, 4096, 16<<20)
	ok(t, r, p9test.Msg(msgTversion, noTag, uint32(8192), dotL))
	ok(t, r, p9test.Msg(msgTattach, 1, uint32(1), uint32(noFid), "", "", uint32(0)))
	const rwFid, appendFid, readFid = 2, 3, 4
	for i, o := range []struct {
		fid   uint32
		flags uint32
	}{{rwFid, unix.O_RDWR}, {appendFid, unix.O_WRONLY | unix.O_APPEND}, {readFid, unix.O_RDONLY}} {
		ok(t, r, p9test.Msg(msgTwalk, uint16(10+2*i), uint32(1), o.fid, uint16(1), "f"))
		ok(t, r, p9test.Msg(msgTlopen, uint16(11+2*i), o.fid, o.flags))
	}

	tests := []struct {
		name  string
		fid   uint32
		off   uint64
		data  string
		errno unix.Errno
		want  string // the file afterwards
	}{
		{"at an offset", rwFid, 2, "ab", 0, "01ab456789"},
		{"past the end", rwFid, 12, "cd", 0, "01ab456789\x00\x00cd"},
		{"appended whatever the offset", appendFid, 0, "ef", 0, "01ab456789\x00\x00cdef"},
		{"read-only fid", readFid, 0, "zz", unix.EPERM, "01ab456789\x00\x00cdef"},
		{"offset past int64", rwFid, 1 << 63, "zz", unix.EINVAL, "01ab456789\x00\x00cdef"},
		{"unknown fid", 99, 0, "zz", unix.EBADF, "01ab456789\x00\x00cdef"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tag := uint16(100 + i)
			resp := r.roundTrip(p9test.Msg(msgTwrite, tag, tt.fid, tt.off, uint32(len(tt.data)), []byte(tt.data)))
			require.GreaterOrEqual(t, len(resp), HeaderSize+4)
			assert.Equal(t, tag, binary.LittleEndian.Uint16(resp[5:]))
			if tt.errno != 0 {
				assert.Equal(t, unix.ErrnoName(tt.errno), unix.ErrnoName(unix.Errno(lerrno(resp))))
			} else {
				require.Equal(t, byte(msgRwrite), resp[4], "errno %d", lerrno(resp))
				assert.Equal(t, uint32(len(tt.data)), binary.LittleEndian.Uint32(resp[HeaderSize:]))
			}
			got, err := os.ReadFile(file)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
		})
	}
}
