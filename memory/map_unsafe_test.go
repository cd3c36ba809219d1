package memory

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMapRAMIsAlignedAndUsable(t *testing.T) {
	for _, size := range []uint64{4096, 3 << 20, 64 << 20} {
		data, unmap, err := MapRAM(size)
		require.NoError(t, err)
		assert.Len(t, data, int(size))
		assert.Zero(t, uintptr(unsafe.Pointer(&data[0]))%RAMAlign, "2 MiB aligned")
		data[0], data[size-1] = 1, 2
		assert.Equal(t, byte(2), data[size-1])
		require.NoError(t, unmap())
	}
}

func TestMapRAMRejectsBadSizes(t *testing.T) {
	for _, size := range []uint64{0, 100, 1<<47 + 4096} {
		_, _, err := MapRAM(size)
		assert.Error(t, err, "%d", size)
	}
}

func TestMapFileIsPrivateAndAligned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram")
	content := make([]byte, 3<<20)
	copy(content[4096:], "guest page")
	require.NoError(t, os.WriteFile(path, content, 0o600))
	f, err := os.Open(path)
	require.NoError(t, err)
	data, unmap, err := MapFile(f, 4096, 2<<20)
	require.NoError(t, f.Close(), "the mapping outlives the descriptor")
	require.NoError(t, err)
	assert.Zero(t, uintptr(unsafe.Pointer(&data[0]))%RAMAlign, "2 MiB aligned")
	assert.Equal(t, "guest page", string(data[:10]))
	copy(data, "written!!!") // copy-on-write: a read-only file takes it
	assert.Equal(t, "written!!!", string(data[:10]))
	require.NoError(t, unmap())
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, content, after, "guest writes never reach the file")
}

func TestMapFileRejectsUnalignedOffset(t *testing.T) {
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer f.Close()
	_, _, err = MapFile(f, 100, 4096)
	assert.Error(t, err)
}
