package kvm

import (
	"sync/atomic"
	"unsafe"
)

// kvmRunSize is sizeof(struct kvm_run); a vCPU mapping must be at least this big.
const kvmRunSize = unsafe.Sizeof(kvmRun{})

// runView is the kvm_run struct at the start of a vCPU mapping. The caller
// has checked that the mapping is at least kvmRunSize bytes (the
// vCPU mmap and the tests' buffers both are) and 8-byte aligned (mmap is
// page-aligned).
func runView(mapping []byte) *kvmRun {
	// The mapping is at least kvmRunSize bytes and aligned, so the cast stays inside it.
	return (*kvmRun)(unsafe.Pointer(unsafe.SliceData(mapping)))
}

// Views of the kvm_run exit union. Each member mirror is smaller than the
// union (checked by the layout test) and at most 8-byte aligned, as the
// union is.

func (r *kvmRun) io() *kvmRunIO {
	// The union holds the io member when exit_reason is KVM_EXIT_IO.
	return (*kvmRunIO)(unsafe.Pointer(&r.exit))
}

func (r *kvmRun) mmio() *kvmRunMMIO {
	// The union holds the mmio member when exit_reason is KVM_EXIT_MMIO.
	return (*kvmRunMMIO)(unsafe.Pointer(&r.exit))
}

func (r *kvmRun) failEntry() *kvmRunFailEntry {
	// The union holds fail_entry when exit_reason is KVM_EXIT_FAIL_ENTRY.
	return (*kvmRunFailEntry)(unsafe.Pointer(&r.exit))
}

func (r *kvmRun) internal() *kvmRunInternal {
	// The union holds internal when exit_reason is KVM_EXIT_INTERNAL_ERROR.
	return (*kvmRunInternal)(unsafe.Pointer(&r.exit))
}

func (r *kvmRun) systemEvent() *kvmRunSystemEvent {
	// The union holds system_event when exit_reason is KVM_EXIT_SYSTEM_EVENT.
	return (*kvmRunSystemEvent)(unsafe.Pointer(&r.exit))
}

func (r *kvmRun) debug() *kvmRunDebug {
	// The union holds debug when exit_reason is KVM_EXIT_DEBUG.
	return (*kvmRunDebug)(unsafe.Pointer(&r.exit))
}

func (r *kvmRun) hw() *kvmRunHW {
	// The union holds hw when exit_reason is KVM_EXIT_UNKNOWN.
	return (*kvmRunHW)(unsafe.Pointer(&r.exit))
}

// setImmediateExit stores immediate_exit while the vCPU thread may be
// inside KVM_RUN. Go has no atomic byte store, so it swaps the aligned
// word holding it (request_interrupt_window and padding share it) with
// a compare-and-swap that changes only this byte. x86 is little-endian.
func (r *kvmRun) setImmediateExit(on bool) {
	// The first 8 bytes of kvm_run are the two flag bytes and padding; the word at offset 0 is 4-byte aligned.
	word := (*uint32)(unsafe.Pointer(r))
	shift := 8 * unsafe.Offsetof(r.immediateExit)
	var v uint32
	if on {
		v = 1
	}
	for {
		old := atomic.LoadUint32(word)
		next := old&^(0xff<<shift) | v<<shift
		if atomic.CompareAndSwapUint32(word, old, next) {
			return
		}
	}
}

// Views of the kvm_irq_routing_entry union, which holds the member its
// Type names. Both members are smaller than the union and 4-byte aligned.

func (e *IRQRoutingEntry) irqchip() *kvmIRQRoutingIRQChip {
	// The irqchip member of the union, used when Type is IRQRoutingIRQChip.
	return (*kvmIRQRoutingIRQChip)(unsafe.Pointer(&e.u))
}

func (e *IRQRoutingEntry) msi() *kvmIRQRoutingMSI {
	// The msi member of the union, used when Type is IRQRoutingMSI.
	return (*kvmIRQRoutingMSI)(unsafe.Pointer(&e.u))
}
