package kvm

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// VCPU is a virtual CPU. Run, and the register accessors between runs,
// belong to one goroutine locked to its OS thread (runtime.LockOSThread):
// KVM ties a vCPU to the thread that runs it, and signals that stop it
// (see SetImmediateExit) target that thread. SetImmediateExit may be
// called from any goroutine.
type VCPU struct {
	fd  kvmFile
	id  uint32
	run []byte // the kvm_run mapping, VCPUMmapSize bytes

	mu     sync.Mutex // orders SetImmediateExit against Close's munmap
	closed bool
}

// ID is the id the vCPU was created with.
func (v *VCPU) ID() uint32 { return v.id }

// Close unmaps kvm_run and closes the vCPU fd. It must not race with Run:
// stop the vCPU's thread first.
func (v *VCPU) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return v.fd.Close() // reports the file as already closed
	}
	v.closed = true
	unmapErr := unix.Munmap(v.run)
	v.run = nil
	if err := v.fd.Close(); err != nil {
		return err
	}
	if unmapErr != nil {
		return fmt.Errorf("kvm: unmapping kvm_run of vCPU %d: %w", v.id, unmapErr)
	}
	return nil
}

// Run enters the guest until it exits to userspace and returns the
// decoded exit. If KVM_RUN is interrupted (a signal, or immediate_exit)
// or asks to be retried (EAGAIN, an AP waiting for SIPI), Run returns an Exit with Reason ExitInterrupted and no error; any other
// failure is an error. Slices in the Exit point into kvm_run and are
// valid until the next Run; data written to them for IO-in and MMIO-read
// exits is what the guest reads when the next Run resumes it.
func (v *VCPU) Run() (Exit, error) {
	if _, err := v.fd.ioctl(ioctlRun, 0); err != nil {
		// EAGAIN: an application processor waiting for INIT/SIPI woke
		// up without becoming runnable; KVM asks to be called again.
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			return Exit{Reason: ExitInterrupted}, nil
		}
		return Exit{}, err
	}
	return decodeExit(v.run)
}

// SetImmediateExit sets kvm_run.immediate_exit. While it is set, KVM_RUN
// returns at once with EINTR instead of entering the guest.
//
// To stop a vCPU that may be inside KVM_RUN, set it and then send a
// signal to the vCPU's thread (e.g. unix.Tgkill with SIGURG, which the Go
// runtime ignores): the signal kicks a running guest out, and
// immediate_exit catches the case where the signal lands just before the
// thread enters KVM_RUN. Run then returns ExitInterrupted; the vCPU
// thread clears the flag with SetImmediateExit(false) before running
// again. It is a no-op after Close.
func (v *VCPU) SetImmediateExit(on bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return
	}
	runView(v.run).setImmediateExit(on)
}

// Regs returns the general-purpose registers.
func (v *VCPU) Regs() (Regs, error) { return get[Regs](v.fd, ioctlGetRegs) }

// SetRegs sets the general-purpose registers.
func (v *VCPU) SetRegs(r Regs) error { return set(v.fd, ioctlSetRegs, r) }

// Sregs returns the segment and system registers.
func (v *VCPU) Sregs() (Sregs, error) { return get[Sregs](v.fd, ioctlGetSregs) }

// SetSregs sets the segment and system registers.
func (v *VCPU) SetSregs(s Sregs) error { return set(v.fd, ioctlSetSregs, s) }

// FPU returns the x87/SSE state.
func (v *VCPU) FPU() (FPU, error) { return get[FPU](v.fd, ioctlGetFPU) }

// SetFPU sets the x87/SSE state.
func (v *VCPU) SetFPU(f FPU) error { return set(v.fd, ioctlSetFPU, f) }

// LAPIC returns the in-kernel local APIC's registers.
func (v *VCPU) LAPIC() (LAPICState, error) { return get[LAPICState](v.fd, ioctlGetLAPIC) }

// SetLAPIC sets the in-kernel local APIC's registers.
func (v *VCPU) SetLAPIC(l LAPICState) error { return set(v.fd, ioctlSetLAPIC, l) }

// MPState returns the vCPU's multiprocessing state.
func (v *VCPU) MPState() (MPState, error) { return get[MPState](v.fd, ioctlGetMPState) }

// SetMPState sets the vCPU's multiprocessing state.
func (v *VCPU) SetMPState(s MPState) error { return set(v.fd, ioctlSetMPState, s) }

// SetCPUID sets what CPUID reports to the guest, usually derived from
// System.SupportedCPUID.
func (v *VCPU) SetCPUID(entries []CPUIDEntry) error {
	fa := newFlexArray[kvmCPUID2, CPUIDEntry](len(entries))
	fa.hdr.nent = uint32(len(entries))
	copy(fa.entries, entries)
	_, err := ioctlPtr(v.fd, ioctlSetCPUID2, fa.hdr)
	return err
}

// MSRs reads the given MSRs. If the kernel rejects one, it returns an
// *MSRError naming it.
func (v *VCPU) MSRs(indices []uint32) ([]MSREntry, error) {
	entries := make([]MSREntry, len(indices))
	for i, idx := range indices {
		entries[i].Index = idx
	}
	return v.msrs(ioctlGetMSRs, entries)
}

