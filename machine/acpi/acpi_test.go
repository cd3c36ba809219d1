package acpi

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/machine/acpi/aml"
	"github.com/gvmm-dev/gvmm/memory"
)

var le = binary.LittleEndian

func baseConfig(cpus int) Config {
	return Config{
		CPUs:       cpus,
		LAPICAddr:  0xfee00000,
		IOAPICAddr: 0xfec00000,
		PM:         PMConfig{Port: 0x600, SCI: 9},
		Reset:      &ResetRegister{Port: 0x64, Value: 0xfe},
		Serial:     []SerialPort{{Port: 0x3f8, IRQ: 4}},
	}
}

// guest is the built blob as seen from guest physical addresses.
type guest struct {
	t    *testing.T
	base memory.GuestAddress
	blob []byte
}

func (g guest) at(addr uint64, n int) []byte {
	g.t.Helper()
	off := addr - uint64(g.base)
	require.True(g.t, addr >= uint64(g.base) && off+uint64(n) <= uint64(len(g.blob)),
		"[%#x, +%d) outside the tables", addr, n)
	return g.blob[off : off+uint64(n)]
}

// sdt returns the table at addr after checking its signature, that its
// length fits, and that its bytes sum to zero.
func (g guest) sdt(addr uint64, sig string) []byte {
	g.t.Helper()
	hdr := g.at(addr, headerLen)
	require.Equal(g.t, sig, string(hdr[:4]))
	t := g.at(addr, int(le.Uint32(hdr[4:])))
	assert.Zero(g.t, sum(t), "%s checksum", sig)
	assert.Equal(g.t, "GVMM  ", string(t[10:16]), "%s OEM ID", sig)
	return t
}

func sum(b []byte) byte {
	var s byte
	for _, v := range b {
		s += v
	}
	return s
}

type tables struct {
	rsdp, xsdt, fadt, facs, dsdt, madt, mcfg []byte
	facsAddr                                 uint64
}

// walk follows the pointers from the RSDP as Linux does.
func walk(t *testing.T, cfg Config) tables {
	t.Helper()
	blob, rsdpAddr, err := Build(cfg, RegionBase, RegionSize)
	require.NoError(t, err)
	require.Equal(t, RegionBase, rsdpAddr)
	g := guest{t: t, base: RegionBase, blob: blob}
	var ts tables
	ts.rsdp = g.at(uint64(rsdpAddr), 36)
	ts.xsdt = g.sdt(le.Uint64(ts.rsdp[24:]), "XSDT")
	for i := 36; i < len(ts.xsdt); i += 8 {
		addr := le.Uint64(ts.xsdt[i:])
		switch sig := string(g.at(addr, 4)); sig {
		case "FACP":
			ts.fadt = g.sdt(addr, sig)
		case "APIC":
			ts.madt = g.sdt(addr, sig)
		case "MCFG":
			ts.mcfg = g.sdt(addr, sig)
		default:
			t.Fatalf("unexpected table %q in the XSDT", sig)
		}
	}
	require.NotNil(t, ts.fadt)
	require.NotNil(t, ts.madt)
	ts.dsdt = g.sdt(le.Uint64(ts.fadt[140:]), "DSDT")
	ts.facsAddr = le.Uint64(ts.fadt[132:])
	ts.facs = g.at(ts.facsAddr, 64)
	return ts
}

func TestRSDP(t *testing.T) {
	ts := walk(t, baseConfig(1))
	r := ts.rsdp
	assert.Equal(t, "RSD PTR ", string(r[:8]))
	assert.Zero(t, sum(r[:20]), "ACPI 1.0 checksum")
	assert.Zero(t, sum(r), "extended checksum")
	assert.Equal(t, byte(2), r[15], "revision")
	assert.Equal(t, uint32(36), le.Uint32(r[20:]), "length")
	assert.Zero(t, le.Uint32(r[16:]), "no RSDT")
	assert.Zero(t, uint64(RegionBase)%16, "RSDP on a 16-byte boundary Linux scans")
}

func TestXSDTAndFACS(t *testing.T) {
	for _, withMCFG := range []bool{false, true} {
		t.Run(fmt.Sprint("MCFG=", withMCFG), func(t *testing.T) {
			cfg := baseConfig(2)
			want := 2
			if withMCFG {
				cfg.MCFG = &MCFGConfig{Base: 0xb0000000, EndBus: 0xff}
				want = 3
			}
			ts := walk(t, cfg)
			assert.Len(t, ts.xsdt, 36+8*want)
			assert.Equal(t, withMCFG, ts.mcfg != nil)

			assert.Equal(t, "FACS", string(ts.facs[:4]))
			assert.Equal(t, uint32(64), le.Uint32(ts.facs[4:]))
			assert.Equal(t, byte(2), ts.facs[32], "version")
			assert.Zero(t, ts.facsAddr%64, "FACS must be 64-byte aligned")
		})
	}
}

