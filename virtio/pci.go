package virtio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/gvmm-dev/gvmm/devices/pci"
	"github.com/gvmm-dev/gvmm/internal/ratelog"
	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// Layout of the function's single BAR: every structure in its own page,
// so the MSI-X table and PBA share no page with other registers.
const (
	PCIBar          = 0 // the BAR holding every virtio structure
	barSize         = 0x8000
	pageSize        = 0x1000
	commonOffset    = 0x0000
	isrOffset       = 0x1000
	deviceCfgOffset = 0x2000
	notifyOffset    = 0x3000
	msixTableOffset = 0x4000
	msixPBAOffset   = 0x5000
	// NotifyOffMultiplier spaces the queues' notify addresses so each
	// can have its own ioeventfd without data matching.
	NotifyOffMultiplier = 4
	// MaxQueues keeps one MSI-X vector per queue plus one for
	// configuration changes within a one-page table.
	MaxQueues = pageSize/pci.MSIXEntrySize - 1
)

// NoVector is VIRTIO_MSI_NO_VECTOR.
const NoVector = 0xffff

// PCI identity of a modern virtio function (spec 4.1.2).
const (
	pciVendorVirtio   = 0x1af4
	pciDeviceIDBase   = 0x1040
	pciRevision       = 1
	pciSubsystemID    = 0x1100 // >= 0x40 keeps legacy drivers away
	pciClassStorage   = 0x018000
	pciClassUndefined = 0xff0000
)

// Virtio PCI capability (struct virtio_pci_cap) cfg_type values and
// field offsets from the capability's ID byte.
const (
	capVendor    = 0x09
	capCommon    = 1
	capNotify    = 2
	capISR       = 3
	capDevice    = 4
	capPCICfg    = 5
	capLen       = 16 // without type-specific extra fields
	capBarOff    = 4
	capOffsetOff = 8
	capLengthOff = 12
	capExtraOff  = 16
	capExtraLen  = 4
)

// Common configuration (struct virtio_pci_common_cfg) offsets.
const (
	commonDeviceFeatureSelect = 0x00
	commonDeviceFeature       = 0x04
	commonDriverFeatureSelect = 0x08
	commonDriverFeature       = 0x0c
	commonConfigMSIXVector    = 0x10
	commonNumQueues           = 0x12
	commonDeviceStatus        = 0x14
	commonConfigGeneration    = 0x15
	commonQueueSelect         = 0x16
	commonQueueSize           = 0x18
	commonQueueMSIXVector     = 0x1a
	commonQueueEnable         = 0x1c
	commonQueueNotifyOff      = 0x1e
	commonQueueDesc           = 0x20
	commonQueueDriver         = 0x28
	commonQueueDevice         = 0x30
	commonCfgLen              = 0x38
)

// ISR status bits.
const (
	isrQueue  = 1
	isrConfig = 2
)

// PCIOptions are the machine resources a virtio PCI function needs.
type PCIOptions struct {
	Mem *memory.Memory
	// MSI delivers the function's MSI-X vectors: vector i < NumQueues()
	// may serve queue i, vector NumQueues() configuration changes, as
	// the driver chooses.
	MSI pci.MSIRouter
	Log *slog.Logger
}

type queueConfig struct {
	size                 uint16
	enabled              bool
	desc, driver, device uint64
	q                    *queue.Queue
}

// workers are the running queue goroutines of an activated device.
type workers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// PCIDevice is a virtio device exposed as a PCI function: configuration
// header and capabilities, one BAR with the common configuration, ISR,
// device configuration, notify region and MSI-X table.
type PCIDevice struct {
	dev      Device
	mem      *memory.Memory
	log      *slog.Logger
	glog     *ratelog.Logger // for what the guest provokes, which it may repeat without end
	cs       *pci.ConfigSpace
	msix     *pci.MSIX
	maxSizes []uint16
	offered  uint64
	// bells are the queues' doorbells: the machine hangs each on its
	// notify address as an ioeventfd, and the queue's worker waits on it.
	bells []*kvm.EventFD

	// Read and written by workers, so not guarded by mu: reset waits
	// for the workers with mu held.
	isr          atomic.Uint32
	needsReset   atomic.Bool
	generation   atomic.Uint32
	configVector atomic.Uint32
	queueVectors []atomic.Uint32

	mu               sync.Mutex
	status           uint8
	deviceFeatureSel uint32
	driverFeatureSel uint32
	driverFeatures   uint64
	queueSel         uint16
	queues           []queueConfig
	run              *workers
}

