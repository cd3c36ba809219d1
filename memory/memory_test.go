package memory

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewRejectsBadRegions(t *testing.T) {
	tests := []struct {
		name    string
		regions []Region
	}{
		{"empty region", []Region{{Base: 0, Data: nil}}},
		{"overlap", []Region{{Base: 0, Data: make([]byte, 0x2000)}, {Base: 0x1000, Data: make([]byte, 0x1000)}}},
		{"wraps", []Region{{Base: ^GuestAddress(0) - 10, Data: make([]byte, 0x100)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.regions...)
			assert.Error(t, err)
		})
	}
}

func TestAccess(t *testing.T) {
	low := make([]byte, 0x1000)
	high := make([]byte, 0x1000)
	m, err := New(Region{Base: 0x10000, Data: high}, Region{Base: 0, Data: low})
	require.NoError(t, err)
	assert.Equal(t, uint64(0x2000), m.Size())

	tests := []struct {
		name string
		addr GuestAddress
		n    uint64
		ok   bool
	}{
		{"start of low", 0, 8, true},
		{"end of low", 0xff8, 8, true},
		{"straddles low end", 0xffc, 8, false},
		{"in the gap", 0x2000, 1, false},
		{"high region", 0x10000, 0x1000, true},
		{"past the end", 0x11000, 1, false},
		{"huge length", 0x10, ^uint64(0), false},
		{"max address", ^GuestAddress(0), 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := m.Slice(tt.addr, tt.n)
			if !tt.ok {
				assert.ErrorIs(t, err, ErrOutOfRange)
				return
			}
			require.NoError(t, err)
			assert.Len(t, s, int(tt.n))
		})
	}

	require.NoError(t, m.PutUint32(0x10004, 0xdeadbeef))
	v, err := m.Uint32(0x10004)
	require.NoError(t, err)
	assert.Equal(t, uint32(0xdeadbeef), v)
	assert.Equal(t, byte(0xef), high[4])
	_, err = m.Uint64(0xffc)
	assert.ErrorIs(t, err, ErrOutOfRange)
}