// Offsets are those of ACPI 6.5 table 5.9, written out independently of
// the constants the builder uses.
func TestFADTFields(t *testing.T) {
	ts := walk(t, baseConfig(1))
	f := ts.fadt
	require.Len(t, f, 276)
	assert.Equal(t, byte(6), f[8], "revision")
	assert.Equal(t, byte(3), f[131], "minor version")

	u8 := func(off int) uint64 { return uint64(f[off]) }
	u16 := func(off int) uint64 { return uint64(le.Uint16(f[off:])) }
	u32 := func(off int) uint64 { return uint64(le.Uint32(f[off:])) }
	u64 := func(off int) uint64 { return le.Uint64(f[off:]) }
	tests := []struct {
		field string
		got   uint64
		want  uint64
	}{
		{"FIRMWARE_CTRL = X_FIRMWARE_CTRL", u32(36), u64(132)},
		{"DSDT = X_DSDT", u32(40), u64(140)},
		{"SCI_INT", u16(46), 9},
		{"SMI_CMD (always ACPI mode)", u32(48), 0},
		{"PM1a_EVT_BLK", u32(56), 0x600},
		{"PM1b_EVT_BLK", u32(60), 0},
		{"PM1a_CNT_BLK", u32(64), 0x604},
		{"PM_TMR_BLK", u32(76), 0},
		{"GPE0_BLK", u32(80), 0},
		{"PM1_EVT_LEN", u8(88), 4},
		{"PM1_CNT_LEN", u8(89), 2},
		{"PM_TMR_LEN", u8(91), 0},
		{"P_LVL2_LAT", u16(96), 0xfff},
		{"P_LVL3_LAT", u16(98), 0xfff},
		{"IAPC_BOOT_ARCH legacy|8042|no VGA", u16(109), 0x7},
		{"Flags", u32(112), 1<<0 | 1<<2 | 1<<5 | 1<<6 | 1<<10},
		{"RESET_REG space (SystemIO)", u8(116), 1},
		{"RESET_REG bit width", u8(117), 8},
		{"RESET_REG bit offset", u8(118), 0},
		{"RESET_REG access (byte)", u8(119), 1},
		{"RESET_REG address", u64(120), 0x64},
		{"RESET_VALUE", u8(128), 0xfe},
		{"X_PM1a_EVT_BLK space", u8(148), 1},
		{"X_PM1a_EVT_BLK bit width", u8(149), 32},
		{"X_PM1a_EVT_BLK access (word)", u8(151), 2},
		{"X_PM1a_EVT_BLK address", u64(152), 0x600},
		{"X_PM1b_EVT_BLK address", u64(164), 0},
		{"X_PM1a_CNT_BLK space", u8(172), 1},
		{"X_PM1a_CNT_BLK bit width", u8(173), 16},
		{"X_PM1a_CNT_BLK access (word)", u8(175), 2},
		{"X_PM1a_CNT_BLK address", u64(176), 0x604},
		{"X_PM_TMR_BLK address", u64(212), 0},
		{"SLEEP_CONTROL_REG (full hardware uses PM1)", u64(248), 0},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.got, tt.field)
	}
	assert.Zero(t, u32(112)&(1<<4), "PWR_BUTTON clear: fixed-feature power button")
	assert.Zero(t, u32(112)&(1<<20), "not HW_REDUCED_ACPI")
	assert.NotZero(t, u64(140))
	assert.NotZero(t, u64(132))
}

func TestFADTWithoutReset(t *testing.T) {
	cfg := baseConfig(1)
	cfg.Reset = nil
	f := walk(t, cfg).fadt
	assert.Zero(t, le.Uint32(f[112:])&(1<<10), "RESET_REG_SUP")
	assert.Equal(t, make([]byte, 13), f[116:129], "RESET_REG and RESET_VALUE")
}

type madtEntry struct {
	typ  byte
	data []byte // including type and length
}

func parseMADT(t *testing.T, madt []byte) []madtEntry {
	t.Helper()
	var es []madtEntry
	for off := 44; off < len(madt); {
		require.LessOrEqual(t, off+2, len(madt))
		n := int(madt[off+1])
		require.GreaterOrEqual(t, n, 2)
		require.LessOrEqual(t, off+n, len(madt))
		es = append(es, madtEntry{typ: madt[off], data: madt[off : off+n]})
		off += n
	}
	return es
}