var _ pci.Device = (*PCIDevice)(nil)

// ErrDevice reports a device model the transport cannot expose.
var ErrDevice = errors.New("invalid virtio device")

// NewPCI wraps dev in a PCI function. Add it to the root complex with
// pci.Root.Add.
func NewPCI(dev Device, opts PCIOptions) (*PCIDevice, error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if opts.Mem == nil || opts.MSI == nil {
		return nil, errors.New("virtio PCI function needs guest memory and an MSI router")
	}
	sizes := dev.QueueMaxSizes()
	if len(sizes) == 0 || len(sizes) > MaxQueues {
		return nil, fmt.Errorf("%w: %d queues", ErrDevice, len(sizes))
	}
	for i, s := range sizes {
		if s == 0 || s&(s-1) != 0 || s > queue.MaxSize {
			return nil, fmt.Errorf("%w: queue %d maximum size %d", ErrDevice, i, s)
		}
	}
	p := &PCIDevice{
		dev:          dev,
		mem:          opts.Mem,
		log:          log.With("virtio", dev.Type()),
		maxSizes:     sizes,
		offered:      dev.Features() | transportFeatures,
		queueVectors: make([]atomic.Uint32, len(sizes)),
		queues:       make([]queueConfig, len(sizes)),
	}
	p.glog = ratelog.New(p.log)
	if err := p.newFunction(opts.MSI); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	p.resetState()
	return p, nil
}

// newFunction makes the queues' doorbells, the MSI-X table and the
// configuration space with its capabilities.
func (p *PCIDevice) newFunction(msi pci.MSIRouter) error {
	for range p.maxSizes {
		bell, err := kvm.NewBlockingEventFD()
		if err != nil {
			return fmt.Errorf("virtio: queue doorbell: %w", err)
		}
		p.bells = append(p.bells, bell)
	}
	var err error
	if p.msix, err = pci.NewMSIX(len(p.maxSizes)+1, msi, p.log); err != nil {
		return err
	}
	class := uint32(pciClassUndefined)
	if p.dev.Type() == DeviceBlock {
		class = pciClassStorage
	}
	p.cs, err = pci.NewConfigSpace(pci.Header{
		VendorID:          pciVendorVirtio,
		DeviceID:          pciDeviceIDBase + uint16(p.dev.Type()),
		Revision:          pciRevision,
		Class:             class,
		SubsystemVendorID: pciVendorVirtio,
		SubsystemID:       pciSubsystemID,
		BARs:              [pci.NumBARs]pci.BAR{PCIBar: {Size: barSize, Kind: pci.BARMem64}},
	})
	if err != nil {
		return err
	}
	return p.addCapabilities()
}

// Close releases the queues' doorbells; the device must be reset and
// the doorbells no longer registered as ioeventfds.
func (p *PCIDevice) Close() error {
	var errs []error
	for _, b := range p.bells {
		errs = append(errs, b.Close())
	}
	return errors.Join(errs...)
}

func (p *PCIDevice) addCapabilities() error {
	msixCap, err := p.msix.Capability(PCIBar, msixTableOffset, msixPBAOffset)
	if err != nil {
		return err
	}
	multiplier := binary.LittleEndian.AppendUint32(nil, NotifyOffMultiplier)
	caps := []pci.Capability{
		msixCap,
		virtioCap(capCommon, commonOffset, commonCfgLen, nil),
		virtioCap(capNotify, notifyOffset, uint32(len(p.maxSizes))*NotifyOffMultiplier, multiplier),
		virtioCap(capISR, isrOffset, 1, nil),
		virtioCap(capDevice, deviceCfgOffset, pageSize, nil),
		p.pciCfgCap(),
	}
	for _, c := range caps {
		if _, err := p.cs.AddCapability(c); err != nil {
			return err
		}
	}
	return nil
}

