package pci

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
)

var (
	_ devices.Device = portIO{}
	_ devices.Device = ecam{}
	_ devices.Device = mmio{}
	_ Device         = hostBridge{}
	_ Device         = (*testDevice)(nil)
)

// testDevice is an endpoint whose BARs are plain memory.
type testDevice struct {
	cs   *ConfigSpace
	mu   sync.Mutex
	bars [NumBARs][]byte
}

func newTestDevice(t testing.TB, bars [NumBARs]BAR, caps ...Capability) *testDevice {
	t.Helper()
	cs, err := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1042, Revision: 1, Class: 0x018000,
		SubsystemVendorID: 0x1af4, SubsystemID: 0x1100, InterruptPin: 1, BARs: bars})
	require.NoError(t, err)
	for _, c := range caps {
		_, err := cs.AddCapability(c)
		require.NoError(t, err)
	}
	d := &testDevice{cs: cs}
	for i, b := range bars {
		if b.Size != 0 && b.Size <= 1<<20 {
			d.bars[i] = make([]byte, b.Size)
		}
	}
	return d
}

func (d *testDevice) ConfigSpace() *ConfigSpace { return d.cs }

func (d *testDevice) ReadBAR(bar int, off uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(data, d.bars[bar][off:])
}

func (d *testDevice) WriteBAR(bar int, off uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.bars[bar][off:], data)
}

var testWindows = []Range{{Base: 0xc0000000, Size: 0x20000000}, {Base: 0xf0000000, Size: 0x0ec00000}}

type mapping struct {
	bar    int
	addr   uint64
	size   uint64
	mapped bool
}

func newRoot(t testing.TB, events *[]mapping) *Root {
	t.Helper()
	cfg := RootConfig{Windows: testWindows}
	if events != nil {
		cfg.BARMapped = func(_ Device, bar int, addr, size uint64, mapped bool) {
			*events = append(*events, mapping{bar, addr, size, mapped})
		}
	}
	r, err := NewRoot(cfg)
	require.NoError(t, err)
	return r
}

func rd(d devices.Device, off uint64, n int) uint64 {
	b := make([]byte, 8)
	d.Read(off, b[:n])
	return binary.LittleEndian.Uint64(b)
}

func wr(d devices.Device, off uint64, n int, v uint64) {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	d.Write(off, b[:n])
}

func cf8(bus, dev, fn, reg uint32) uint64 {
	return uint64(configEnable | bus<<16 | dev<<11 | fn<<8 | reg)
}

func TestPortIOConfigAccess(t *testing.T) {
	r := newRoot(t, nil)
	slot, err := r.Add(newTestDevice(t, [NumBARs]BAR{{Size: 0x1000}}))
	require.NoError(t, err)
	require.Equal(t, 1, slot)
	pio := r.PortIO()
	tests := []struct {
		name string
		addr uint64
		port uint64 // offset from 0xcf8
		n    int
		want uint64
	}{
		{"host bridge vendor+device", cf8(0, 0, 0, 0), 4, 4, HostBridgeDeviceID<<16 | HostBridgeVendorID},
		{"host bridge class word", cf8(0, 0, 0, 8), 6, 2, 0x0600},
		{"endpoint vendor", cf8(0, 1, 0, 0), 4, 2, 0x1af4},
		{"endpoint device at 0xcfe", cf8(0, 1, 0, 0), 6, 2, 0x1042},
		{"endpoint byte at 0xcff", cf8(0, 1, 0, 0), 7, 1, 0x10},
		{"endpoint interrupt pin", cf8(0, 1, 0, 0x3c), 5, 1, 1},
		{"empty slot", cf8(0, 2, 0, 0), 4, 4, 0xffffffff},
		{"function 1", cf8(0, 1, 1, 0), 4, 2, 0xffff},
		{"bus 1", cf8(1, 0, 0, 0), 4, 4, 0xffffffff},
		{"enable bit clear", cf8(0, 0, 0, 0) &^ configEnable, 4, 4, 0xffffffff},
		{"dword straddling 0xcff", cf8(0, 0, 0, 0), 6, 4, 0xffffffff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wr(pio, 0, 4, tt.addr)
			assert.Equal(t, tt.want, rd(pio, tt.port, tt.n))
		})
	}

	wr(pio, 0, 4, 0xffffffff)
	assert.Equal(t, uint64(configAddressMask), rd(pio, 0, 4), "reserved and low bits read as zero")
	wr(pio, 0, 4, 0x80000000)
	wr(pio, 3, 1, 0x01) // Linux's mechanism #2 probe
	assert.Equal(t, uint64(0x80000000), rd(pio, 0, 4))
	assert.Equal(t, uint64(0xff), rd(pio, 1, 1), "byte reads of CONFIG_ADDRESS are unclaimed")

	// Writes land at the byte the port selects.
	wr(pio, 0, 4, cf8(0, 1, 0, 0x3c))
	wr(pio, 4, 1, 0x0b)
	assert.Equal(t, uint64(0x010b), rd(pio, 4, 2))
	wr(pio, 0, 4, cf8(0, 1, 0, 0x0c))
	wr(pio, 5, 1, 0x40)
	assert.Equal(t, uint64(0x4000), rd(pio, 4, 2), "latency timer at 0xcfd")
}

