package kvm

// Mirrors of the kernel's KVM structs (include/uapi/linux/kvm.h and
// arch/x86/include/uapi/asm/kvm.h). Field order, widths and explicit
// padding reproduce the C layout; layout_unsafe_test.go checks every size
// and offset against the kernel header. Exported mirrors are the values
// callers read and write; unexported ones are only ioctl arguments.

// Regs mirrors struct kvm_regs: the general-purpose registers.
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64
}

// Segment mirrors struct kvm_segment: a segment register with its hidden
// descriptor cache.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable mirrors struct kvm_dtable: a descriptor-table register (GDTR, IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// interruptBitmapWords is (KVM_NR_INTERRUPTS + 63) / 64.
const interruptBitmapWords = (256 + 63) / 64

// Sregs mirrors struct kvm_sregs: segment, control and system registers.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [interruptBitmapWords]uint64
}

// FPU mirrors struct kvm_fpu: the legacy x87/SSE state.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8 // abridged tag word
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// LAPICState mirrors struct kvm_lapic_state: the local APIC's register
// page (KVM_APIC_REG_SIZE bytes, registers at their architectural offsets).
type LAPICState struct {
	Regs [1024]byte
}

// CPUIDEntry mirrors struct kvm_cpuid_entry2: one CPUID leaf/subleaf.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    CPUIDFlags
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// kvmCPUID2 mirrors the header of struct kvm_cpuid2; CPUIDEntry values
// follow it in memory.
type kvmCPUID2 struct {
	nent uint32
	_    uint32
}

// MSREntry mirrors struct kvm_msr_entry: one model-specific register.
type MSREntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

// kvmMSRs mirrors the header of struct kvm_msrs; MSREntry values follow.
type kvmMSRs struct {
	nmsrs uint32
	_     uint32
}

// kvmMSRList mirrors the header of struct kvm_msr_list; __u32 indices follow.
type kvmMSRList struct {
	nmsrs uint32
}

// ClockData mirrors struct kvm_clock_data: the VM's kvmclock.
type ClockData struct {
	Clock    uint64 // nanoseconds
	Flags    ClockFlags
	_        uint32
	Realtime uint64 // host CLOCK_REALTIME when Clock was sampled, if ClockRealtime
	HostTSC  uint64 // host TSC when Clock was sampled, if ClockHostTSC
	_        [4]uint32
}

// kvmDeviceAttr mirrors struct kvm_device_attr: one attribute of a
// device, or of a vCPU (KVM_{GET,SET,HAS}_DEVICE_ATTR on its fd). addr
// is the userspace address of the attribute's value.
type kvmDeviceAttr struct {
	flags uint32
	group uint32
	attr  uint64
	addr  uint64
}

// kvmUserspaceMemoryRegion mirrors struct kvm_userspace_memory_region.
type kvmUserspaceMemoryRegion struct {
	slot          uint32
	flags         MemFlags
	guestPhysAddr uint64
	memorySize    uint64
	userspaceAddr uint64
}

// kvmPITConfig mirrors struct kvm_pit_config.
type kvmPITConfig struct {
	flags PITFlags
	_     [15]uint32
}

// kvmIRQLevel mirrors struct kvm_irq_level (irq is a union with the
// status KVM_IRQ_LINE_STATUS returns, which this package does not use).
type kvmIRQLevel struct {
	irq   uint32
	level uint32
}

// kvmIRQFD mirrors struct kvm_irqfd.
type kvmIRQFD struct {
	fd         uint32
	gsi        uint32
	flags      uint32
	resamplefd uint32
	_          [16]uint8
}

// kvmIOEventFD mirrors struct kvm_ioeventfd.
type kvmIOEventFD struct {
	datamatch uint64
	addr      uint64
	len       uint32
	fd        int32
	flags     uint32
	_         [36]uint8
}

// kvmMSI mirrors struct kvm_msi.
type kvmMSI struct {
	addressLo uint32
	addressHi uint32
	data      uint32
	flags     uint32
	devid     uint32
	_         [12]uint8
}

