package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"

	"github.com/gvmm-dev/gvmm/tests/internal/pio"
)

// PCI configuration registers and capability IDs.
const (
	pciCommand       = 0x04
	pciCommandMemory = 0x2
	pciBAR0          = 0x10
	pciBAREnd        = 0x28
	pciIntLine       = 0x3c
	pciCapPtr        = 0x34
	pciConfigSize    = 256 // what Linux exposes of a conventional function
	capMSIX          = 0x11
	capVendor        = 0x09
	msixEnableHi     = 1 << 7 // Message Control bit 15, in its high byte
	virtioPCIDriver  = "/sys/bus/pci/drivers/virtio-pci"
)

// function is a PCI function's sysfs directory with its configuration
// file open.
type function struct {
	dir string
	cfg *os.File
}

func openFunction(dir string) (*function, error) {
	f, err := os.OpenFile(dir+"/config", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &function{dir: dir, cfg: f}, nil
}

func (f *function) close() { f.cfg.Close() }

// claimed is a function taken from its driver to be driven by hand: its
// BAR mapped, and DMA memory for its queues.
type claimed struct {
	fn  *function
	bar *bar
	mem *dma
}

// claim opens the function at dir, unbinds it from virtio-pci (which
// holds it, no virtio driver taking it; a BAR a driver holds cannot be
// mapped), maps its BAR and makes pages of DMA memory.
func claim(dir string, pages int) (*claimed, error) {
	fn, err := openFunction(dir)
	if err != nil {
		return nil, err
	}
	if err := unbind(fn.dir); err != nil {
		fn.close()
		return nil, err
	}
	b, err := mapBAR(fn)
	if err != nil {
		fn.close()
		return nil, err
	}
	mem, err := newDMA(pages)
	if err != nil {
		b.unmap()
		fn.close()
		return nil, err
	}
	return &claimed{fn: fn, bar: b, mem: mem}, nil
}

// release unmaps the BAR and closes the function.
func (c *claimed) release() {
	c.bar.unmap()
	c.fn.close()
}
func (f *function) name() string { return filepath.Base(f.dir) }

// read reads size bytes of configuration space at off; sysfs turns an
// aligned access of 1, 2 or 4 bytes into one configuration cycle of that
// width.
func (f *function) read(off int64, size int) (uint32, error) {
	var b [4]byte
	if _, err := f.cfg.ReadAt(b[:size], off); err != nil {
		return 0, fmt.Errorf("%s config read at %#x: %w", f.name(), off, err)
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

func (f *function) write(off int64, size int, v uint32) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	if _, err := f.cfg.WriteAt(b[:size], off); err != nil {
		return fmt.Errorf("%s config write at %#x: %w", f.name(), off, err)
	}
	return nil
}

func (f *function) snapshot() ([]byte, error) {
	b := make([]byte, pciConfigSize)
	if _, err := f.cfg.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("%s config: %w", f.name(), err)
	}
	return b, nil
}

// capabilities returns the offsets of the capabilities with the given ID
// in a configuration snapshot, bounded against a looping list.
func capabilities(cfg []byte, id byte) []int {
	var out []int
	for p, n := int(cfg[pciCapPtr]&^3), 0; p >= 0x40 && p+2 <= len(cfg) && n < 48; p, n = int(cfg[p+1]&^3), n+1 {
		if cfg[p] == id {
			out = append(out, p)
		}
	}
	return out
}

// unbind detaches a function from virtio-pci, if bound.
func unbind(dir string) error {
	if _, err := os.Stat(dir + "/driver"); err != nil {
		return nil
	}
	return os.WriteFile(virtioPCIDriver+"/unbind", []byte(filepath.Base(dir)), 0o200)
}

func bind(dir string) error {
	return os.WriteFile(virtioPCIDriver+"/bind", []byte(filepath.Base(dir)), 0o200)
}

// targets are the functions the config and bar phases attack: the
// attacked disk, the balloon if there is one.
func (h *hostile) targets() []string {
	t := []string{h.attackFn}
	if h.balloonFn != "" {
		t = append(t, h.balloonFn)
	}
	return t
}

// hammerConfig writes garbage at every offset and width of the
// configuration space of the attacked functions and the host bridge, with
// MSI-X kept disabled (garbage vectors would reach the guest's CPU as
// INIT, NMI or SMI), then restores what the kernel configured. Then the
// balloon's BAR is laid over the attacked disk's (see overlapBARs), and
// last comes garbage in CONFIG_ADDRESS, with reads of CONFIG_DATA.
func (h *hostile) hammerConfig() (int, error) {
	for _, t := range h.targets() {
		if err := unbind(t); err != nil {
			return 0, fmt.Errorf("unbinding %s: %w", filepath.Base(t), err)
		}
	}
	rng := newRand(0xc0f1)
	n := 0
	for _, dir := range append([]string{h.bridgeFn}, h.targets()...) {
		fn, err := openFunction(dir)
		if err != nil {
			return n, err
		}
		m, err := hammerFunction(fn, rng)
		n += m
		fn.close()
		if err != nil {
			return n, err
		}
	}
	if h.balloonFn != "" {
		m, err := overlapBARs(h.balloonFn, h.attackFn, 50)
		n += m
		if err != nil {
			return n, err
		}
	}
	m, err := withIOPL(func() (int, error) { return hammerConfigAddress(rng), nil })
	return n + m, err
}

// overlapBARs moves BAR 0 of function mover onto that of function onto,
// toggles mover's memory decoding toggles times, so that the VMM maps and
// unmaps a BAR whose notification addresses another device already has,
// and puts it back: "overlap=toggles=N".
func overlapBARs(mover, onto string, toggles int) (int, error) {
	m, err := openFunction(mover)
	if err != nil {
		return 0, err
	}
	defer m.close()
	o, err := openFunction(onto)
	if err != nil {
		return 0, err
	}
	defer o.close()
	saved, err := m.snapshot()
	if err != nil {
		return 0, err
	}
	target, err := o.snapshot()
	if err != nil {
		return 0, err
	}
	cmd := uint32(binary.LittleEndian.Uint16(saved[pciCommand:]))
	n := 0
	write := func(off int64, size int, v uint32) error {
		n++
		return m.write(off, size, v)
	}
	if err := write(pciCommand, 2, cmd&^pciCommandMemory); err != nil {
		return n, err
	}
	for off := int64(pciBAR0); off < pciBAR0+8; off += 4 {
		if err := write(off, 4, binary.LittleEndian.Uint32(target[off:])); err != nil {
			return n, err
		}
	}
	for i := 0; i < toggles; i++ {
		if err := write(pciCommand, 2, cmd|pciCommandMemory); err != nil {
			return n, err
		}
		if err := write(pciCommand, 2, cmd&^pciCommandMemory); err != nil {
			return n, err
		}
	}
	for off := int64(pciBAR0); off < pciBAR0+8; off += 4 {
		if err := write(off, 4, binary.LittleEndian.Uint32(saved[off:])); err != nil {
			return n, err
		}
	}
	if err := write(pciCommand, 2, cmd); err != nil {
		return n, err
	}
	guest.Report("overlap", fmt.Sprintf("toggles=%d", toggles))
	return n, nil
}

func hammerFunction(fn *function, rng *rng) (int, error) {
	saved, err := fn.snapshot()
	if err != nil {
		return 0, err
	}
	msixHi := -1
	if c := capabilities(saved, capMSIX); len(c) > 0 {
		msixHi = c[0] + 3
	}
	n := 0
	for off := 0; off < pciConfigSize; off++ {
		for _, size := range []int{1, 2, 4} {
			if off%size != 0 {
				continue
			}
			if _, err := fn.read(int64(off), size); err != nil {
				return n, err
			}
			v := rng.u32()
			if msixHi >= off && msixHi < off+size {
				v &^= msixEnableHi << (8 * (msixHi - off))
			}
			if err := fn.write(int64(off), size, v); err != nil {
				return n, err
			}
			n += 2
		}
	}
	// Put back what the kernel set up: BARs, then decoding, the
	// interrupt line and MSI-X control.
	for off := pciBAR0; off < pciBAREnd; off += 4 {
		if err := fn.write(int64(off), 4, binary.LittleEndian.Uint32(saved[off:])); err != nil {
			return n, err
		}
	}
	restore := []int{pciCommand, pciIntLine}
	if msixHi >= 0 {
		restore = append(restore, msixHi-1)
	}
	for _, off := range restore {
		if err := fn.write(int64(off), 2, uint32(binary.LittleEndian.Uint16(saved[off:]))); err != nil {
			return n, err
		}
	}
	after, err := fn.snapshot()
	if err != nil {
		return n, err
	}
	for _, off := range restore {
		if a, s := binary.LittleEndian.Uint16(after[off:]), binary.LittleEndian.Uint16(saved[off:]); a != s {
			return n, fmt.Errorf("%s: register %#x reads %#x after restoring %#x", fn.name(), off, a, s)
		}
	}
	for off := pciBAR0; off < pciBAREnd; off += 4 {
		if a, s := binary.LittleEndian.Uint32(after[off:]), binary.LittleEndian.Uint32(saved[off:]); a != s {
			return n, fmt.Errorf("%s: BAR register %#x reads %#x after restoring %#x", fn.name(), off, a, s)
		}
	}
	guest.Report("config", fmt.Sprintf("%s:restored", fn.name()))
	return n, nil
}

// hammerConfigAddress writes garbage to CONFIG_ADDRESS at every width and
// reads CONFIG_DATA behind it. It writes no CONFIG_DATA: between our two
// port writes the kernel may run its own configuration cycle and leave
// CONFIG_ADDRESS pointing at a function the guest still uses.
func hammerConfigAddress(rng *rng) int {
	saved := pio.Inl(configAddr)
	n := 0
	for i := 0; i < 512; i++ {
		size := []int{1, 2, 4}[i%3]
		p := configAddr + uint16(rng.u32()%4)&^uint16(size-1)
		pio.Out(p, size, rng.u32())
		for d := uint16(4); d < 8; d++ {
			pio.Inb(configAddr + d)
		}
		pio.Inl(configAddr + 4)
		n += 6
	}
	pio.Outl(configAddr, saved)
	return n + 1
}

// bar is a function's virtio BAR mapped through sysfs, with the offsets
// of its structures from the virtio capabilities.
type bar struct {
	fn                       *function
	w                        window
	common, isr, device      uint64
	notify, notifyMultiplier uint64
}

// Virtio PCI capability cfg_type values.
const (
	virtioCapCommon = 1
	virtioCapNotify = 2
	virtioCapISR    = 3
	virtioCapDevice = 4
)

// mapBAR maps BAR 0 of a function the guest's driver let go of, turning
// memory decoding on if it is off.
func mapBAR(fn *function) (*bar, error) {
	cfg, err := fn.snapshot()
	if err != nil {
		return nil, err
	}
	if cmd := binary.LittleEndian.Uint16(cfg[pciCommand:]); cmd&pciCommandMemory == 0 {
		if err := fn.write(pciCommand, 2, uint32(cmd|pciCommandMemory)); err != nil {
			return nil, err
		}
	}
	b := &bar{fn: fn}
	for _, c := range capabilities(cfg, capVendor) {
		if c+20 > len(cfg) || cfg[c+4] != 0 {
			continue
		}
		off := uint64(binary.LittleEndian.Uint32(cfg[c+8:]))
		switch cfg[c+3] {
		case virtioCapCommon:
			b.common = off
		case virtioCapISR:
			b.isr = off
		case virtioCapDevice:
			b.device = off
		case virtioCapNotify:
			b.notify = off
			b.notifyMultiplier = uint64(binary.LittleEndian.Uint32(cfg[c+16:]))
		}
	}
	if b.notify == 0 || b.isr == 0 {
		return nil, fmt.Errorf("%s: no virtio capabilities in BAR 0", fn.name())
	}
	f, err := os.OpenFile(fn.dir+"/resource0", os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping %s BAR 0: %w", fn.name(), err)
	}
	b.w = window{m}
	return b, nil
}

func (b *bar) unmap() { _ = unix.Munmap(b.w.b) }

// Common configuration (struct virtio_pci_common_cfg) offsets.
const (
	ccDeviceFeatureSelect = 0x00
	ccDeviceFeature       = 0x04
	ccDriverFeatureSelect = 0x08
	ccDriverFeature       = 0x0c
	ccConfigMSIXVector    = 0x10
	ccDeviceStatus        = 0x14
	ccQueueSelect         = 0x16
	ccQueueSize           = 0x18
	ccQueueMSIXVector     = 0x1a
	ccQueueEnable         = 0x1c
	ccQueueNotifyOff      = 0x1e
	ccQueueDesc           = 0x20
	ccQueueDriver         = 0x28
	ccQueueDevice         = 0x30
)

// Device status bits.
const (
	statusAcknowledge = 1
	statusDriver      = 2
	statusDriverOK    = 4
	statusFeaturesOK  = 8
	statusNeedsReset  = 0x40
)

func (b *bar) status() uint8 { return uint8(b.w.read(b.common+ccDeviceStatus, 1)) }

// reset writes status 0 and waits until it reads back 0 (spec 4.1.4.3.2).
func (b *bar) reset() error {
	b.w.write(b.common+ccDeviceStatus, 1, 0)
	for deadline := time.Now().Add(5 * time.Second); ; {
		s := b.status()
		if s == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: status %#x after reset", b.fn.name(), s)
		}
		time.Sleep(time.Millisecond)
	}
}

