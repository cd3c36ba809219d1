package boot

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/memory"
)

func TestDescriptorEncoding(t *testing.T) {
	tests := []struct {
		name string
		seg  Segment
		want uint64
	}{
		{"64-bit code", flatCode(Long64), 0x00af9b000000ffff},
		{"32-bit code", flatCode(Protected32), 0x00cf9b000000ffff},
		{"data", flatData(), 0x00cf93000000ffff},
		{"busy TSS", bootTSS(), 0x00008b0000000067},
		{"base, byte limit, DPL 3",
			Segment{Base: 0x12345678, Limit: 0xabcde, Type: 0x3, S: true, Present: true, DPL: 3},
			0x120af3345678bcde},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.seg.descriptor(), "%#016x", tt.seg.descriptor())
		})
	}
}

func TestGDTInMemory(t *testing.T) {
	for _, mode := range []Mode{Long64, Protected32} {
		t.Run(mode.String(), func(t *testing.T) {
			mem := newTestMemory(t, 1<<20)
			e, err := newEntry(mem, mode)
			require.NoError(t, err)
			assert.Equal(t, Table{Base: GDTAddr, Limit: gdtSize - 1}, e.GDT)
			assert.Equal(t, mode, e.Mode)
			for _, sel := range []uint16{0, 8} {
				v, err := mem.Uint64(memory.GuestAddress(GDTAddr + uint64(sel)))
				require.NoError(t, err)
				assert.Zero(t, v, "null descriptor %#x", sel)
			}
			for _, s := range []Segment{e.CS, e.DS, e.ES, e.FS, e.GS, e.SS, e.TR} {
				require.Less(t, int(s.Selector)+8, gdtSize+1, "selector %#x inside the GDT", s.Selector)
				v, err := mem.Uint64(memory.GuestAddress(GDTAddr + uint64(s.Selector)))
				require.NoError(t, err)
				assert.Equal(t, s.descriptor(), v, "selector %#x", s.Selector)
			}
			hi, err := mem.Uint64(GDTAddr + tssSelector + 8)
			require.NoError(t, err)
			assert.Zero(t, hi, "TSS base bits 63:32")
		})
	}
}

func TestModeString(t *testing.T) {
	assert.Equal(t, "long64", Long64.String())
	assert.Equal(t, "protected32", Protected32.String())
	assert.Equal(t, "Mode(0)", Mode(0).String())
}

// walk translates a virtual address through 4-level paging the way the
// CPU does for the entries this loader writes (2 MiB leaves).
func walk(t *testing.T, mem *memory.Memory, cr3, va uint64) (uint64, bool) {
	const addrMask = 0x000ffffffffff000
	table := cr3 & addrMask
	for level, shift := range []uint{39, 30, 21} {
		pte, err := mem.Uint64(memory.GuestAddress(table + (va>>shift&0x1ff)*8))
		require.NoError(t, err)
		if pte&ptePresent == 0 {
			return 0, false
		}
		if level == 2 {
			if pte&ptePageSize == 0 {
				return 0, false
			}
			return pte&addrMask&^(1<<21-1) | va&(1<<21-1), true
		}
		require.Zero(t, pte&ptePageSize, "no huge pages above the PD level")
		table = pte & addrMask
	}
	panic("unreachable")
}

func TestPageTablesIdentityMap(t *testing.T) {
	mem := newTestMemory(t, 1<<20)
	// Stale entries must not survive: the loader writes whole pages.
	junk := make([]byte, PDAddr+numPD*pageSize-PML4Addr)
	for i := range junk {
		junk[i] = 0xff
	}
	require.NoError(t, mem.WriteAt(junk, PML4Addr))
	require.NoError(t, writePageTables(mem))

	for page := uint64(0); page < 1<<32; page += 1 << 21 {
		va := page + (page>>21)%(1<<21) // a different offset in each page
		pa, ok := walk(t, mem, PML4Addr, va)
		require.True(t, ok, "%#x not mapped", va)
		require.Equal(t, va, pa)
	}
	_, ok := walk(t, mem, PML4Addr, 1<<32)
	assert.False(t, ok, "4 GiB and above are not mapped")
	_, ok = walk(t, mem, PML4Addr, 1<<39)
	assert.False(t, ok, "second PML4 entry is empty")
}