func TestECAMConfigAccess(t *testing.T) {
	r := newRoot(t, nil)
	_, err := r.Add(newTestDevice(t, [NumBARs]BAR{{Size: 0x1000}}))
	require.NoError(t, err)
	e := r.ECAM()
	fnOff := func(bus, dev, fn, reg uint64) uint64 { return bus<<20 | dev<<15 | fn<<12 | reg }
	tests := []struct {
		name string
		off  uint64
		n    int
		want uint64
	}{
		{"host bridge", fnOff(0, 0, 0, 0), 4, HostBridgeDeviceID<<16 | HostBridgeVendorID},
		{"endpoint ids", fnOff(0, 1, 0, 0), 4, 0x10421af4},
		{"endpoint subsystem", fnOff(0, 1, 0, 0x2c), 4, 0x11001af4},
		{"endpoint revision byte", fnOff(0, 1, 0, 8), 1, 1},
		{"extended space reads zero", fnOff(0, 1, 0, 0x100), 4, 0},
		{"last dword", fnOff(0, 1, 0, 0xffc), 4, 0},
		{"qword: ids, command and status", fnOff(0, 1, 0, 0), 8, 0x10421af4},
		{"straddles into next function", fnOff(0, 1, 0, 0xffe), 4, 0xffffffff},
		{"empty slot", fnOff(0, 5, 0, 0), 2, 0xffff},
		{"function 3", fnOff(0, 1, 3, 0), 2, 0xffff},
		{"bus 2", fnOff(2, 0, 0, 0), 2, 0xffff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, rd(e, tt.off, tt.n))
		})
	}
	wr(e, fnOff(0, 1, 0, RegInterruptLine), 1, 5)
	assert.Equal(t, uint64(5), rd(e, fnOff(0, 1, 0, RegInterruptLine), 1))
	wr(e, fnOff(0, 1, 0, RegVendorID), 4, 0)
	assert.Equal(t, uint64(0x10421af4), rd(e, fnOff(0, 1, 0, 0), 4), "IDs are read-only")
}

