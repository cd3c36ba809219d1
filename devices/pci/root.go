package pci

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/gvmm-dev/gvmm/devices"
)

// Device is a PCI function hosted on the root bus. The root complex
// decodes its BARs (described by ConfigSpace) and forwards accesses with
// the offset inside the BAR.
type Device interface {
	ConfigSpace() *ConfigSpace
	ReadBAR(bar int, offset uint64, data []byte)
	WriteBAR(bar int, offset uint64, data []byte)
}

// Configuration mechanism #1 and ECAM geometry.
const (
	ConfigAddressPort = 0xcf8   // CONFIG_ADDRESS; CONFIG_DATA follows at 0xcfc
	PortIOSize        = 8       // 0xcf8-0xcff
	ECAMBusSize       = 1 << 20 // ECAM bytes per bus
	configEnable      = 1 << 31
	configAddressMask = configEnable | 0x00fffffc // bus, device, function, dword
	configDataOffset  = 4
	numSlots          = 32
)

// Host bridge identity: Intel's ID for a virtual PCIe host, which Linux
// drives without chipset quirks.
const (
	HostBridgeVendorID = 0x8086
	HostBridgeDeviceID = 0x0d57
	classHostBridge    = 0x060000
)

// Range is [Base, Base+Size).
type Range struct {
	Base, Size uint64
}

func (r Range) contains(addr, n uint64) bool {
	return addr >= r.Base && n <= r.Size && addr-r.Base <= r.Size-n
}

// RootConfig configures a root complex.
type RootConfig struct {
	// Windows are the MMIO ranges where BARs are allocated and decoded,
	// e.g. the 32-bit hole minus ECAM. The machine inserts each window's
	// device (MMIOWindows) on its MMIO bus.
	Windows []Range
	Log     *slog.Logger
	// BARMapped, if set, reports that [addr, addr+size) of BAR bar of dev
	// starts (mapped) or stops (!mapped) reaching the device: the guest
	// toggled memory decoding or moved the BAR. Every mapped call is
	// followed, when that mapping ends, by an unmapped call with the same
	// address, so the machine can add and remove ioeventfds. It runs on
	// the vCPU thread of the configuration write with the root complex
	// locked and must not access configuration space.
	BARMapped func(dev Device, bar int, addr, size uint64, mapped bool)
}

type decode struct {
	addr   uint64
	mapped bool
}

type slot struct {
	dev     Device
	decoded [NumBARs]decode
}

type route struct {
	Range
	dev Device
	bar int
}

// Root is the root complex of bus 0.
type Root struct {
	log       *slog.Logger
	windows   []Range
	barMapped func(Device, int, uint64, uint64, bool)

	mu         sync.Mutex // serializes configuration accesses and BAR allocation
	configAddr uint32
	slots      [numSlots]slot
	next       []uint64 // allocation cursor per window

	routeMu sync.RWMutex
	routes  []route
}

// ErrNoSpace reports that a device's BARs or slot do not fit.
var ErrNoSpace = errors.New("PCI bus full")

// NewRoot returns a root complex with a host bridge at 00:00.0.
func NewRoot(cfg RootConfig) (*Root, error) {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	r := &Root{log: log, windows: slices.Clone(cfg.Windows), barMapped: cfg.BARMapped}
	slices.SortFunc(r.windows, func(a, b Range) int { return cmp.Compare(a.Base, b.Base) })
	for i, w := range r.windows {
		if w.Size == 0 || w.Base+w.Size < w.Base {
			return nil, fmt.Errorf("%w: window %#x+%#x", ErrConfig, w.Base, w.Size)
		}
		if i > 0 && r.windows[i-1].Base+r.windows[i-1].Size > w.Base {
			return nil, fmt.Errorf("%w: windows at %#x and %#x overlap", ErrConfig, r.windows[i-1].Base, w.Base)
		}
		r.next = append(r.next, w.Base)
	}
	hb, err := NewConfigSpace(Header{VendorID: HostBridgeVendorID, DeviceID: HostBridgeDeviceID, Class: classHostBridge})
	if err != nil {
		return nil, err
	}
	r.slots[0].dev = hostBridge{hb}
	return r, nil
}

// hostBridge is 00:00.0: identity only, no BARs.
type hostBridge struct{ cs *ConfigSpace }

func (h hostBridge) ConfigSpace() *ConfigSpace { return h.cs }
func (hostBridge) ReadBAR(_ int, _ uint64, data []byte) {
	fill(data)
}
func (hostBridge) WriteBAR(int, uint64, []byte) {}

