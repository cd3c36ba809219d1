package kvm

// Mirrors of the kernel structs that carry VM and vCPU state for
// snapshots (arch/x86/include/uapi/asm/kvm.h). Like structs.go, each is
// checked against the kernel layout in layout_unsafe_test.go.

// XCR mirrors struct kvm_xcr: one extended control register.
type XCR struct {
	XCR   uint32
	_     uint32
	Value uint64
}

// maxXCRs is KVM_MAX_XCRS.
const maxXCRs = 16

// XCRs mirrors struct kvm_xcrs: the vCPU's extended control registers
// (XCR0 on today's CPUs).
type XCRs struct {
	NrXCRs uint32
	Flags  uint32
	XCRs   [maxXCRs]XCR
	_      [16]uint64
}

// DebugRegs mirrors struct kvm_debugregs.
type DebugRegs struct {
	DB    [4]uint64
	DR6   uint64
	DR7   uint64
	Flags uint64
	_     [9]uint64
}

// VCPUEvents mirrors struct kvm_vcpu_events: pending and injected
// exceptions, interrupts, NMIs and SMIs, and the interrupt shadow.
type VCPUEvents struct {
	Exception struct {
		Injected     uint8
		Nr           uint8
		HasErrorCode uint8
		Pending      uint8
		ErrorCode    uint32
	}
	Interrupt struct {
		Injected uint8
		Nr       uint8
		Soft     uint8
		Shadow   uint8
	}
	NMI struct {
		Injected uint8
		Pending  uint8
		Masked   uint8
		_        uint8
	}
	SIPIVector uint32
	// Flags say which optional fields are valid (KVM_VCPUEVENT_VALID_*);
	// KVM_GET_VCPU_EVENTS sets them and KVM_SET_VCPU_EVENTS honours them.
	Flags uint32
	SMI   struct {
		SMM          uint8
		Pending      uint8
		SMMInsideNMI uint8
		LatchedInit  uint8
	}
	TripleFault         uint8 // triple_fault.pending, first byte of the reserved union
	_                   [26]uint8
	ExceptionHasPayload uint8
	ExceptionPayload    uint64
}

// irqchipDataSize is the size of the union in struct kvm_irqchip, fixed
// by its char dummy[512] member.
const irqchipDataSize = 512

// IRQChipState mirrors struct kvm_irqchip: the state of one in-kernel
// interrupt controller. Data holds a struct kvm_pic_state for the PICs
// and a struct kvm_ioapic_state for the IOAPIC; it is kept as bytes
// because a snapshot only carries it from KVM_GET_IRQCHIP to
// KVM_SET_IRQCHIP, and KVM validates what it takes.
type IRQChipState struct {
	ChipID IRQChip
	_      uint32
	Data   [irqchipDataSize]byte
}

// PITChannelState mirrors struct kvm_pit_channel_state.
type PITChannelState struct {
	Count         uint32
	LatchedCount  uint16
	CountLatched  uint8
	StatusLatched uint8
	Status        uint8
	ReadState     uint8
	WriteState    uint8
	WriteLatch    uint8
	RWMode        uint8
	Mode          uint8
	BCD           uint8
	Gate          uint8
	CountLoadTime int64
}

// PITState2 mirrors struct kvm_pit_state2: the in-kernel i8254.
type PITState2 struct {
	Channels [3]PITChannelState
	Flags    uint32
	_        [9]uint32
}

// xsaveLegacySize is sizeof(struct kvm_xsave) without its flexible
// array: the buffer KVM_GET_XSAVE fills, and the least KVM_SET_XSAVE reads.
const xsaveLegacySize = 4096

// kvmXSave mirrors the fixed part of struct kvm_xsave; with
// KVM_GET_XSAVE2, __u32 extra[] follows it.
type kvmXSave struct {
	region [xsaveLegacySize / 4]uint32
}