func TestBARSizing(t *testing.T) {
	bars := [NumBARs]BAR{
		{Size: 0x1000},
		{Size: 0x4000, Kind: BARMem64, Prefetchable: true},
		{}, // high half of BAR 1
		{Size: 0x10},
	}
	d := newTestDevice(t, bars)
	r := newRoot(t, nil)
	_, err := r.Add(d)
	require.NoError(t, err)
	cs := d.ConfigSpace()
	tests := []struct {
		name  string
		reg   uint64
		sized uint64 // read-back after writing all-ones
	}{
		{"32-bit 4 KiB", RegBAR0, 0xfffff000},
		{"64-bit low", RegBAR0 + 4, 0xffffc000 | barMem64 | barPrefetchable},
		{"64-bit high", RegBAR0 + 8, 0xffffffff},
		{"32-bit 16 bytes", RegBAR0 + 12, 0xfffffff0},
		{"unused BAR", RegBAR0 + 16, 0},
		{"expansion ROM absent", RegExpansionROM, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := rd(cs, tt.reg, 4)
			wr(cs, tt.reg, 4, 0xffffffff)
			assert.Equal(t, tt.sized, rd(cs, tt.reg, 4))
			wr(cs, tt.reg, 4, orig)
			assert.Equal(t, orig, rd(cs, tt.reg, 4))
		})
	}
	// Allocation: largest first, naturally aligned, in the first window.
	assert.Equal(t, uint64(0xc0000000), cs.BARAddress(1))
	assert.Equal(t, uint64(0xc0004000), cs.BARAddress(0))
	assert.Equal(t, uint64(0xc0005000), cs.BARAddress(3))
	// The guest may place a 64-bit BAR anywhere.
	wr(cs, RegBAR0+4, 4, 0x12345000)
	wr(cs, RegBAR0+8, 4, 0x1)
	assert.Equal(t, uint64(0x1_12344000), cs.BARAddress(1), "low bits below the size are not writable")
}

func TestConfigSpaceRejectsBadHeaders(t *testing.T) {
	tests := []struct {
		name string
		bars [NumBARs]BAR
		pin  uint8
	}{
		{"size not a power of two", [NumBARs]BAR{{Size: 0x3000}}, 0},
		{"size below 16", [NumBARs]BAR{{Size: 8}}, 0},
		{"64-bit in last register", [NumBARs]BAR{5: {Size: 0x1000, Kind: BARMem64}}, 0},
		{"64-bit with next register used", [NumBARs]BAR{{Size: 0x1000, Kind: BARMem64}, {Size: 0x1000}}, 0},
		{"32-bit above 2 GiB", [NumBARs]BAR{{Size: 1 << 32}}, 0},
		{"interrupt pin 5", [NumBARs]BAR{}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewConfigSpace(Header{BARs: tt.bars, InterruptPin: tt.pin})
			assert.ErrorIs(t, err, ErrConfig)
		})
	}
}

func TestAllocatorWindows(t *testing.T) {
	r, err := NewRoot(RootConfig{Windows: []Range{{Base: 0xf0000000, Size: 0x3000}, {Base: 0xc0000000, Size: 0x10000}}})
	require.NoError(t, err)
	a := newTestDevice(t, [NumBARs]BAR{{Size: 0x8000}})
	b := newTestDevice(t, [NumBARs]BAR{{Size: 0x1000}, {Size: 0x1000}})
	c := newTestDevice(t, [NumBARs]BAR{{Size: 0x10000}})
	_, err = r.Add(a)
	require.NoError(t, err)
	_, err = r.Add(b)
	require.NoError(t, err)
	assert.Equal(t, uint64(0xc0000000), a.cs.BARAddress(0), "windows are used in address order")
	assert.Equal(t, uint64(0xc0008000), b.cs.BARAddress(0))
	assert.Equal(t, uint64(0xc0009000), b.cs.BARAddress(1))
	_, err = r.Add(c)
	assert.ErrorIs(t, err, ErrNoSpace)
	d := newTestDevice(t, [NumBARs]BAR{{Size: 0x2000}})
	_, err = r.Add(d)
	require.NoError(t, err)
	assert.Equal(t, uint64(0xc000a000), d.cs.BARAddress(0), "a failed Add leaves no hole")

	_, err = NewRoot(RootConfig{Windows: []Range{{Base: 0, Size: 0x2000}, {Base: 0x1000, Size: 0x1000}}})
	assert.ErrorIs(t, err, ErrConfig)
}

