package machine

import (
	"errors"
	"fmt"
	"sync"

	"github.com/gvmm-dev/gvmm/devices/pci"
	"github.com/gvmm-dev/gvmm/internal/ratelog"
	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/machine/acpi/aml"
	"github.com/gvmm-dev/gvmm/virtio"
)

// PCI windows where BARs are placed: the 32-bit hole minus the ECAM
// area, and below the IOAPIC.
var pciWindows = []pci.Range{
	{Base: PCIMMIOStart, Size: PCIMMIOEnd - PCIMMIOStart},
	{Base: pciHighWindow, Size: IOAPICAddr - pciHighWindow},
}

// pciHighWindow is the second BAR window, past the 256 MiB that PCIe
// reserves for ECAM of all buses.
const pciHighWindow = 0xf0000000

// pciRootBridge describes bus 0 to the guest (DSDT \_SB.PCI0): its bus
// range, the I/O ports and MMIO windows it forwards.
func pciRootBridge() aml.Term {
	return aml.Device("PCI0",
		aml.Name("_HID", aml.EISAID("PNP0A08")),
		aml.Name("_CID", aml.EISAID("PNP0A03")),
		aml.Name("_UID", aml.Integer(0)),
		aml.Name("_SEG", aml.Integer(0)),
		aml.Name("_BBN", aml.Integer(0)),
		aml.Name("_CRS", aml.ResourceTemplate(
			aml.WordBusNumber(0, 0),
			aml.WordIO(0, pci.ConfigAddressPort-1),
			aml.IO(pci.ConfigAddressPort, pci.ConfigAddressPort, 1, pci.PortIOSize),
			aml.WordIO(pci.ConfigAddressPort+pci.PortIOSize, 0xffff),
			aml.DWordMemory(aml.NonCacheable, PCIMMIOStart, PCIMMIOEnd-1),
			aml.DWordMemory(aml.NonCacheable, pciHighWindow, IOAPICAddr-1),
		)),
	)
}

// gsiRoutes is the VM's GSI routing table: KVM's default routes to the
// PIC and IOAPIC, which setting a table replaces, plus one MSI route per
// MSI-X vector.
type gsiRoutes struct {
	vm *kvm.VM

	mu   sync.Mutex
	next uint32
	msi  map[uint32]kvm.IRQRoutingEntry
}

// Routes below ioapicPins are the irqchips'; MSI GSIs come after.
const (
	ioapicPins = 24
	picPins    = 8
	maxGSI     = 1024 // KVM_MAX_IRQ_ROUTES is larger; this bounds our table
)

func newGSIRoutes(vm *kvm.VM) *gsiRoutes {
	return &gsiRoutes{vm: vm, next: ioapicPins, msi: map[uint32]kvm.IRQRoutingEntry{}}
}

func (g *gsiRoutes) alloc() (uint32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.next >= maxGSI {
		return 0, errors.New("machine: out of GSIs for MSI-X vectors")
	}
	g.next++
	return g.next - 1, nil
}

func (g *gsiRoutes) setMSI(gsi uint32, addr uint64, data uint32) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.msi[gsi] = kvm.MSIRoute(gsi, addr, data)
	return g.commitLocked()
}

// commit installs the table; the machine does it once at boot, because
// KVM's default table routes the PIT (GSI 0) to IOAPIC pin 0, where the
// MADT says IRQ 0 is on pin 2.
func (g *gsiRoutes) commit() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.commitLocked()
}

func (g *gsiRoutes) commitLocked() error {
	entries := make([]kvm.IRQRoutingEntry, 0, ioapicPins+2*picPins+len(g.msi))
	for i := uint32(0); i < ioapicPins; i++ {
		if i < 2*picPins {
			chip := kvm.IRQChipPICMaster
			if i >= picPins {
				chip = kvm.IRQChipPICSlave
			}
			entries = append(entries, kvm.IRQChipRoute(i, chip, i%picPins))
		}
		switch i {
		case timerGSI:
			entries = append(entries, kvm.IRQChipRoute(i, kvm.IRQChipIOAPIC, timerIOAPICPin))
		case timerIOAPICPin:
			// Pin 2 belongs to the timer; ISA IRQ 2 is the PIC cascade.
		default:
			entries = append(entries, kvm.IRQChipRoute(i, kvm.IRQChipIOAPIC, i))
		}
	}
	for _, e := range g.msi {
		entries = append(entries, e)
	}
	return g.vm.SetGSIRouting(entries)
}