func fill(data []byte) {
	for i := range data {
		data[i] = 0xff
	}
}

// Add places dev in the first free slot, assigns its BARs addresses in
// the windows (largest first, naturally aligned) and returns the slot.
// Decoding starts when the guest sets the command register's memory bit.
func (r *Root) Add(dev Device) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := slices.IndexFunc(r.slots[:], func(s slot) bool { return s.dev == nil })
	if n < 0 {
		return 0, fmt.Errorf("%w: no free slot", ErrNoSpace)
	}
	cs := dev.ConfigSpace()
	bars := cs.BARs()
	order := []int{}
	for i, b := range bars {
		if b.Size != 0 {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(bars[b].Size, bars[a].Size) })
	// Allocate on a copy of the cursors so a device that does not fit
	// leaves no hole behind.
	next := slices.Clone(r.next)
	var addrs [NumBARs]uint64
	for _, i := range order {
		a, err := allocate(r.windows, next, bars[i].Size)
		if err != nil {
			return 0, fmt.Errorf("BAR %d: %w", i, err)
		}
		addrs[i] = a
	}
	r.next = next
	for _, i := range order {
		cs.setBARAddress(i, addrs[i])
	}
	r.slots[n].dev = dev
	r.refresh(n)
	return n, nil
}

// allocate takes size bytes, aligned to size, from the first window with
// room, advancing its cursor in next.
func allocate(windows []Range, next []uint64, size uint64) (uint64, error) {
	for i, w := range windows {
		base := (next[i] + size - 1) &^ (size - 1)
		if base >= next[i] && w.contains(base, size) {
			next[i] = base + size
			return base, nil
		}
	}
	return 0, fmt.Errorf("%w: no window has %#x bytes free", ErrNoSpace, size)
}

// function returns the device at bus/dev/fn: only function 0 of each
// slot of bus 0 exists.
func (r *Root) function(bus, dev, fn uint64) (Device, int) {
	if bus != 0 || fn != 0 || dev >= numSlots {
		return nil, 0
	}
	return r.slots[dev].dev, int(dev)
}

// configRead reads a function's configuration space; a function that
// does not exist reads as all-ones, so its vendor ID is 0xffff.
func (r *Root) configRead(bus, dev, fn, reg uint64, data []byte) {
	d, _ := r.function(bus, dev, fn)
	if d == nil {
		fill(data)
		return
	}
	d.ConfigSpace().Read(reg, data)
}

func (r *Root) configWrite(bus, dev, fn, reg uint64, data []byte) {
	d, n := r.function(bus, dev, fn)
	if d == nil {
		return
	}
	d.ConfigSpace().Write(reg, data)
	r.refresh(n)
}

// refresh re-reads slot n's command register and BARs after a
// configuration write and updates routing. Called with mu held.
func (r *Root) refresh(n int) {
	s := &r.slots[n]
	cs := s.dev.ConfigSpace()
	memOn := cs.Command()&CommandMemory != 0
	changed := false
	for i, b := range cs.BARs() {
		if b.Size == 0 {
			continue
		}
		addr := cs.BARAddress(i)
		now := decode{addr: addr, mapped: memOn && slices.ContainsFunc(r.windows, func(w Range) bool { return w.contains(addr, b.Size) })}
		old := s.decoded[i]
		if now == old || !now.mapped && !old.mapped {
			s.decoded[i] = now
			continue
		}
		changed = true
		s.decoded[i] = now
		r.log.Debug("PCI BAR decode changed", "slot", n, "bar", i,
			"addr", fmt.Sprintf("%#x", now.addr), "mapped", now.mapped)
		if r.barMapped == nil {
			continue
		}
		if old.mapped {
			r.barMapped(s.dev, i, old.addr, b.Size, false)
		}
		if now.mapped {
			r.barMapped(s.dev, i, now.addr, b.Size, true)
		}
	}
	if changed {
		r.rebuildRoutes()
	}
}

func (r *Root) rebuildRoutes() {
	var routes []route
	for _, s := range r.slots {
		if s.dev == nil {
			continue
		}
		bars := s.dev.ConfigSpace().BARs()
		for i, d := range s.decoded {
			if d.mapped {
				routes = append(routes, route{Range: Range{Base: d.addr, Size: bars[i].Size}, dev: s.dev, bar: i})
			}
		}
	}
	r.routeMu.Lock()
	r.routes = routes
	r.routeMu.Unlock()
}