func TestSlotsRunOut(t *testing.T) {
	r := newRoot(t, nil)
	for i := 1; i < numSlots; i++ {
		n, err := r.Add(newTestDevice(t, [NumBARs]BAR{}))
		require.NoError(t, err)
		assert.Equal(t, i, n)
	}
	_, err := r.Add(newTestDevice(t, [NumBARs]BAR{}))
	assert.ErrorIs(t, err, ErrNoSpace)
}

func TestBARDecoding(t *testing.T) {
	var events []mapping
	r := newRoot(t, &events)
	d := newTestDevice(t, [NumBARs]BAR{{Size: 0x1000}, {Size: 0x2000, Kind: BARMem64}})
	_, err := r.Add(d)
	require.NoError(t, err)
	require.Len(t, r.MMIOWindows(), 2)
	win := r.MMIOWindows()[0]
	require.Equal(t, testWindows[0], win.Range)
	copy(d.bars[0], []byte{1, 2, 3, 4})
	bar0 := d.cs.BARAddress(0) - win.Base

	assert.Equal(t, uint64(0xffffffff), rd(win.Device, bar0, 4), "memory decoding is off after reset")
	assert.Empty(t, events)

	e := r.ECAM()
	cmd := uint64(1<<15 | RegCommand)
	wr(e, cmd, 2, CommandMemory)
	assert.Equal(t, uint64(0x04030201), rd(win.Device, bar0, 4))
	wr(win.Device, bar0+0xffc, 4, 0xdeadbeef)
	assert.Equal(t, []byte{0xef, 0xbe, 0xad, 0xde}, d.bars[0][0xffc:])
	assert.Equal(t, uint64(0xffffffff), rd(win.Device, bar0+0xffe, 4), "access straddling the BAR end")
	assert.Equal(t, []mapping{
		{1, 0xc0000000, 0x2000, true},
		{0, 0xc0002000, 0x1000, true},
	}, sortByBAR(events))

	// Moving BAR 0 unmaps the old range and maps the new one.
	events = nil
	wr(e, 1<<15|RegBAR0, 4, 0xc0100000)
	assert.Equal(t, []mapping{{0, 0xc0002000, 0x1000, false}, {0, 0xc0100000, 0x1000, true}}, events)
	assert.Equal(t, uint64(0x04030201), rd(win.Device, 0x100000, 4))
	assert.Equal(t, uint64(0xffffffff), rd(win.Device, bar0, 4))

	// A BAR placed outside every window is not decoded.
	events = nil
	wr(e, 1<<15|RegBAR0, 4, 0x80000000)
	assert.Equal(t, []mapping{{0, 0xc0100000, 0x1000, false}}, events)

	// Sizing with decoding off reports nothing.
	events = nil
	wr(e, cmd, 2, 0)
	assert.Equal(t, []mapping{{1, 0xc0000000, 0x2000, false}}, events)
	events = nil
	wr(e, 1<<15|RegBAR0+4, 4, 0xffffffff)
	wr(e, 1<<15|RegBAR0+4, 4, 0xc0000000)
	assert.Empty(t, events)
}