// SetMSRs writes the given MSRs. If the kernel rejects one, it returns an
// *MSRError naming it; the ones before it have been written.
func (v *VCPU) SetMSRs(entries []MSREntry) error {
	_, err := v.msrs(ioctlSetMSRs, entries)
	return err
}

// msrs issues KVM_GET_MSRS or KVM_SET_MSRS, which return how many entries
// they processed and stop at the first MSR they refuse.
func (v *VCPU) msrs(r request, entries []MSREntry) ([]MSREntry, error) {
	fa := newFlexArray[kvmMSRs, MSREntry](len(entries))
	fa.hdr.nmsrs = uint32(len(entries))
	copy(fa.entries, entries)
	n, err := ioctlPtr(v.fd, r, fa.hdr)
	if err != nil {
		return nil, err
	}
	if n < len(entries) {
		return nil, &MSRError{Op: r.name, Index: entries[n].Index, Processed: n, Requested: len(entries)}
	}
	return fa.entries, nil
}

// XCRs returns the extended control registers.
func (v *VCPU) XCRs() (XCRs, error) { return get[XCRs](v.fd, ioctlGetXCRs) }

// SetXCRs sets the extended control registers.
func (v *VCPU) SetXCRs(x XCRs) error { return set(v.fd, ioctlSetXCRs, x) }

// DebugRegs returns the debug registers.
func (v *VCPU) DebugRegs() (DebugRegs, error) { return get[DebugRegs](v.fd, ioctlGetDebug) }

// SetDebugRegs sets the debug registers.
func (v *VCPU) SetDebugRegs(d DebugRegs) error { return set(v.fd, ioctlSetDebug, d) }

// Events returns the pending and injected events.
func (v *VCPU) Events() (VCPUEvents, error) { return get[VCPUEvents](v.fd, ioctlGetEvents) }

// SetEvents sets the pending and injected events; Flags say which
// optional fields to take.
func (v *VCPU) SetEvents(e VCPUEvents) error { return set(v.fd, ioctlSetEvents, e) }

// TSCKHz returns the vCPU's TSC frequency (CapGetTSCKHz).
func (v *VCPU) TSCKHz() (uint32, error) {
	n, err := v.fd.ioctl(ioctlGetTSCKHz, 0)
	return uint32(n), err
}

// SetTSCKHz makes the guest's TSC run at khz (CapTSCControl), scaled by
// the CPU when the host's runs at another rate.
func (v *VCPU) SetTSCKHz(khz uint32) error {
	_, err := v.fd.ioctl(ioctlSetTSCKHz, uintptr(khz))
	return err
}

// The vCPU attribute that holds the TSC offset
// (arch/x86/include/uapi/asm/kvm.h).
const (
	vcpuTSCCtrl   = 0 // KVM_VCPU_TSC_CTRL, the group
	vcpuTSCOffset = 0 // KVM_VCPU_TSC_OFFSET
)

// HasTSCOffset reports whether KVM lets userspace read and set the vCPU's
// TSC offset (Linux 5.16 and later). Older kernels have no vCPU
// attributes on x86 and answer EINVAL; ENXIO is an unknown attribute.
func (v *VCPU) HasTSCOffset() (bool, error) {
	a := kvmDeviceAttr{group: vcpuTSCCtrl, attr: vcpuTSCOffset}
	_, err := ioctlPtr(v.fd, ioctlHasDeviceAttr, &a)
	if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
		return false, nil
	}
	return err == nil, err
}

// TSCOffset returns what KVM adds to the host's TSC, scaled to the vCPU's
// rate, to make the guest's: guest TSC = scaled host TSC + offset
// (KVM_VCPU_TSC_OFFSET; HasTSCOffset says whether KVM has it).
func (v *VCPU) TSCOffset() (uint64, error) {
	return ioctlAttr(v.fd, ioctlGetDeviceAttr, vcpuTSCCtrl, vcpuTSCOffset, 0)
}

// SetTSCOffset sets the vCPU's TSC offset (see TSCOffset). KVM treats it
// as a TSC write: vCPUs given the same offset are synchronised.
func (v *VCPU) SetTSCOffset(off uint64) error {
	_, err := ioctlAttr(v.fd, ioctlSetDeviceAttr, vcpuTSCCtrl, vcpuTSCOffset, off)
	return err
}

// ReadableMSRs reads those of indices the vCPU supports, dropping the
// ones KVM refuses to read. KVM_GET_MSR_INDEX_LIST lists what the host
// supports; a vCPU whose CPUID lacks a feature refuses that feature's
// MSRs, so the list is filtered per vCPU.
func (v *VCPU) ReadableMSRs(indices []uint32) ([]MSREntry, error) {
	left := append([]uint32(nil), indices...)
	for {
		entries, err := v.MSRs(left)
		var merr *MSRError
		if !errors.As(err, &merr) {
			return entries, err
		}
		// KVM stopped at entry merr.Processed: drop it and read again.
		left = append(left[:merr.Processed], left[merr.Processed+1:]...)
	}
}
