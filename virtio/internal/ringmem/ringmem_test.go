package ringmem

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/memory"
)

func TestWindowAndAccess(t *testing.T) {
	data := make([]byte, 64)
	mem, err := memory.New(memory.Region{Base: 0x1000, Data: data})
	require.NoError(t, err)

	b, off, err := Window(mem, 0x1006, 6)
	require.NoError(t, err)
	assert.Equal(t, 2, off)
	assert.Len(t, b, 8, "widened to [0x1004, 0x100c)")

	copy(data[4:12], []byte{1, 2, 3, 4, 5, 6, 7, 8})
	assert.Equal(t, uint16(0x0403), Load16(b, off))
	assert.Equal(t, uint16(0x0605), Load16(b, off+2))
	Store16(b, off, 0xbeef)
	assert.Equal(t, []byte{1, 2, 0xef, 0xbe, 5, 6, 7, 8}, data[4:12], "neighbours kept")
	Store16(b, off+2, 0x1234)
	assert.Equal(t, []byte{1, 2, 0xef, 0xbe, 0x34, 0x12, 7, 8}, data[4:12])

	tests := []struct {
		name string
		addr memory.GuestAddress
		n    uint64
	}{
		{"widening leaves memory", 0x103e, 4},
		{"before memory", 0xffe, 4},
		{"wraps", ^memory.GuestAddress(0) - 1, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Window(mem, tt.addr, tt.n)
			assert.ErrorIs(t, err, memory.ErrOutOfRange)
		})
	}
	odd, err := memory.New(memory.Region{Base: 0, Data: make([]byte, 65)[1:]})
	require.NoError(t, err)
	_, _, err = Window(odd, 0, 4)
	assert.ErrorContains(t, err, "not 4-byte aligned in host memory")
}
