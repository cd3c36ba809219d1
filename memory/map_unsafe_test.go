package memory

import (
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