func TestMADT(t *testing.T) {
	for _, cpus := range []int{1, 2, 4, 64, MaxCPUs} {
		t.Run(fmt.Sprint(cpus, " CPUs"), func(t *testing.T) {
			m := walk(t, baseConfig(cpus)).madt
			assert.Equal(t, byte(5), m[8], "revision")
			assert.Equal(t, uint32(0xfee00000), le.Uint32(m[36:]))
			assert.Equal(t, uint32(1), le.Uint32(m[40:]), "PCAT_COMPAT")
			assert.Len(t, m, 44+8*cpus+12+2*10+6)

			count := map[byte]int{}
			var overrides [][]byte
			for _, e := range parseMADT(t, m) {
				i := count[e.typ]
				count[e.typ]++
				switch e.typ {
				case 0:
					require.Len(t, e.data, 8)
					assert.Equal(t, byte(i), e.data[2], "processor UID")
					assert.Equal(t, byte(i), e.data[3], "APIC ID")
					assert.Equal(t, uint32(1), le.Uint32(e.data[4:]), "enabled")
				case 1:
					require.Len(t, e.data, 12)
					assert.Equal(t, byte(0), e.data[2], "I/O APIC ID")
					assert.Equal(t, uint32(0xfec00000), le.Uint32(e.data[4:]))
					assert.Zero(t, le.Uint32(e.data[8:]), "GSI base")
				case 2:
					require.Len(t, e.data, 10)
					overrides = append(overrides, e.data)
				case 4:
					assert.Equal(t, []byte{4, 6, 0xff, 0, 0, 1}, e.data, "NMI on LINT1 of all processors")
				}
			}
			assert.Equal(t, map[byte]int{0: cpus, 1: 1, 2: 2, 4: 1}, count)
			assert.Equal(t, [][]byte{
				{2, 10, 0, 0, 2, 0, 0, 0, 0x00, 0}, // IRQ0 -> GSI2, ISA conforming (edge, high)
				{2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0}, // SCI: IRQ9 -> GSI9, level, active high
			}, overrides)
		})
	}
}

func TestMCFG(t *testing.T) {
	cfg := baseConfig(1)
	cfg.MCFG = &MCFGConfig{Base: 0xe0000000, StartBus: 0, EndBus: 0x3f}
	m := walk(t, cfg).mcfg
	require.Len(t, m, 60)
	assert.Equal(t, byte(1), m[8], "revision")
	assert.Equal(t, make([]byte, 8), m[36:44], "reserved")
	assert.Equal(t, uint64(0xe0000000), le.Uint64(m[44:]))
	assert.Zero(t, le.Uint16(m[52:]), "segment")
	assert.Equal(t, []byte{0, 0x3f}, m[54:56], "bus range")
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err)
	return b
}