// virtioCap builds a struct virtio_pci_cap; extra follows it.
func virtioCap(cfgType uint8, offset, length uint32, extra []byte) pci.Capability {
	regs := make([]byte, capLen-2, capLen-2+len(extra))
	regs[0] = byte(capLen + len(extra))
	regs[1] = cfgType
	regs[capBarOff-2] = PCIBar
	binary.LittleEndian.PutUint32(regs[capOffsetOff-2:], offset)
	binary.LittleEndian.PutUint32(regs[capLengthOff-2:], length)
	return pci.Capability{ID: capVendor, Regs: append(regs, extra...)}
}

// pciCfgCap is VIRTIO_PCI_CAP_PCI_CFG: a window into the BAR through
// configuration space, whose bar, offset, length and data the driver
// writes.
func (p *PCIDevice) pciCfgCap() pci.Capability {
	c := virtioCap(capPCICfg, 0, 0, make([]byte, capExtraLen))
	c.Writable = make([]byte, len(c.Regs))
	c.Writable[capBarOff-2] = 0xff
	for i := capOffsetOff - 2; i < len(c.Writable); i++ {
		c.Writable[i] = 0xff
	}
	c.Handler = pciCfgWindow{p}
	return c
}

type pciCfgWindow struct{ p *PCIDevice }

// target returns the BAR range the window selects, if the driver set a
// valid one: BAR 0, length 1, 2 or 4, aligned, inside the BAR.
func (pciCfgWindow) target(regs []byte) (uint64, int, bool) {
	off := binary.LittleEndian.Uint32(regs[capOffsetOff:])
	n := binary.LittleEndian.Uint32(regs[capLengthOff:])
	if regs[capBarOff] != PCIBar || (n != 1 && n != 2 && n != 4) || off%n != 0 || uint64(off)+uint64(n) > barSize {
		return 0, 0, false
	}
	return uint64(off), int(n), true
}

func touchesData(off, n int) bool { return off+n > capExtraOff && off < capExtraOff+capExtraLen }

func (w pciCfgWindow) BeforeRead(regs []byte, off, n int) {
	if !touchesData(off, n) {
		return
	}
	data := regs[capExtraOff : capExtraOff+capExtraLen]
	clear(data)
	if at, size, ok := w.target(regs); ok {
		w.p.ReadBAR(PCIBar, at, data[:size])
	}
}

func (w pciCfgWindow) AfterWrite(regs []byte, off, n int) {
	if !touchesData(off, n) {
		return
	}
	if at, size, ok := w.target(regs); ok {
		w.p.WriteBAR(PCIBar, at, regs[capExtraOff:capExtraOff+size])
	}
}

// ConfigSpace implements pci.Device.
func (p *PCIDevice) ConfigSpace() *pci.ConfigSpace { return p.cs }

// NumQueues returns the number of queues.
func (p *PCIDevice) NumQueues() int { return len(p.maxSizes) }

// NotifyOffset returns where in BAR PCIBar the driver notifies queue q.
// The machine registers Doorbell(q) as an ioeventfd at the BAR's address
// plus this offset while the BAR is mapped.
func (p *PCIDevice) NotifyOffset(q int) uint64 {
	return notifyOffset + uint64(q)*NotifyOffMultiplier
}

// Doorbell returns queue q's doorbell, which the PCIDevice owns: a
// driver notification written to it by KVM wakes the queue's worker
// thread directly.
func (p *PCIDevice) Doorbell(q int) *kvm.EventFD { return p.bells[q] }

// Notify wakes queue q's worker. It never blocks: notifications that
// arrive while one is pending add up in the doorbell's count, and the
// worker drains its queue once for all of them.
func (p *PCIDevice) Notify(q int) {
	if q < 0 || q >= len(p.bells) {
		return
	}
	if err := p.bells[q].Signal(); err != nil && !errors.Is(err, os.ErrClosed) {
		p.log.Error("virtio queue doorbell", "queue", q, "err", err)
	}
}

// ReadBAR implements pci.Device.
func (p *PCIDevice) ReadBAR(bar int, off uint64, data []byte) {
	page, in, ok := split(bar, off, len(data))
	if !ok {
		fillOnes(data)
		return
	}
	switch page {
	case commonOffset:
		p.readCommon(in, data)
	case isrOffset:
		clear(data)
		if in == 0 {
			data[0] = byte(p.isr.Swap(0)) // reading acknowledges
		}
	case deviceCfgOffset:
		p.dev.ReadConfig(in, data)
	case notifyOffset:
		clear(data)
	case msixTableOffset:
		p.msix.ReadTable(in, data)
	case msixPBAOffset:
		p.msix.ReadPBA(in, data)
	default:
		fillOnes(data)
	}
}

