package mptable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/boot"
	"github.com/gvmm-dev/gvmm/machine/acpi"
	"github.com/gvmm-dev/gvmm/memory"
)

var le = binary.LittleEndian

func baseConfig(cpus int) Config {
	return Config{CPUs: cpus, LAPICAddr: 0xfee00000, IOAPICAddr: 0xfec00000, SCI: 9}
}

func sum(b []byte) byte {
	var s byte
	for _, v := range b {
		s += v
	}
	return s
}

// Entry types and sizes from MP Spec 1.4 table 4-3, written out
// independently of the builder's constants.
var entrySize = map[byte]int{0: 20, 1: 8, 2: 8, 3: 8, 4: 8}

type table struct {
	mpf, mpc []byte
	entries  map[byte][][]byte // by entry type, in table order
}

// parse finds the table in guest memory as Linux does: the floating
// pointer at the EBDA, then the configuration table it points to.
func parse(t *testing.T, mem *memory.Memory) table {
	t.Helper()
	mpf := make([]byte, 16)
	require.NoError(t, mem.ReadAt(mpf, boot.EBDAStart))
	require.Equal(t, "_MP_", string(mpf[:4]))
	require.Equal(t, byte(1), mpf[8], "length in paragraphs")
	hdr := make([]byte, 44)
	ptr := memory.GuestAddress(le.Uint32(mpf[4:]))
	require.NoError(t, mem.ReadAt(hdr, ptr))
	require.Equal(t, "PCMP", string(hdr[:4]))
	mpc := make([]byte, le.Uint16(hdr[4:]))
	require.NoError(t, mem.ReadAt(mpc, ptr))

	tb := table{mpf: mpf, mpc: mpc, entries: map[byte][][]byte{}}
	last := byte(0)
	for off := 44; off < len(mpc); {
		typ := mpc[off]
		n, ok := entrySize[typ]
		require.True(t, ok, "entry type %d at offset %d", typ, off)
		require.LessOrEqual(t, off+n, len(mpc), "entry at %d runs past the table", off)
		require.GreaterOrEqual(t, typ, last, "entries must be sorted by type")
		last = typ
		tb.entries[typ] = append(tb.entries[typ], mpc[off:off+n])
		off += n
	}
	return tb
}

func write(t *testing.T, cfg Config) table {
	t.Helper()
	mem, err := memory.New(memory.Region{Base: 0, Data: make([]byte, 1<<20)})
	require.NoError(t, err)
	require.NoError(t, Write(mem, cfg))
	return parse(t, mem)
}

func TestTable(t *testing.T) {
	for _, cpus := range []int{1, 2, MaxCPUs} {
		t.Run(fmt.Sprint(cpus, " CPUs"), func(t *testing.T) {
			tb := write(t, baseConfig(cpus))

			f := tb.mpf
			assert.Zero(t, sum(f), "floating pointer checksum")
			assert.Equal(t, byte(4), f[9], "spec revision")
			assert.Equal(t, uint32(boot.EBDAStart+16), le.Uint32(f[4:]), "config table follows")
			assert.Equal(t, make([]byte, 5), f[11:16], "feature bytes: table present, virtual wire")

			c := tb.mpc
			assert.Zero(t, sum(c), "config table checksum")
			assert.Equal(t, byte(4), c[6], "spec revision")
			assert.Equal(t, "GVMM    ", string(c[8:16]), "OEM ID")
			assert.Equal(t, uint32(0xfee00000), le.Uint32(c[36:]), "LAPIC address")
			assert.Zero(t, le.Uint16(c[40:]), "extended table length")
			assert.Zero(t, le.Uint32(c[28:]), "no OEM table")
			wantEntries := cpus + 1 + 1 + 15 + 2
			assert.Equal(t, uint16(wantEntries), le.Uint16(c[34:]), "entry count")
			assert.Len(t, c, 44+20*cpus+8*(wantEntries-cpus))
			assert.Equal(t, Size(cpus), uint64(16+len(c)))

			procs := tb.entries[0]
			require.Len(t, procs, cpus)
			for i, p := range procs {
				assert.Equal(t, byte(i), p[1], "APIC ID")
				assert.Equal(t, byte(0x14), p[2], "APIC version")
				assert.Equal(t, byte(1), p[3]&1, "CPU %d enabled", i)
				assert.Equal(t, i == 0, p[3]&2 != 0, "BSP flag on CPU %d", i)
			}

			require.Len(t, tb.entries[1], 1)
			assert.Equal(t, []byte{1, 0, 'I', 'S', 'A', ' ', ' ', ' '}, tb.entries[1][0])

			require.Len(t, tb.entries[2], 1)
			io := tb.entries[2][0]
			ioapicID := byte(cpus)
			assert.Equal(t, []byte{2, ioapicID, 0x11, 1}, io[:4])
			assert.Equal(t, uint32(0xfec00000), le.Uint32(io[4:]))
		})
	}
}

