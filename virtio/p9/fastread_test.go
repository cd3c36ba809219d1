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