func TestDSDT(t *testing.T) {
	const (
		s5   = "08 5c5f53355f 12 08 04 0a05 0a05 00 00" // Name(\_S5, Package(){5, 5, 0, 0})
		com1 = "5b82 2b 434f4d31 085f4849440c41d00501 085f55494401 085f435253 11 10 0a0d 4701f803f8030108 221000 7900"
	)
	t.Run("serial only", func(t *testing.T) {
		d := walk(t, baseConfig(1)).dsdt
		assert.Equal(t, byte(2), d[8], "revision: 64-bit integers")
		// Scope(\_SB): 5 bytes of name + 45 of COM1, +1 for the PkgLength.
		assert.Equal(t, unhex(t, s5+"10 33 5c5f53425f"+com1), d[36:])
	})
	t.Run("devices hook", func(t *testing.T) {
		cfg := baseConfig(1)
		cfg.Serial = nil
		cfg.Devices = []aml.Term{aml.Device("PCI0", aml.Name("_HID", aml.EISAID("PNP0A08")))}
		d := walk(t, cfg).dsdt
		pci0 := "5b82 0f 50434930 085f4849440c41d00a08"
		assert.Equal(t, unhex(t, s5+"10 17 5c5f53425f"+pci0), d[36:])
	})
	t.Run("COM2 and COM3 names", func(t *testing.T) {
		cfg := baseConfig(1)
		cfg.Serial = []SerialPort{{0x3f8, 4}, {0x2f8, 3}, {0x3e8, 4}}
		d := walk(t, cfg).dsdt
		for _, want := range []string{"COM1", "COM2", "COM3"} {
			assert.Contains(t, string(d), want)
		}
	})
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		base   memory.GuestAddress
		size   uint64
		want   error
	}{
		{"no CPUs", func(c *Config) { c.CPUs = 0 }, RegionBase, RegionSize, ErrInvalidConfig},
		{"256 CPUs", func(c *Config) { c.CPUs = 256 }, RegionBase, RegionSize, ErrInvalidConfig},
		{"no LAPIC", func(c *Config) { c.LAPICAddr = 0 }, RegionBase, RegionSize, ErrInvalidConfig},
		{"no IOAPIC", func(c *Config) { c.IOAPICAddr = 0 }, RegionBase, RegionSize, ErrInvalidConfig},
		{"PM port 0", func(c *Config) { c.PM.Port = 0 }, RegionBase, RegionSize, ErrInvalidConfig},
		{"PM block past 0xffff", func(c *Config) { c.PM.Port = 0xfffc }, RegionBase, RegionSize, ErrInvalidConfig},
		{"SCI 0", func(c *Config) { c.PM.SCI = 0 }, RegionBase, RegionSize, ErrInvalidConfig},
		{"SCI 2", func(c *Config) { c.PM.SCI = 2 }, RegionBase, RegionSize, ErrInvalidConfig},
		{"SCI 16", func(c *Config) { c.PM.SCI = 16 }, RegionBase, RegionSize, ErrInvalidConfig},
		{"5 serial ports", func(c *Config) { c.Serial = make([]SerialPort, 5) }, RegionBase, RegionSize, ErrInvalidConfig},
		{"serial IRQ 16", func(c *Config) { c.Serial[0].IRQ = 16 }, RegionBase, RegionSize, ErrInvalidConfig},
		{"serial port 0", func(c *Config) { c.Serial[0].Port = 0 }, RegionBase, RegionSize, ErrInvalidConfig},
		{"MCFG unaligned", func(c *Config) { c.MCFG = &MCFGConfig{Base: 0xb0001000, EndBus: 1} }, RegionBase, RegionSize, ErrInvalidConfig},
		{"MCFG bus range", func(c *Config) { c.MCFG = &MCFGConfig{Base: 0xb0000000, StartBus: 2, EndBus: 1} }, RegionBase, RegionSize, ErrInvalidConfig},
		{"MCFG overflow", func(c *Config) { c.MCFG = &MCFGConfig{Base: 0xfffffffffff00000, EndBus: 1} }, RegionBase, RegionSize, ErrInvalidConfig},
		{"base unaligned", func(*Config) {}, RegionBase + 8, RegionSize, ErrInvalidConfig},
		{"region above 4 GiB", func(*Config) {}, 0xfffff000, 0x2000, ErrInvalidConfig},
		{"region too small", func(*Config) {}, RegionBase, 256, ErrNoSpace},
		{"255 CPUs in 1 KiB", func(c *Config) { c.CPUs = MaxCPUs }, RegionBase, 1024, ErrNoSpace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig(1)
			tt.mutate(&cfg)
			_, _, err := Build(cfg, tt.base, tt.size)
			require.ErrorIs(t, err, tt.want)
			var ce *ConfigError
			var se *SpaceError
			assert.True(t, errors.As(err, &ce) || errors.As(err, &se), "typed error: %v", err)
		})
	}

	t.Run("bad AML in a device", func(t *testing.T) {
		cfg := baseConfig(1)
		cfg.Devices = []aml.Term{aml.Device("pci0")}
		_, _, err := Build(cfg, RegionBase, RegionSize)
		var ee *aml.EncodeError
		assert.ErrorAs(t, err, &ee)
	})
}

// The tables for the largest machine still fit with room to spare.
func TestLargestFits(t *testing.T) {
	cfg := baseConfig(MaxCPUs)
	cfg.Serial = make([]SerialPort, MaxSerial)
	for i := range cfg.Serial {
		cfg.Serial[i] = SerialPort{Port: 0x3f8, IRQ: 4}
	}
	cfg.MCFG = &MCFGConfig{Base: 0xb0000000, EndBus: 0xff}
	blob, _, err := Build(cfg, RegionBase, RegionSize)
	require.NoError(t, err)
	assert.Less(t, len(blob), 4096)
}

func TestDeterministic(t *testing.T) {
	a, _, err := Build(baseConfig(4), RegionBase, RegionSize)
	require.NoError(t, err)
	b, _, err := Build(baseConfig(4), RegionBase, RegionSize)
	require.NoError(t, err)
	assert.Equal(t, a, b)
}

func TestChecksum(t *testing.T) {
	for _, b := range [][]byte{nil, {0}, {1}, {0xff, 0x02}, []byte("RSD PTR ")} {
		assert.Zero(t, sum(append(append([]byte(nil), b...), checksum(b))), "%x", b)
	}
}