func sortByBAR(ms []mapping) []mapping {
	out := append([]mapping(nil), ms...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].bar > out[i].bar {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestCapabilityList(t *testing.T) {
	d := newTestDevice(t, [NumBARs]BAR{},
		Capability{ID: 0x09, Regs: []byte{14, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		Capability{ID: 0x05, Regs: []byte{0, 0, 0xaa, 0xbb, 0, 0}, Writable: []byte{0, 0, 0xff, 0x0f, 0, 0}},
	)
	cs := d.ConfigSpace()
	assert.Equal(t, uint64(StatusCapabilities), rd(cs, RegStatus, 2))
	var ids []uint64
	for p := rd(cs, RegCapabilities, 1); p != 0; p = rd(cs, p+1, 1) {
		ids = append(ids, rd(cs, p, 1))
		require.Less(t, len(ids), 10, "capability list loops")
	}
	assert.Equal(t, []uint64{0x09, 0x05}, ids)
	second := rd(cs, rd(cs, RegCapabilities, 1)+1, 1)
	assert.Equal(t, uint64(0x40+16), second, "dword aligned after the first")
	wr(cs, second, 4, 0xffffffff)
	assert.Equal(t, uint64(0x0005), rd(cs, second, 2), "ID and next pointer are read-only")
	wr(cs, second+4, 2, 0x1234)
	assert.Equal(t, uint64(0xb234), rd(cs, second+4, 2), "write mask applies per bit")

	_, err := cs.AddCapability(Capability{ID: 1, Regs: make([]byte, 200)})
	assert.ErrorIs(t, err, ErrConfig)
	_, err = cs.AddCapability(Capability{ID: 1, Regs: make([]byte, 2), Writable: make([]byte, 1)})
	assert.ErrorIs(t, err, ErrConfig)
}

func TestHeaderReadOnlyFields(t *testing.T) {
	cs := newTestDevice(t, [NumBARs]BAR{}).ConfigSpace()
	before := make([]byte, 64)
	cs.Read(0, before)
	for off := uint64(0); off < 64; off += 4 {
		wr(cs, off, 4, 0xffffffff)
	}
	after := make([]byte, 64)
	cs.Read(0, after)
	for off := 0; off < 64; off++ {
		switch off {
		case RegCommand, RegCommand + 1, RegCacheLineSize, RegLatencyTimer, RegInterruptLine:
			continue
		}
		assert.Equal(t, before[off], after[off], "offset %#x changed", off)
	}
	assert.Equal(t, uint64(CommandMemory|CommandBusMaster|CommandParity|CommandSERR|CommandINTxDisable), rd(cs, RegCommand, 2))
}

// TestEveryOffsetEveryWidth accesses every offset of configuration space,
// of the port and ECAM devices and of a BAR window at widths 1, 2, 4 and 8.
func TestEveryOffsetEveryWidth(t *testing.T) {
	router := &fakeRouter{}
	m, err := NewMSIX(4, router, nil)
	require.NoError(t, err)
	capMSIX, err := m.Capability(0, 0, 0x800)
	require.NoError(t, err)
	d := newTestDevice(t, [NumBARs]BAR{{Size: 0x1000}}, capMSIX)
	r := newRoot(t, nil)
	_, err = r.Add(d)
	require.NoError(t, err)
	widths := []int{1, 2, 4, 8}
	for _, w := range widths {
		buf := make([]byte, w)
		for off := uint64(0); off < ConfigSize+16; off++ {
			d.cs.Read(off, buf)
			d.cs.Write(off, buf)
			r.ECAM().Read(1<<15|off, buf)
			r.ECAM().Write(1<<15|off, buf)
		}
		for off := uint64(0); off < 16; off++ {
			r.PortIO().Read(off, buf)
			r.PortIO().Write(off, buf)
		}
		for off := uint64(0); off < m.TableSize()+m.PBASize()+16; off++ {
			m.ReadTable(off, buf)
			m.WriteTable(off, buf)
			m.ReadPBA(off, buf)
		}
		d.cs.Read(^uint64(0), buf)
		d.cs.Write(^uint64(0)-2, buf)
		r.ECAM().Read(^uint64(0)-2, buf)
		m.ReadTable(^uint64(0)-1, buf)
		m.WriteTable(^uint64(0)-1, buf)
		m.ReadPBA(^uint64(0)-1, buf)
	}
	wr(r.ECAM(), 1<<15|RegCommand, 2, CommandMemory)
	win := r.MMIOWindows()[0].Device
	for _, w := range widths {
		buf := make([]byte, w)
		for off := uint64(0); off < 0x2010; off++ {
			win.Read(off, buf)
			win.Write(off, buf)
		}
		win.Read(^uint64(0)-1, buf)
	}
}

type fakeRouter struct {
	mu       sync.Mutex
	routes   map[int][2]uint64
	triggers []int
	fail     error
}

func (f *fakeRouter) Route(v int, addr uint64, data uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if f.routes == nil {
		f.routes = map[int][2]uint64{}
	}
	f.routes[v] = [2]uint64{addr, uint64(data)}
	return nil
}

func (f *fakeRouter) Trigger(v int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.triggers = append(f.triggers, v)
	return nil
}

func (f *fakeRouter) fired() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.triggers...)
}

// msixFixture is a function with MSI-X table at BAR 0 offset 0 and PBA at
// 0x800, addressed through ECAM like a guest would.
type msixFixture struct {
	m      *MSIX
	router *fakeRouter
	cs     *ConfigSpace
	cap    uint64
}

func newMSIXFixture(t *testing.T, vectors int) *msixFixture {
	router := &fakeRouter{}
	m, err := NewMSIX(vectors, router, nil)
	require.NoError(t, err)
	c, err := m.Capability(0, 0, 0x800)
	require.NoError(t, err)
	cs, err := NewConfigSpace(Header{BARs: [NumBARs]BAR{{Size: 0x1000}}})
	require.NoError(t, err)
	off, err := cs.AddCapability(c)
	require.NoError(t, err)
	return &msixFixture{m: m, router: router, cs: cs, cap: uint64(off)}
}

func (f *msixFixture) control(v uint64) { wr(f.cs, f.cap+msixControl, 2, v) }

func (f *msixFixture) program(vec int, addr uint64, data uint32, masked bool) {
	base := uint64(vec * MSIXEntrySize)
	wr(tableDev{f.m}, base, 4, addr&0xffffffff)
	wr(tableDev{f.m}, base+4, 4, addr>>32)
	wr(tableDev{f.m}, base+8, 4, uint64(data))
	ctrl := uint64(0)
	if masked {
		ctrl = msixEntryMasked
	}
	wr(tableDev{f.m}, base+12, 4, ctrl)
}

func (f *msixFixture) pba() uint64 { return rd(pbaDev{f.m}, 0, 8) }

type tableDev struct{ m *MSIX }

func (d tableDev) Read(off uint64, b []byte)  { d.m.ReadTable(off, b) }
func (d tableDev) Write(off uint64, b []byte) { d.m.WriteTable(off, b) }

type pbaDev struct{ m *MSIX }

func (d pbaDev) Read(off uint64, b []byte) { d.m.ReadPBA(off, b) }
func (pbaDev) Write(uint64, []byte)        {}

func TestMSIXCapability(t *testing.T) {
	f := newMSIXFixture(t, 3)
	assert.Equal(t, uint64(CapIDMSIX), rd(f.cs, f.cap, 1))
	assert.Equal(t, uint64(2), rd(f.cs, f.cap+msixControl, 2), "table size is N-1")
	assert.Equal(t, uint64(0), rd(f.cs, f.cap+msixTableReg, 4), "table at offset 0 of BAR 0")
	assert.Equal(t, uint64(0x800), rd(f.cs, f.cap+msixPBAReg, 4))
	f.control(0xffff)
	assert.Equal(t, uint64(0xc002), rd(f.cs, f.cap+msixControl, 2), "only enable and mask are writable")
	assert.True(t, f.m.Enabled())
	for v := 0; v < 3; v++ {
		assert.Equal(t, uint64(msixEntryMasked), rd(tableDev{f.m}, uint64(v*16+12), 4), "vectors start masked")
	}
	wr(tableDev{f.m}, 0, 4, 0xfee00003)
	assert.Equal(t, uint64(0xfee00000), rd(tableDev{f.m}, 0, 4), "address is dword aligned")
	wr(tableDev{f.m}, 12, 4, 0xfffffffe)
	assert.Equal(t, uint64(0), rd(tableDev{f.m}, 12, 4), "reserved vector control bits")
	assert.Equal(t, uint64(0), rd(tableDev{f.m}, 3*16, 4), "past the table")
	assert.Equal(t, uint64(8), f.m.PBASize())

	_, err := NewMSIX(0, nil, nil)
	assert.ErrorIs(t, err, ErrConfig)
	_, err = f.m.Capability(0, 4, 0)
	assert.ErrorIs(t, err, ErrConfig)
}

func TestMSIXDelivery(t *testing.T) {
	tests := []struct {
		name        string
		run         func(f *msixFixture)
		wantRoutes  map[int][2]uint64
		wantFired   []int
		wantPending uint64
	}{
		{"disabled drops", func(f *msixFixture) {
			f.program(0, 0xfee00000, 0x41, false)
			require.NoError(t, f.m.Signal(0))
		}, nil, nil, 0},
		{"unmasked delivers", func(f *msixFixture) {
			f.control(msixEnable)
			f.program(1, 0xfee01000, 0x42, false)
			require.NoError(t, f.m.Signal(1))
			require.NoError(t, f.m.Signal(1))
		}, map[int][2]uint64{1: {0xfee01000, 0x42}}, []int{1, 1}, 0},
		{"masked vector pends", func(f *msixFixture) {
			f.control(msixEnable)
			f.program(2, 0xfee00000, 0x43, true)
			require.NoError(t, f.m.Signal(2))
		}, nil, nil, 1 << 2},
		{"unmask delivers pending", func(f *msixFixture) {
			f.control(msixEnable)
			f.program(2, 0xfee00000, 0x43, true)
			require.NoError(t, f.m.Signal(2))
			require.NoError(t, f.m.Signal(2))
			wr(tableDev{f.m}, 2*16+12, 4, 0)
		}, map[int][2]uint64{2: {0xfee00000, 0x43}}, []int{2}, 0},
		{"function mask pends every vector", func(f *msixFixture) {
			f.control(msixEnable | msixFunctionMask)
			f.program(0, 0xfee00000, 0x40, false)
			f.program(1, 0xfee00000, 0x41, false)
			require.NoError(t, f.m.Signal(0))
			require.NoError(t, f.m.Signal(1))
		}, nil, nil, 0b11},
		{"function unmask delivers", func(f *msixFixture) {
			f.control(msixEnable | msixFunctionMask)
			f.program(0, 0xfee00000, 0x40, false)
			require.NoError(t, f.m.Signal(0))
			f.control(msixEnable)
		}, map[int][2]uint64{0: {0xfee00000, 0x40}}, []int{0}, 0},
		{"message change while unmasked reroutes", func(f *msixFixture) {
			f.control(msixEnable)
			f.program(0, 0xfee00000, 0x40, false)
			wr(tableDev{f.m}, 8, 4, 0x55)
			require.NoError(t, f.m.Signal(0))
		}, map[int][2]uint64{0: {0xfee00000, 0x55}}, []int{0}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newMSIXFixture(t, 4)
			tt.run(f)
			assert.Equal(t, tt.wantRoutes, f.router.routes)
			assert.Equal(t, tt.wantFired, f.router.fired())
			assert.Equal(t, tt.wantPending, f.pba())
		})
	}
}

func TestMSIXRouteFailureKeepsPending(t *testing.T) {
	f := newMSIXFixture(t, 1)
	f.control(msixEnable)
	f.program(0, 0xfee00000, 0x40, true)
	f.router.fail = fmt.Errorf("no GSI left")
	wr(tableDev{f.m}, 12, 4, 0)
	assert.Error(t, f.m.Signal(0))
	assert.Equal(t, uint64(1), f.pba())
	f.router.fail = nil
	require.NoError(t, f.m.Signal(0))
	assert.Equal(t, []int{0}, f.router.fired())
	assert.Equal(t, uint64(0), f.pba())
	assert.Error(t, f.m.Signal(1), "vector out of range")
	assert.Error(t, f.m.Signal(-1))
}