// hammerBARs writes garbage at every offset and width of the register
// part of each page of each attacked function's BAR, and at a sample of
// the rest: reads first, then a garbage write. MSI-X is disabled
// (the config phase saw to it), so garbage table entries are never
// routed. The device is reset afterwards.
func (h *hostile) hammerBARs() (int, error) {
	rng := newRand(0xba7)
	n := 0
	for _, dir := range h.targets() {
		fn, err := openFunction(dir)
		if err != nil {
			return n, err
		}
		m, err := hammerBAR(fn, rng)
		n += m
		fn.close()
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func hammerBAR(fn *function, rng *rng) (int, error) {
	if err := unbind(fn.dir); err != nil {
		return 0, err
	}
	b, err := mapBAR(fn)
	if err != nil {
		return 0, err
	}
	defer b.unmap()
	if err := b.reset(); err != nil {
		return 0, err
	}
	// Every offset and width of the first 256 bytes of each page, where
	// the registers are, and a sample of the rest.
	n := 0
	size := uint64(len(b.w.b))
	for off := uint64(0); off < size; off++ {
		in := off % pageSize
		if in >= 0x100 && in%0x40 != 0 {
			continue
		}
		for _, width := range []int{1, 2, 4, 8} {
			if off%uint64(width) != 0 || off+uint64(width) > size || in >= 0x100 && width != 1<<(off/0x40%4) {
				continue
			}
			b.w.read(off, width)
			b.w.write(off, width, rng.u64())
			n += 2
		}
	}
	// Accesses that straddle the structures' pages.
	for page := uint64(pageSize); page < size; page += pageSize {
		for _, width := range []int{2, 4, 8} {
			b.w.read(page-1, width)
			b.w.write(page-1, width, rng.u64())
			n += 2
		}
	}
	guest.Report("bar", fmt.Sprintf("%s:status=%#x", fn.name(), b.status()))
	if err := b.reset(); err != nil {
		return n, err
	}
	m, err := signalMSIX(fn, b, 50)
	return n + m, err
}

// MSI-X capability registers and the message the signals phase uses:
// fixed delivery of vector 0xdf to APIC 0, a vector Linux leaves free and
// acknowledges if it arrives anyway ("No irq handler for vector").
const (
	msixControl      = 2
	msixTable        = 4
	msixPBA          = 8
	msixEnable       = 1 << 15
	msixFunctionMask = 1 << 14
	msiAddress       = 0xfee00000
	msiData          = 0xdf
)

// signalMSIX enables MSI-X with a harmless message in every entry, points
// the configuration-change vector at entry 0 and breaks the device n
// times: with the function masked the interrupt must wait in the PBA,
// unmasking delivers it, and every round rewrites the message so the VMM
// re-routes it. "msix=FUNCTION:signals=N pending=P delivered=D".
func signalMSIX(fn *function, b *bar, n int) (int, error) {
	cfg, err := fn.snapshot()
	if err != nil {
		return 0, err
	}
	caps := capabilities(cfg, capMSIX)
	if len(caps) == 0 {
		return 0, fmt.Errorf("%s: no MSI-X capability", fn.name())
	}
	c := int64(caps[0])
	vectors := int(binary.LittleEndian.Uint16(cfg[c+msixControl:])&0x7ff) + 1
	table := uint64(binary.LittleEndian.Uint32(cfg[c+msixTable:]) &^ 7)
	pba := uint64(binary.LittleEndian.Uint32(cfg[c+msixPBA:]) &^ 7)
	accesses := 0
	control := func(v uint32) error {
		accesses++
		return fn.write(c+msixControl, 2, v)
	}
	if err := control(msixEnable | msixFunctionMask); err != nil {
		return accesses, err
	}
	for v := 0; v < vectors; v++ {
		e := table + 16*uint64(v)
		b.w.write(e, 4, msiAddress)
		b.w.write(e+4, 4, 0)
		b.w.write(e+8, 4, msiData)
		b.w.write(e+12, 4, 0) // unmasked
		accesses += 4
	}
	pending, delivered := 0, 0
	for i := 0; i < n; i++ {
		b.w.write(table+8, 4, msiData|uint64(i%2)<<14) // level bit flips: a new message to route
		b.w.write(b.common+ccConfigMSIXVector, 2, 0)
		// DRIVER_OK without FEATURES_OK: the device needs a reset and
		// says so with a configuration change interrupt.
		b.w.write(b.common+ccDeviceStatus, 1, statusAcknowledge|statusDriver|statusDriverOK)
		if b.w.read(pba, 8)&1 != 0 {
			pending++
		}
		if err := control(msixEnable); err != nil {
			return accesses, err
		}
		if b.w.read(pba, 8)&1 == 0 {
			delivered++
		}
		if err := control(msixEnable | msixFunctionMask); err != nil {
			return accesses, err
		}
		if err := b.reset(); err != nil {
			return accesses, err
		}
		accesses += 7
	}
	if err := control(0); err != nil {
		return accesses, err
	}
	guest.Report("msix", fmt.Sprintf("%s:signals=%d pending=%d delivered=%d", fn.name(), n, pending, delivered))
	return accesses, nil
}

// rebind gives the attacked functions back to virtio-pci and checks that
// the attacked disk reads its pattern again: the device model survived.
func (h *hostile) rebind() (int, error) {
	for _, t := range h.targets() {
		if err := bind(t); err != nil && !errors.Is(err, unix.EBUSY) {
			return 0, fmt.Errorf("binding %s: %w", filepath.Base(t), err)
		}
	}
	name, err := waitDiskOn(h.attackFn, diskWait)
	if err != nil {
		return 0, err
	}
	return 0, h.verifyAs(name, h.attack, "recovered")
}

// waitDiskOn waits for a block device on the function and returns its name.
func waitDiskOn(fn string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		m, _ := filepath.Glob(fn + "/virtio*/block/vd*")
		if len(m) > 0 {
			name := filepath.Base(m[0])
			if _, err := os.Stat("/dev/" + name); err == nil {
				return name, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no disk on %s after %s", filepath.Base(fn), limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *hostile) verify(disk, key string) error { return h.verifyAs(disk, disk, key) }

// verifyAs reads disk with O_DIRECT and compares it with the pattern of
// the disk originally named orig: "KEY=ORIG:ok" or "KEY=ORIG:mismatch at N".
func (h *hostile) verifyAs(disk, orig, key string) error {
	at, err := verifyPattern("/dev/"+disk, h.a.seed(orig), int64(h.a.num("gvmm.mib", 16))*mib)
	if err != nil {
		return err
	}
	if at < 0 {
		guest.Report(key, orig+":ok")
	} else {
		guest.Report(key, fmt.Sprintf("%s:mismatch at %d", orig, at))
	}
	return nil
}