// lookup finds the BAR decoding all of [addr, addr+n).
func (r *Root) lookup(addr uint64, n int) (route, bool) {
	r.routeMu.RLock()
	defer r.routeMu.RUnlock()
	for _, rt := range r.routes {
		if rt.contains(addr, uint64(n)) {
			return rt, true
		}
	}
	return route{}, false
}

// PortIO returns configuration mechanism #1, to insert on the port bus at
// ConfigAddressPort with size PortIOSize.
func (r *Root) PortIO() devices.Device { return portIO{r} }

type portIO struct{ r *Root }

// dataAccess decodes an access to CONFIG_DATA (0xcfc-0xcff) into the
// selected function and register; ok is false if the access is not
// inside CONFIG_DATA or configuration access is disabled.
func (p portIO) dataAccess(off uint64, n int) (bus, dev, fn, reg uint64, ok bool) {
	if off < configDataOffset || off+uint64(n) > PortIOSize {
		return 0, 0, 0, 0, false
	}
	a := uint64(p.r.configAddr)
	if a&configEnable == 0 {
		return 0, 0, 0, 0, false
	}
	return a >> 16 & 0xff, a >> 11 & 0x1f, a >> 8 & 0x7, a&0xfc + off - configDataOffset, true
}

func (p portIO) Read(off uint64, data []byte) {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	if off == 0 && len(data) == 4 {
		binary.LittleEndian.PutUint32(data, p.r.configAddr)
		return
	}
	bus, dev, fn, reg, ok := p.dataAccess(off, len(data))
	if !ok {
		fill(data)
		return
	}
	p.r.configRead(bus, dev, fn, reg, data)
}

func (p portIO) Write(off uint64, data []byte) {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	// Only dword accesses reach CONFIG_ADDRESS; Linux probes for
	// mechanism #2 with a byte write to 0xcfb, which must not stick.
	if off == 0 && len(data) == 4 {
		p.r.configAddr = binary.LittleEndian.Uint32(data) & configAddressMask
		return
	}
	if bus, dev, fn, reg, ok := p.dataAccess(off, len(data)); ok {
		p.r.configWrite(bus, dev, fn, reg, data)
	}
}

// ECAM returns the memory-mapped configuration space, to insert on the
// MMIO bus at the MCFG base with size ECAMBusSize times the bus count.
// Offsets decode as bus<<20 | device<<15 | function<<12 | register.
func (r *Root) ECAM() devices.Device { return ecam{r} }

type ecam struct{ r *Root }

func decodeECAM(off uint64, n int) (bus, dev, fn, reg uint64, ok bool) {
	reg = off & (ConfigSize - 1)
	return off >> 20, off >> 15 & 0x1f, off >> 12 & 0x7, reg, reg+uint64(n) <= ConfigSize
}

func (e ecam) Read(off uint64, data []byte) {
	bus, dev, fn, reg, ok := decodeECAM(off, len(data))
	if !ok {
		fill(data)
		return
	}
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	e.r.configRead(bus, dev, fn, reg, data)
}

func (e ecam) Write(off uint64, data []byte) {
	bus, dev, fn, reg, ok := decodeECAM(off, len(data))
	if !ok {
		return
	}
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	e.r.configWrite(bus, dev, fn, reg, data)
}

// Window is one MMIO window and the device that decodes BARs in it.
type Window struct {
	Range
	Device devices.Device
}

// MMIOWindows returns the devices to insert on the MMIO bus, one per
// window at its Base with its Size. Accesses that hit no decoded BAR read
// as all-ones.
func (r *Root) MMIOWindows() []Window {
	ws := make([]Window, len(r.windows))
	for i, w := range r.windows {
		ws[i] = Window{Range: w, Device: mmio{r: r, base: w.Base}}
	}
	return ws
}

type mmio struct {
	r    *Root
	base uint64
}

func (m mmio) Read(off uint64, data []byte) {
	rt, ok := m.r.lookup(m.base+off, len(data))
	if !ok {
		fill(data)
		return
	}
	rt.dev.ReadBAR(rt.bar, m.base+off-rt.Base, data)
}

func (m mmio) Write(off uint64, data []byte) {
	if rt, ok := m.r.lookup(m.base+off, len(data)); ok {
		rt.dev.WriteBAR(rt.bar, m.base+off-rt.Base, data)
	}
}