// WriteBAR implements pci.Device.
func (p *PCIDevice) WriteBAR(bar int, off uint64, data []byte) {
	page, in, ok := split(bar, off, len(data))
	if !ok {
		return
	}
	switch page {
	case commonOffset:
		p.writeCommon(in, data)
	case deviceCfgOffset:
		p.dev.WriteConfig(in, data)
	case notifyOffset:
		p.Notify(int(in / NotifyOffMultiplier))
	case msixTableOffset:
		p.msix.WriteTable(in, data)
	}
}

// split decodes a BAR access into its page and the offset within it;
// accesses to other BARs or straddling pages are not decoded.
func split(bar int, off uint64, n int) (page, in uint64, ok bool) {
	if bar != PCIBar || off >= barSize || off%pageSize+uint64(n) > pageSize {
		return 0, 0, false
	}
	return off &^ (pageSize - 1), off % pageSize, true
}

func fillOnes(data []byte) {
	for i := range data {
		data[i] = 0xff
	}
}

func featureWord(features uint64, sel uint32) uint32 {
	if sel > 1 {
		return 0
	}
	return uint32(features >> (32 * sel))
}

func (p *PCIDevice) selected() *queueConfig {
	if int(p.queueSel) >= len(p.queues) {
		return nil
	}
	return &p.queues[p.queueSel]
}

func (p *PCIDevice) readCommon(off uint64, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var regs [commonCfgLen]byte
	le := binary.LittleEndian
	le.PutUint32(regs[commonDeviceFeatureSelect:], p.deviceFeatureSel)
	le.PutUint32(regs[commonDeviceFeature:], featureWord(p.offered, p.deviceFeatureSel))
	le.PutUint32(regs[commonDriverFeatureSelect:], p.driverFeatureSel)
	le.PutUint32(regs[commonDriverFeature:], featureWord(p.driverFeatures, p.driverFeatureSel))
	le.PutUint16(regs[commonConfigMSIXVector:], uint16(p.configVector.Load()))
	le.PutUint16(regs[commonNumQueues:], uint16(len(p.queues)))
	regs[commonDeviceStatus] = p.deviceStatus()
	regs[commonConfigGeneration] = byte(p.generation.Load())
	le.PutUint16(regs[commonQueueSelect:], p.queueSel)
	if q := p.selected(); q != nil {
		le.PutUint16(regs[commonQueueSize:], q.size)
		le.PutUint16(regs[commonQueueMSIXVector:], uint16(p.queueVectors[p.queueSel].Load()))
		if q.enabled {
			le.PutUint16(regs[commonQueueEnable:], 1)
		}
		le.PutUint16(regs[commonQueueNotifyOff:], p.queueSel)
		le.PutUint64(regs[commonQueueDesc:], q.desc)
		le.PutUint64(regs[commonQueueDriver:], q.driver)
		le.PutUint64(regs[commonQueueDevice:], q.device)
	}
	ReadConfigBytes(regs[:], off, data)
}

func (p *PCIDevice) deviceStatus() uint8 {
	if p.needsReset.Load() {
		return p.status | StatusNeedsReset
	}
	return p.status
}