// The routing must match the MADT and the machine's GSI table: IRQ 0 on
// pin 2 (no source for the cascade IRQ 2), the SCI level/active high,
// every other ISA IRQ conforming on its own pin.
func TestInterrupts(t *testing.T) {
	tb := write(t, baseConfig(4))
	const ioapicID = 4
	pins := map[byte]byte{}
	for _, e := range tb.entries[3] {
		irq := e[5]
		assert.Equal(t, byte(0), e[1], "IRQ %d type INT", irq)
		assert.Equal(t, byte(0), e[4], "IRQ %d on the ISA bus", irq)
		assert.Equal(t, byte(ioapicID), e[6], "IRQ %d destination I/O APIC", irq)
		flags := le.Uint16(e[2:])
		if irq == 9 {
			assert.Equal(t, uint16(0x0d), flags, "SCI level, active high")
		} else {
			assert.Zero(t, flags, "IRQ %d conforms to ISA", irq)
		}
		_, dup := pins[irq]
		assert.False(t, dup, "IRQ %d twice", irq)
		pins[irq] = e[7]
	}
	want := map[byte]byte{0: 2}
	for irq := byte(1); irq < 16; irq++ {
		if irq != 2 {
			want[irq] = irq
		}
	}
	assert.Equal(t, want, pins)

	require.Len(t, tb.entries[4], 2)
	assert.Equal(t, []byte{4, 3, 0, 0, 0, 0, 0, 0}, tb.entries[4][0], "ExtINT to the BSP's LINT0")
	assert.Equal(t, []byte{4, 1, 0, 0, 0, 0, 0xff, 1}, tb.entries[4][1], "NMI to every LINT1")
}

func TestNoSCI(t *testing.T) {
	cfg := baseConfig(1)
	cfg.SCI = 0
	for _, e := range write(t, cfg).entries[3] {
		assert.Zero(t, le.Uint16(e[2:]), "IRQ %d", e[5])
	}
}

// The region lies in what e820 reserves, below the ACPI tables, and the
// largest table fits it.
func TestRegion(t *testing.T) {
	assert.Equal(t, memory.GuestAddress(boot.EBDAStart), RegionBase)
	assert.LessOrEqual(t, uint64(RegionBase)+RegionSize, uint64(acpi.RegionBase))
	assert.Less(t, uint64(RegionBase)+RegionSize, uint64(boot.HighMemStart))
	assert.LessOrEqual(t, Size(MaxCPUs), RegionSize)
	b, err := Build(baseConfig(MaxCPUs))
	require.NoError(t, err)
	assert.Len(t, b, int(Size(MaxCPUs)))
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no CPUs", func(c *Config) { c.CPUs = 0 }, "CPUs"},
		{"too many CPUs", func(c *Config) { c.CPUs = MaxCPUs + 1 }, "CPUs"},
		{"negative CPUs", func(c *Config) { c.CPUs = -1 }, "CPUs"},
		{"no LAPIC", func(c *Config) { c.LAPICAddr = 0 }, "LAPICAddr"},
		{"no IOAPIC", func(c *Config) { c.IOAPICAddr = 0 }, "IOAPICAddr"},
		{"SCI on the cascade", func(c *Config) { c.SCI = 2 }, "SCI"},
		{"SCI not ISA", func(c *Config) { c.SCI = 16 }, "SCI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig(2)
			tt.edit(&cfg)
			_, err := Build(cfg)
			require.ErrorIs(t, err, ErrInvalidConfig)
			var ce *ConfigError
			require.True(t, errors.As(err, &ce))
			assert.Equal(t, tt.field, ce.Field)

			mem, err := memory.New(memory.Region{Base: 0, Data: make([]byte, 1<<20)})
			require.NoError(t, err)
			assert.ErrorIs(t, Write(mem, cfg), ErrInvalidConfig)
		})
	}
}

func TestWriteOutsideMemory(t *testing.T) {
	cfg := baseConfig(8)
	need := Size(cfg.CPUs)
	tests := []struct {
		name    string
		regions []memory.Region
	}{
		{"below the EBDA", []memory.Region{{Base: 0, Data: make([]byte, boot.EBDAStart)}}},
		{"one byte short", []memory.Region{{Base: 0, Data: make([]byte, uint64(boot.EBDAStart)+need-1)}}},
		{"split across regions", []memory.Region{
			{Base: 0, Data: make([]byte, boot.EBDAStart+32)},
			{Base: boot.EBDAStart + 32, Data: make([]byte, 1<<16)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem, err := memory.New(tt.regions...)
			require.NoError(t, err)
			err = Write(mem, cfg)
			require.ErrorIs(t, err, memory.ErrOutOfRange)
			var ae *memory.AccessError
			require.True(t, errors.As(err, &ae))
			assert.Equal(t, RegionBase, ae.Addr)
			// Nothing was written: the access is checked before copying.
			for _, r := range mem.Regions() {
				assert.Equal(t, len(r.Data), bytes.Count(r.Data, []byte{0}), "region at %#x", uint64(r.Base))
			}
		})
	}

	mem, err := memory.New(memory.Region{Base: 0, Data: make([]byte, uint64(boot.EBDAStart)+need)})
	require.NoError(t, err)
	require.NoError(t, Write(mem, cfg), "exactly enough memory")
}

func TestDeterministic(t *testing.T) {
	a, err := Build(baseConfig(3))
	require.NoError(t, err)
	b, err := Build(baseConfig(3))
	require.NoError(t, err)
	assert.Equal(t, a, b)
}