// kvmIRQRouting mirrors the header of struct kvm_irq_routing;
// IRQRoutingEntry values follow.
type kvmIRQRouting struct {
	nr    uint32
	flags uint32
}

// irqRoutingUnionSize is the size of the union u in kvm_irq_routing_entry,
// fixed by its __u32 pad[8] member.
const irqRoutingUnionSize = 32

// IRQRoutingEntry mirrors struct kvm_irq_routing_entry: one GSI's route.
// Build entries with IRQChipRoute or MSIRoute; the union is not exposed.
type IRQRoutingEntry struct {
	GSI   uint32
	Type  IRQRoutingType
	Flags uint32
	_     uint32
	u     [irqRoutingUnionSize]byte
}

// kvmIRQRoutingIRQChip mirrors struct kvm_irq_routing_irqchip, the
// IRQRoutingIRQChip member of the routing entry union.
type kvmIRQRoutingIRQChip struct {
	irqchip IRQChip
	pin     uint32
}

// kvmIRQRoutingMSI mirrors struct kvm_irq_routing_msi, the IRQRoutingMSI
// member of the routing entry union.
type kvmIRQRoutingMSI struct {
	addressLo uint32
	addressHi uint32
	data      uint32
	devid     uint32
}

// kvmRunExitSize is the size of the exit union in struct kvm_run, fixed by
// its char padding[256] member.
const kvmRunExitSize = 256

// kvmSyncRegsSize is the size of the union s (kvm_sync_regs) at the end of
// struct kvm_run, fixed by its char padding[SYNC_REGS_SIZE_BYTES] member.
const kvmSyncRegsSize = 2048

// kvmRun mirrors struct kvm_run, the page shared with the kernel through
// the vCPU mmap. The exit union is kept as bytes and viewed through the
// kvmRun* member mirrors below.
type kvmRun struct {
	requestInterruptWindow     uint8
	immediateExit              uint8
	_                          [6]uint8
	exitReason                 ExitReason
	readyForInterruptInjection uint8
	ifFlag                     uint8
	flags                      uint16
	cr8                        uint64
	apicBase                   uint64
	exit                       [kvmRunExitSize]byte
	kvmValidRegs               uint64
	kvmDirtyRegs               uint64
	s                          [kvmSyncRegsSize]byte
}

// kvmRunIO mirrors the io member of the kvm_run exit union (KVM_EXIT_IO).
type kvmRunIO struct {
	direction  IODirection
	size       uint8
	port       uint16
	count      uint32
	dataOffset uint64 // from the start of the kvm_run mapping
}

// kvmRunMMIO mirrors the mmio member of the kvm_run exit union (KVM_EXIT_MMIO).
type kvmRunMMIO struct {
	physAddr uint64
	data     [8]uint8
	len      uint32
	isWrite  uint8
}

// kvmRunFailEntry mirrors the fail_entry member (KVM_EXIT_FAIL_ENTRY).
type kvmRunFailEntry struct {
	hardwareEntryFailureReason uint64
	cpu                        uint32
}

// kvmRunDataWords is the length of the data arrays of the internal and
// system_event members.
const kvmRunDataWords = 16

// kvmRunInternal mirrors the internal member (KVM_EXIT_INTERNAL_ERROR).
type kvmRunInternal struct {
	suberror uint32
	ndata    uint32
	data     [kvmRunDataWords]uint64
}

// kvmRunSystemEvent mirrors the system_event member (KVM_EXIT_SYSTEM_EVENT).
// Kernels before 5.18 had a single flags word where data[0] now is, and
// zero in ndata.
type kvmRunSystemEvent struct {
	typ   SystemEventType
	ndata uint32
	data  [kvmRunDataWords]uint64
}

// kvmRunDebug mirrors the debug member (KVM_EXIT_DEBUG) with its x86
// struct kvm_debug_exit_arch.
type kvmRunDebug struct {
	exception uint32
	_         uint32
	pc        uint64
	dr6       uint64
	dr7       uint64
}

// kvmRunHW mirrors the hw member (KVM_EXIT_UNKNOWN).
type kvmRunHW struct {
	hardwareExitReason uint64
}