// writeCommon applies a write to the common configuration. The driver
// must use each field's natural width (spec 4.1.3.1), 64-bit fields also
// as two 32-bit halves; other writes are ignored.
func (p *PCIDevice) writeCommon(off uint64, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b [8]byte
	copy(b[:], data)
	v := binary.LittleEndian.Uint64(b[:])
	w := len(data)
	switch {
	case off == commonDeviceFeatureSelect && w == 4:
		p.deviceFeatureSel = uint32(v)
	case off == commonDriverFeatureSelect && w == 4:
		p.driverFeatureSel = uint32(v)
	case off == commonDriverFeature && w == 4:
		p.setDriverFeatures(uint32(v))
	case off == commonConfigMSIXVector && w == 2:
		p.configVector.Store(p.vector(uint16(v)))
	case off == commonDeviceStatus && w == 1:
		p.setStatus(uint8(v))
	case off == commonQueueSelect && w == 2:
		p.queueSel = uint16(v)
	case off == commonQueueMSIXVector && w == 2:
		if p.selected() != nil {
			p.queueVectors[p.queueSel].Store(p.vector(uint16(v)))
		}
	case off == commonQueueEnable && w == 2:
		if v == 1 { // writing 0 is forbidden to the driver and ignored
			p.enableQueue()
		}
	case off == commonQueueSize && w == 2:
		if q := p.configurable(); q != nil {
			q.size = uint16(v)
		}
	case off >= commonQueueDesc && off < commonCfgLen && (w == 8 && off%8 == 0 || w == 4 && off%4 == 0):
		if q := p.configurable(); q != nil {
			field := [...]*uint64{&q.desc, &q.driver, &q.device}[(off-commonQueueDesc)/8]
			shift := 8 * (off % 8)
			mask := uint64(1)<<(8*uint(w)) - 1
			if w == 8 {
				mask = ^uint64(0)
			}
			*field = *field&^(mask<<shift) | (v&mask)<<shift
		}
	default:
		p.glog.Debug("ignored common configuration write", "offset", off, "width", w)
	}
}

// configurable returns the selected queue if its configuration may still
// change: it exists and is not enabled.
func (p *PCIDevice) configurable() *queueConfig {
	q := p.selected()
	if q == nil || q.enabled {
		return nil
	}
	return q
}

// vector validates an MSI-X vector the driver maps an event to; an
// impossible mapping reads back as NoVector (spec 4.1.5.1.2).
func (p *PCIDevice) vector(v uint16) uint32 {
	if v != NoVector && int(v) >= p.msix.Vectors() {
		return NoVector
	}
	return uint32(v)
}

func (p *PCIDevice) setDriverFeatures(v uint32) {
	if p.status&StatusFeaturesOK != 0 || p.driverFeatureSel > 1 {
		return // fixed after FEATURES_OK; no feature bits above 63
	}
	shift := 32 * p.driverFeatureSel
	p.driverFeatures = p.driverFeatures&^(0xffffffff<<shift) | uint64(v)<<shift
}

// setStatus runs the device status state machine (spec 2.1, 3.1).
func (p *PCIDevice) setStatus(v uint8) {
	if v == 0 {
		p.reset()
		return
	}
	v &^= StatusNeedsReset // the device's bit, not the driver's
	if v&p.status != p.status {
		p.glog.Warn("driver cleared device status bits without a reset", "old", p.status, "new", v)
		return
	}
	added := v &^ p.status
	if added&StatusFeaturesOK != 0 {
		if err := p.checkFeatures(); err != nil {
			p.glog.Warn("feature negotiation failed", "err", err)
			v &^= StatusFeaturesOK // the driver reads back and gives up
		}
	}
	if added&StatusDriverOK != 0 {
		if err := p.activate(v); err != nil {
			p.status = v
			p.broken(err, true)
			return
		}
	}
	p.status = v
}

func (p *PCIDevice) checkFeatures() error {
	if extra := p.driverFeatures &^ p.offered; extra != 0 {
		return fmt.Errorf("driver accepted features %#x that were not offered", extra)
	}
	if p.driverFeatures&FeatureVersion1 == 0 {
		return errors.New("driver did not accept VIRTIO_F_VERSION_1")
	}
	return nil
}

// enableQueue validates the selected queue, once, as the driver enables it.
func (p *PCIDevice) enableQueue() {
	q := p.configurable()
	if q == nil {
		return
	}
	if p.status&StatusFeaturesOK == 0 || p.status&StatusDriverOK != 0 {
		p.broken(fmt.Errorf("queue %d enabled outside queue setup (status %#x)", p.queueSel, p.status), p.status&StatusDriverOK != 0)
		return
	}
	cfg := queue.Config{
		Size:      q.size,
		MaxSize:   p.maxSizes[p.queueSel],
		DescTable: memory.GuestAddress(q.desc),
		AvailRing: memory.GuestAddress(q.driver),
		UsedRing:  memory.GuestAddress(q.device),
		EventIdx:  p.driverFeatures&FeatureEventIdx != 0,
		Indirect:  p.driverFeatures&FeatureIndirectDesc != 0,
	}
	vq, err := queue.New(p.mem, cfg, queueInterrupt{p, int(p.queueSel)})
	if err != nil {
		p.broken(fmt.Errorf("queue %d: %w", p.queueSel, err), false)
		return
	}
	q.q, q.enabled = vq, true
}

