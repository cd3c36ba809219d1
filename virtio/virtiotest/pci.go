package virtiotest

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/gvmm-dev/gvmm/devices/pci"
	"github.com/gvmm-dev/gvmm/memory"
)

var _ pci.MSIRouter = (*MSI)(nil)

// MSI is a pci.MSIRouter that records routes and counts triggers.
type MSI struct {
	mu     sync.Mutex
	routes map[int]uint32
	counts map[int]int
	fired  chan int
}

// NewMSI returns an MSI with nothing routed.
func NewMSI() *MSI {
	return &MSI{routes: map[int]uint32{}, counts: map[int]int{}, fired: make(chan int, 1024)}
}

// Route implements pci.MSIRouter.
func (m *MSI) Route(vector int, _ uint64, data uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.routes[vector] = data
	return nil
}

// Trigger implements pci.MSIRouter.
func (m *MSI) Trigger(vector int) error {
	m.mu.Lock()
	m.counts[vector]++
	m.mu.Unlock()
	select {
	case m.fired <- vector:
	default:
	}
	return nil
}

// Count returns how often vector fired.
func (m *MSI) Count(vector int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[vector]
}

// Wait waits up to d for vector to fire, discarding other vectors.
func (m *MSI) Wait(vector int, d time.Duration) bool {
	deadline := time.After(d)
	for {
		select {
		case v := <-m.fired:
			if v == vector {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// Virtio PCI capability layout, as a driver parses it.
const (
	capVendor   = 0x09
	capCommon   = 1
	capNotify   = 2
	capISR      = 3
	capDevice   = 4
	capPCICfg   = 5
	capIDMSIX   = 0x11
	msiAddress  = 0xfee00000
	commonSize  = 0x38
	queueRegion = 0x10000 // guest memory per queue's rings
)

// Common configuration offsets.
const (
	CommonDeviceFeatureSelect = 0x00
	CommonDeviceFeature       = 0x04
	CommonDriverFeatureSelect = 0x08
	CommonDriverFeature       = 0x0c
	CommonConfigMSIXVector    = 0x10
	CommonNumQueues           = 0x12
	CommonDeviceStatus        = 0x14
	CommonConfigGeneration    = 0x15
	CommonQueueSelect         = 0x16
	CommonQueueSize           = 0x18
	CommonQueueMSIXVector     = 0x1a
	CommonQueueEnable         = 0x1c
	CommonQueueNotifyOff      = 0x1e
	CommonQueueDesc           = 0x20
	CommonQueueDriver         = 0x28
	CommonQueueDevice         = 0x30
)

// Region is a structure a virtio capability points at.
type Region struct {
	Bar            int
	Offset, Length uint32
}

// PCIDriver plays the guest's virtio_pci driver against a function,
// locating every structure through the capability list like Linux does.
type PCIDriver struct {
	Dev                                    pci.Device
	Mem                                    *memory.Memory
	Common, Notify, ISR, DeviceCfg, PCICfg Region
	// PCICfgCap is the configuration-space offset of the PCI_CFG capability.
	PCICfgCap  uint64
	Multiplier uint32
	MSIXCap    uint64
	Queues     []*Driver
}

// NewPCIDriver parses dev's capabilities; queue rings will live in mem.
func NewPCIDriver(dev pci.Device, mem *memory.Memory) (*PCIDriver, error) {
	d := &PCIDriver{Dev: dev, Mem: mem}
	cs := dev.ConfigSpace()
	seen := map[uint64]bool{}
	for p := cfg(cs, 0x34, 1); p != 0; p = cfg(cs, p+1, 1) {
		if seen[p] || p < 0x40 || p > 0xfc {
			return nil, fmt.Errorf("capability list broken at %#x", p)
		}
		seen[p] = true
		switch cfg(cs, p, 1) {
		case capIDMSIX:
			d.MSIXCap = p
		case capVendor:
			r := Region{Bar: int(cfg(cs, p+4, 1)), Offset: uint32(cfg(cs, p+8, 4)), Length: uint32(cfg(cs, p+12, 4))}
			switch cfg(cs, p+3, 1) {
			case capCommon:
				d.Common = r
			case capNotify:
				d.Notify = r
				d.Multiplier = uint32(cfg(cs, p+16, 4))
			case capISR:
				d.ISR = r
			case capDevice:
				d.DeviceCfg = r
			case capPCICfg:
				d.PCICfg, d.PCICfgCap = r, p
			}
		}
	}
	if d.Common.Length < commonSize || d.Notify.Length < 2 || d.ISR.Length < 1 || d.MSIXCap == 0 || d.PCICfgCap == 0 {
		return nil, fmt.Errorf("missing or short virtio capabilities: %+v", d)
	}
	return d, nil
}

func cfg(cs *pci.ConfigSpace, off uint64, n int) uint64 {
	var b [8]byte
	cs.Read(off, b[:n])
	return binary.LittleEndian.Uint64(b[:])
}

func (d *PCIDriver) read(r Region, off uint64, n int) uint64 {
	var b [8]byte
	d.Dev.ReadBAR(r.Bar, uint64(r.Offset)+off, b[:n])
	return binary.LittleEndian.Uint64(b[:])
}

func (d *PCIDriver) write(r Region, off uint64, n int, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	d.Dev.WriteBAR(r.Bar, uint64(r.Offset)+off, b[:n])
}

// ReadCommon reads a common configuration field of width n.
func (d *PCIDriver) ReadCommon(off uint64, n int) uint64 { return d.read(d.Common, off, n) }

// WriteCommon writes a common configuration field of width n.
func (d *PCIDriver) WriteCommon(off uint64, n int, v uint64) { d.write(d.Common, off, n, v) }

// Status reads device_status.
func (d *PCIDriver) Status() uint8 { return uint8(d.ReadCommon(CommonDeviceStatus, 1)) }

// SetStatus writes device_status.
func (d *PCIDriver) SetStatus(s uint8) { d.WriteCommon(CommonDeviceStatus, 1, uint64(s)) }

// ReadISR reads (and so clears) the ISR status.
func (d *PCIDriver) ReadISR() uint8 { return uint8(d.read(d.ISR, 0, 1)) }

// ReadDeviceConfig reads n bytes of device configuration at off.
func (d *PCIDriver) ReadDeviceConfig(off uint64, n int) uint64 { return d.read(d.DeviceCfg, off, n) }

// DeviceFeatures reads the 64 offered feature bits.
func (d *PCIDriver) DeviceFeatures() uint64 {
	var f uint64
	for sel := uint64(0); sel < 2; sel++ {
		d.WriteCommon(CommonDeviceFeatureSelect, 4, sel)
		f |= d.ReadCommon(CommonDeviceFeature, 4) << (32 * sel)
	}
	return f
}

// SetDriverFeatures writes the 64 accepted feature bits.
func (d *PCIDriver) SetDriverFeatures(f uint64) {
	for sel := uint64(0); sel < 2; sel++ {
		d.WriteCommon(CommonDriverFeatureSelect, 4, sel)
		d.WriteCommon(CommonDriverFeature, 4, f>>(32*sel)&0xffffffff)
	}
}

// Negotiate resets the device, acknowledges it and accepts features. It
// returns whether the device kept FEATURES_OK.
func (d *PCIDriver) Negotiate(features uint64) bool {
	d.SetStatus(0)
	d.SetStatus(1)     // ACKNOWLEDGE
	d.SetStatus(1 | 2) // DRIVER
	d.SetDriverFeatures(features)
	d.SetStatus(1 | 2 | 8)
	return d.Status()&8 != 0
}

// EnableMSIX enables MSI-X and programs and unmasks vectors 0..n-1 with
// data equal to the vector number.
func (d *PCIDriver) EnableMSIX(n int) {
	cs := d.Dev.ConfigSpace()
	table := cfg(cs, d.MSIXCap+4, 4)
	bar, off := int(table&7), table&^7
	for v := 0; v < n; v++ {
		e := off + uint64(16*v)
		d.write(Region{Bar: bar}, e, 4, msiAddress)
		d.write(Region{Bar: bar}, e+4, 4, 0)
		d.write(Region{Bar: bar}, e+8, 4, uint64(v))
		d.write(Region{Bar: bar}, e+12, 4, 0)
	}
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], 1<<15)
	cs.Write(d.MSIXCap+2, b[:])
}

// SetupQueue programs queue q with size entries (0: the device maximum)
// at ringBase+q*64KiB, maps it to MSI-X vector q and enables it.
func (d *PCIDriver) SetupQueue(q int, size uint16, ringBase memory.GuestAddress) *Driver {
	d.WriteCommon(CommonQueueSelect, 2, uint64(q))
	if size == 0 {
		size = uint16(d.ReadCommon(CommonQueueSize, 2))
	}
	d.WriteCommon(CommonQueueSize, 2, uint64(size))
	drv := NewDriver(d.Mem, size, ringBase+memory.GuestAddress(q*queueRegion))
	d.WriteCommon(CommonQueueDesc, 4, uint64(drv.Desc))
	d.WriteCommon(CommonQueueDesc+4, 4, uint64(drv.Desc)>>32)
	d.WriteCommon(CommonQueueDriver, 8, uint64(drv.Avail))
	d.WriteCommon(CommonQueueDevice, 4, uint64(drv.UsedR))
	d.WriteCommon(CommonQueueDevice+4, 4, 0)
	d.WriteCommon(CommonQueueMSIXVector, 2, uint64(q))
	d.WriteCommon(CommonQueueEnable, 2, 1)
	for len(d.Queues) <= q {
		d.Queues = append(d.Queues, nil)
	}
	d.Queues[q] = drv
	return drv
}

// Start runs Linux's whole probe: negotiate features, enable MSI-X with
// one vector per queue plus the configuration vector, set up every queue
// and set DRIVER_OK. Queue rings go at ringBase.
func (d *PCIDriver) Start(features uint64, ringBase memory.GuestAddress) error {
	if !d.Negotiate(features) {
		return fmt.Errorf("device refused features %#x", features)
	}
	n := int(d.ReadCommon(CommonNumQueues, 2))
	d.EnableMSIX(n + 1)
	d.WriteCommon(CommonConfigMSIXVector, 2, uint64(n))
	for q := 0; q < n; q++ {
		d.SetupQueue(q, 0, ringBase)
	}
	d.SetStatus(1 | 2 | 8 | 4)
	if s := d.Status(); s != 1|2|8|4 {
		return fmt.Errorf("device status %#x after DRIVER_OK", s)
	}
	return nil
}

// Kick notifies queue q through the notify region.
func (d *PCIDriver) Kick(q int) {
	d.WriteCommon(CommonQueueSelect, 2, uint64(q))
	off := d.ReadCommon(CommonQueueNotifyOff, 2)
	d.write(d.Notify, off*uint64(d.Multiplier), 2, uint64(q))
}
