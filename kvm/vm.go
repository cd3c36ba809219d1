package kvm

import (
	"fmt"
	"sync"
)

// VM is a KVM virtual machine. Its methods may be called from any
// goroutine.
type VM struct {
	fd      kvmFile
	runSize int // VCPUMmapSize, for mapping each vCPU's kvm_run

	mu sync.Mutex
	// slots holds the host memory behind each memory slot, so it stays
	// reachable for as long as the kernel maps it into the guest.
	slots map[uint32][]byte
}

// Close closes the VM fd. The kernel keeps the VM alive until its vCPUs
// are closed too, and keeps mapping the slots' memory until then: close
// the vCPUs first and release guest memory last.
func (vm *VM) Close() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.slots = nil
	return vm.fd.Close()
}

// CheckExtension is System.CheckExtension asked of this VM, which can
// differ for per-VM capabilities (e.g. CapMaxVCPUs, CapNrMemslots).
func (vm *VM) CheckExtension(c Cap) (int, error) {
	return vm.fd.ioctl(ioctlCheckExtension, uintptr(c))
}

// SetUserMemoryRegion maps memory into the guest at guestPhys as the given
// slot, replacing the slot's previous mapping; an empty memory deletes
// the slot. The memory must be page-aligned and a whole number of pages
// (KVM checks); the VM keeps a reference to it until the slot is
// replaced or deleted, or the VM is closed.
func (vm *VM) SetUserMemoryRegion(slot uint32, flags MemFlags, guestPhys uint64, memory []byte) error {
	region := kvmUserspaceMemoryRegion{
		slot:          slot,
		flags:         flags,
		guestPhysAddr: guestPhys,
		memorySize:    uint64(len(memory)),
	}
	if len(memory) > 0 {
		region.userspaceAddr = sliceAddr(memory)
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if _, err := ioctlPtr(vm.fd, ioctlSetUserMemoryRegion, &region); err != nil {
		return err
	}
	if len(memory) == 0 {
		delete(vm.slots, slot)
	} else {
		vm.slots[slot] = memory
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC pair, IOAPIC and per-vCPU local
// APICs, with GSIs 0-15 routed to the PICs and 0-23 to the IOAPIC. It
// must come before CreateVCPU.
func (vm *VM) CreateIRQChip() error {
	_, err := vm.fd.ioctl(ioctlCreateIRQChip, 0)
	return err
}

// CreatePIT2 creates the in-kernel i8254 timer (after CreateIRQChip).
func (vm *VM) CreatePIT2(flags PITFlags) error {
	_, err := ioctlPtr(vm.fd, ioctlCreatePIT2, &kvmPITConfig{flags: flags})
	return err
}

// SetTSSAddr sets the guest-physical address of the three pages Intel
// hosts without unrestricted guest need to run real mode. The pages must
// be below 4 GiB and not used by the guest.
func (vm *VM) SetTSSAddr(addr uint64) error {
	_, err := vm.fd.ioctl(ioctlSetTSSAddr, uintptr(addr))
	return err
}

// SetIdentityMapAddr sets the guest-physical address of the page Intel
// hosts use for the real-mode identity page table. Call it before
// CreateVCPU; the page must not be used by the guest.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	_, err := ioctlPtr(vm.fd, ioctlSetIdentityMapAddr, &addr)
	return err
}

// SetIRQLine drives the in-kernel irqchip input irq (a GSI) to level.
func (vm *VM) SetIRQLine(irq uint32, level bool) error {
	l := kvmIRQLevel{irq: irq}
	if level {
		l.level = 1
	}
	_, err := ioctlPtr(vm.fd, ioctlIRQLine, &l)
	return err
}

// IRQFD makes every signal of ev inject an edge on gsi through the
// in-kernel irqchip, without a userspace round trip.
func (vm *VM) IRQFD(ev *EventFD, gsi uint32) error {
	return vm.irqfd(ev, gsi, 0)
}

// DeassignIRQFD undoes IRQFD(ev, gsi).
func (vm *VM) DeassignIRQFD(ev *EventFD, gsi uint32) error {
	return vm.irqfd(ev, gsi, irqfdFlagDeassign)
}

func (vm *VM) irqfd(ev *EventFD, gsi, flags uint32) error {
	return ev.withFD(func(fd int32) error {
		_, err := ioctlPtr(vm.fd, ioctlIRQFD, &kvmIRQFD{fd: uint32(fd), gsi: gsi, flags: flags})
		return err
	})
}

// IOEvent selects the guest writes an ioeventfd catches.
type IOEvent struct {
	Space AddressSpace
	Addr  uint64 // port or guest-physical address
	// Len is the write width to match: 1, 2, 4 or 8, or 0 for any width
	// (CapIOEventFDAnyLength; for MMIO, CapIOEventFDNoLength).
	Len uint32
	// If Match, only writes of exactly Data are caught; others exit to
	// userspace as usual.
	Match bool
	Data  uint64
}

// IOEventFD makes guest writes selected by io signal ev inside the
// kernel instead of exiting to userspace.
func (vm *VM) IOEventFD(ev *EventFD, io IOEvent) error {
	return vm.ioeventfd(ev, io, 0)
}

// DeassignIOEventFD undoes IOEventFD(ev, io); io must be the same.
func (vm *VM) DeassignIOEventFD(ev *EventFD, io IOEvent) error {
	return vm.ioeventfd(ev, io, ioeventfdFlagDeassign)
}

func (vm *VM) ioeventfd(ev *EventFD, io IOEvent, flags uint32) error {
	if io.Space == SpacePIO {
		flags |= ioeventfdFlagPIO
	}
	if io.Match {
		flags |= ioeventfdFlagDatamatch
	}
	return ev.withFD(func(fd int32) error {
		arg := kvmIOEventFD{datamatch: io.Data, addr: io.Addr, len: io.Len, fd: fd, flags: flags}
		_, err := ioctlPtr(vm.fd, ioctlIOEventFD, &arg)
		return err
	})
}

// IRQChipRoute routes gsi to pin of an in-kernel irqchip.
func IRQChipRoute(gsi uint32, chip IRQChip, pin uint32) IRQRoutingEntry {
	e := IRQRoutingEntry{GSI: gsi, Type: IRQRoutingIRQChip}
	*e.irqchip() = kvmIRQRoutingIRQChip{irqchip: chip, pin: pin}
	return e
}

// MSIRoute routes gsi to the MSI message (addr, data), as an MSI-X table
// entry programmed by the guest would send it.
func MSIRoute(gsi uint32, addr uint64, data uint32) IRQRoutingEntry {
	e := IRQRoutingEntry{GSI: gsi, Type: IRQRoutingMSI}
	*e.msi() = kvmIRQRoutingMSI{addressLo: uint32(addr), addressHi: uint32(addr >> 32), data: data}
	return e
}

// SetGSIRouting replaces the whole GSI routing table. The table
// CreateIRQChip installs is replaced too, so callers that add MSI routes
// include the irqchip routes for the legacy GSIs they still use.
func (vm *VM) SetGSIRouting(entries []IRQRoutingEntry) error {
	fa := newFlexArray[kvmIRQRouting, IRQRoutingEntry](len(entries))
	fa.hdr.nr = uint32(len(entries))
	copy(fa.entries, entries)
	_, err := ioctlPtr(vm.fd, ioctlSetGSIRouting, fa.hdr)
	return err
}

// SignalMSI injects the MSI message (addr, data). It reports false if
// the guest blocked the message (e.g. the target APIC masked it).
func (vm *VM) SignalMSI(addr uint64, data uint32) (delivered bool, err error) {
	msi := kvmMSI{addressLo: uint32(addr), addressHi: uint32(addr >> 32), data: data}
	n, err := ioctlPtr(vm.fd, ioctlSignalMSI, &msi)
	return n > 0, err
}

// Clock returns the VM's kvmclock.
func (vm *VM) Clock() (ClockData, error) {
	return get[ClockData](vm.fd, ioctlGetClock)
}

// SetClock sets the VM's kvmclock; the kernel uses Clock and, if the
// flags say so, Realtime to account for the time since it was sampled.
func (vm *VM) SetClock(c ClockData) error {
	return set(vm.fd, ioctlSetClock, c)
}

// CreateVCPU creates vCPU id (its initial APIC ID) and maps its kvm_run.
func (vm *VM) CreateVCPU(id uint32) (*VCPU, error) {
	fd, err := vm.fd.ioctl(ioctlCreateVCPU, uintptr(id))
	if err != nil {
		return nil, err
	}
	kf, err := fileFromFD(fd, fmt.Sprintf("kvm-vcpu:%d", id))
	if err != nil {
		return nil, err
	}
	run, err := kf.mmap(vm.runSize)
	if err != nil {
		kf.Close()
		return nil, fmt.Errorf("kvm: mapping kvm_run of vCPU %d: %w", id, err)
	}
	return &VCPU{fd: kf, id: id, run: run}, nil
}

// get issues a KVM_GET_* ioctl that fills a T.
func get[T any](k kvmFile, r request) (T, error) {
	var v T
	_, err := ioctlPtr(k, r, &v)
	return v, err
}

// set issues a KVM_SET_* ioctl that reads a T.
func set[T any](k kvmFile, r request, v T) error {
	_, err := ioctlPtr(k, r, &v)
	return err
}

// IRQChip returns the state of one in-kernel interrupt controller.
func (vm *VM) IRQChip(chip IRQChip) (IRQChipState, error) {
	s := IRQChipState{ChipID: chip}
	_, err := ioctlPtr(vm.fd, ioctlGetIRQChip, &s)
	return s, err
}

// SetIRQChip sets the state of the controller s.ChipID names.
func (vm *VM) SetIRQChip(s IRQChipState) error { return set(vm.fd, ioctlSetIRQChip, s) }

// PIT2 returns the in-kernel i8254's state.
func (vm *VM) PIT2() (PITState2, error) { return get[PITState2](vm.fd, ioctlGetPIT2) }

// SetPIT2 sets the in-kernel i8254's state.
func (vm *VM) SetPIT2(s PITState2) error { return set(vm.fd, ioctlSetPIT2, s) }