// activate hands the device its queues and starts one worker per
// enabled queue. Called with mu held; status is the new status.
func (p *PCIDevice) activate(status uint8) error {
	switch {
	case status&StatusFeaturesOK == 0:
		return errors.New("DRIVER_OK without FEATURES_OK")
	case p.needsReset.Load():
		return errors.New("DRIVER_OK on a device that needs reset")
	}
	qs := make([]*queue.Queue, len(p.queues))
	for i := range p.queues {
		qs[i] = p.queues[i].q
	}
	err := p.dev.Activate(Activation{Features: p.driverFeatures, Mem: p.mem, Queues: qs, ConfigChanged: configInterrupt{p}, Kick: p.Notify})
	if err != nil {
		return fmt.Errorf("activate: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.run = &workers{cancel: cancel}
	for i, q := range qs {
		if q == nil {
			continue
		}
		p.run.wg.Go(func() { p.worker(ctx, i) })
		p.Notify(i) // pick up chains made available before DRIVER_OK
	}
	return nil
}

// worker serves queue i on the thread its doorbell wakes: it waits in
// read(2) on the doorbell, which Go accounts as a system call, so the
// thread keeps no scheduler P while the queue is idle, and the wake-up
// is the kernel's alone. Process then completes the queue's requests and
// raises the interrupt through the irqfd on this same thread: a guest
// notification costs one thread wake-up, not a poller wake-up plus a
// goroutine handoff.
func (p *PCIDevice) worker(ctx context.Context, i int) {
	for {
		if _, err := p.bells[i].Wait(); err != nil {
			p.log.Error("virtio queue doorbell: the queue stops", "queue", i, "err", err)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if err := p.dev.Process(ctx, i); err != nil {
			p.broken(fmt.Errorf("queue %d: %w", i, err), true)
			return
		}
	}
}

// broken marks the device NEEDS_RESET and, if the driver has set
// DRIVER_OK, tells it through a configuration change (spec 2.1.2). Workers
// call it too, so it touches only atomic state.
func (p *PCIDevice) broken(err error, driverOK bool) {
	p.glog.Warn("virtio device needs reset", "err", err)
	p.needsReset.Store(true)
	if driverOK {
		if err := (configInterrupt{p}).Trigger(); err != nil {
			p.log.Error("configuration change interrupt", "err", err)
		}
	}
}

// Reset stops the device's queue goroutines and returns it to the
// power-on state, as the machine does before the guest memory the queues
// point at goes away.
func (p *PCIDevice) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reset()
}

// reset stops the workers and returns to the power-on state; the driver
// reads device_status 0 only after all of it is done.
func (p *PCIDevice) reset() {
	if p.run != nil {
		p.run.cancel()
		for i := range p.bells {
			p.Notify(i) // out of its Wait, to see the cancel
		}
		p.run.wg.Wait()
		p.run = nil
	}
	p.dev.Reset()
	p.resetState()
}

func (p *PCIDevice) resetState() {
	p.status, p.deviceFeatureSel, p.driverFeatureSel, p.driverFeatures, p.queueSel = 0, 0, 0, 0, 0
	p.configVector.Store(NoVector)
	for i := range p.queues {
		p.queues[i] = queueConfig{size: p.maxSizes[i]}
		p.queueVectors[i].Store(NoVector)
	}
	p.isr.Store(0)
	p.needsReset.Store(false)
}

// queueInterrupt is a queue's used buffer notification.
type queueInterrupt struct {
	p *PCIDevice
	q int
}

func (i queueInterrupt) Trigger() error {
	i.p.isr.Or(isrQueue)
	return i.p.signal(i.p.queueVectors[i.q].Load())
}

// configInterrupt is the configuration change notification.
type configInterrupt struct{ p *PCIDevice }

func (i configInterrupt) Trigger() error {
	i.p.generation.Add(1)
	i.p.isr.Or(isrConfig)
	return i.p.signal(i.p.configVector.Load())
}

// signal raises an MSI-X vector. Without MSI-X the interrupt is dropped:
// this transport has no INTx line, and Linux always enables MSI-X.
func (p *PCIDevice) signal(vector uint32) error {
	if vector == NoVector {
		return nil
	}
	return p.msix.Signal(int(vector))
}