// The ISA timer's interrupt source override (MADT): IRQ 0 on IOAPIC pin 2.
const (
	timerGSI       = 0
	timerIOAPICPin = 2
)

// msiVectors delivers one PCI function's MSI-X vectors: vector i is an
// irqfd on its own GSI, so a device goroutine raises it with one write.
type msiVectors struct {
	routes *gsiRoutes
	gsis   []uint32
	fds    []*kvm.EventFD
}

var _ pci.MSIRouter = (*msiVectors)(nil)

func (b *bootedVM) newMSIVectors(n int) (*msiVectors, error) {
	v := &msiVectors{routes: b.gsi}
	for range n {
		gsi, err := b.gsi.alloc()
		if err != nil {
			return nil, err
		}
		ev, err := kvm.NewEventFD()
		if err != nil {
			return nil, err
		}
		b.closers = append(b.closers, ev.Close)
		if err := b.vm.IRQFD(ev, gsi); err != nil {
			return nil, err
		}
		v.gsis = append(v.gsis, gsi)
		v.fds = append(v.fds, ev)
	}
	return v, nil
}

func (v *msiVectors) Route(vector int, addr uint64, data uint32) error {
	if vector < 0 || vector >= len(v.gsis) {
		return fmt.Errorf("machine: MSI-X vector %d out of range", vector)
	}
	return v.routes.setMSI(v.gsis[vector], addr, data)
}

func (v *msiVectors) Trigger(vector int) error {
	if vector < 0 || vector >= len(v.fds) {
		return fmt.Errorf("machine: MSI-X vector %d out of range", vector)
	}
	return v.fds[vector].Signal()
}

// notifiers hangs the virtio queues' doorbells on their notify
// addresses as ioeventfds, so that a guest's queue notification wakes the
// queue's worker thread without stopping the vCPU.
type notifiers struct {
	b    *bootedVM
	mu   sync.Mutex
	on   map[notifyKey]*kvm.EventFD
	glog *ratelog.Logger // made on first use
}

type notifyKey struct {
	fn   *virtio.PCIDevice
	addr uint64
}

// notifyWidth is the width of the driver's notify write (a 16-bit queue
// index); other widths still reach the device through an MMIO exit.
const notifyWidth = 2

// barMapped follows the guest mapping virtio BARs: it runs on a vCPU
// thread with the root complex locked.
func (n *notifiers) barMapped(dev pci.Device, bar int, addr, _ uint64, mapped bool) {
	fn, ok := dev.(*virtio.PCIDevice)
	if !ok || bar != virtio.PCIBar {
		return
	}
	for q := range fn.NumQueues() {
		key := notifyKey{fn, addr + fn.NotifyOffset(q)}
		var err error
		if mapped {
			err = n.add(key, q)
		} else {
			err = n.remove(key)
		}
		if err != nil {
			n.warn("virtio notify eventfd", "addr", fmt.Sprintf("%#x", key.addr), "err", err)
		}
	}
}

// warn logs, rate-limited, a failure the guest can repeat at will: laying
// two BARs over each other, whose notify addresses then collide (EEXIST),
// and toggling decoding.
func (n *notifiers) warn(msg string, args ...any) {
	n.mu.Lock()
	if n.glog == nil {
		n.glog = ratelog.New(n.b.m.log)
	}
	l := n.glog
	n.mu.Unlock()
	l.Warn(msg, args...)
}

func (n *notifiers) add(key notifyKey, q int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, dup := n.on[key]; dup {
		return nil
	}
	bell := key.fn.Doorbell(q)
	if err := n.b.vm.IOEventFD(bell, notifyEvent(key)); err != nil {
		return err
	}
	n.on[key] = bell
	return nil
}

func notifyEvent(key notifyKey) kvm.IOEvent {
	return kvm.IOEvent{Space: kvm.SpaceMMIO, Addr: key.addr, Len: notifyWidth}
}

func (n *notifiers) remove(key notifyKey) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	bell, ok := n.on[key]
	if !ok {
		return nil
	}
	delete(n.on, key)
	return n.b.vm.DeassignIOEventFD(bell, notifyEvent(key))
}

// closeAll takes the doorbells off their addresses when the VM ends;
// their functions own and close them.
func (n *notifiers) closeAll() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for k, bell := range n.on {
		errs = append(errs, n.b.vm.DeassignIOEventFD(bell, notifyEvent(k)))
		delete(n.on, k)
	}
	return errors.Join(errs...)
}
