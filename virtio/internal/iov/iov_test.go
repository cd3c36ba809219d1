package iov

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

func pieces(sizes ...int) [][]byte {
	var iovs [][]byte
	for _, n := range sizes {
		iovs = append(iovs, make([]byte, n))
	}
	return iovs
}

func lens(iovs [][]byte) []int {
	out := []int{}
	for _, s := range iovs {
		out = append(out, len(s))
	}
	return out
}

func TestAdvanceAndLimit(t *testing.T) {
	tests := []struct {
		name    string
		sizes   []int
		advance int
		limit   int
		want    []int
	}{
		{"nothing", []int{4, 4}, 0, 8, []int{4, 4}},
		{"inside the first", []int{4, 4}, 1, 8, []int{3, 4}},
		{"a whole buffer", []int{4, 4}, 4, 8, []int{4}},
		{"across buffers", []int{4, 4, 4}, 6, 8, []int{2, 4}},
		{"everything", []int{4, 4}, 8, 8, []int{}},
		{"limited inside a buffer", []int{4, 4, 4}, 2, 5, []int{2, 3}},
		{"limited at a boundary", []int{4, 4, 4}, 0, 8, []int{4, 4}},
		{"limited to nothing", []int{4, 4}, 0, 0, []int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, lens(Limit(Advance(pieces(tt.sizes...), tt.advance), tt.limit)))
		})
	}
}

// TestAppend resolves buffers to guest memory, leaving out empty ones
// and refusing one outside it.
func TestAppend(t *testing.T) {
	ram := make([]byte, 4096)
	mem, err := memory.New(memory.Region{Base: 0x1000, Data: ram})
	require.NoError(t, err)
	iovs, total, err := Append(nil, mem, []queue.Buffer{{Addr: 0x1000, Len: 16}, {Addr: 0x1100, Len: 0}, {Addr: 0x1200, Len: 32}})
	require.NoError(t, err)
	assert.Equal(t, 48, total)
	assert.Equal(t, []int{16, 32}, lens(iovs))
	iovs[1][0] = 7
	assert.Equal(t, byte(7), ram[0x200], "a slice of guest memory, not a copy")
	_, _, err = Append(nil, mem, []queue.Buffer{{Addr: 0x1f00, Len: 512}})
	assert.ErrorIs(t, err, memory.ErrOutOfRange)
}

// TestTransferAt moves more iovecs than one call takes, and stops at the
// end of the file.
func TestTransferAt(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	require.NoError(t, err)
	defer f.Close()
	src := pieces(make([]int, Max+10)...)
	for i := range src {
		src[i] = []byte{byte(i), byte(i >> 8)}
	}
	n, err := TransferAt(unix.Pwritev, int(f.Fd()), src, 100)
	require.NoError(t, err)
	assert.Equal(t, 2*(Max+10), n)

	dst := make([]byte, 2*(Max+10)+50)
	n, err = TransferAt(unix.Preadv, int(f.Fd()), [][]byte{dst[:1000], dst[1000:]}, 100)
	require.NoError(t, err)
	assert.Equal(t, 2*(Max+10), n, "read up to the end of the file")
	assert.True(t, bytes.Equal(bytes.Join(src, nil), dst[:n]))
}
