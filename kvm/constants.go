package kvm

import "fmt"

// APIVersion is KVM_API_VERSION, the only KVM API version the kernel has
// ever shipped and the one this package speaks.
const APIVersion = 12

// DefaultPath is where the KVM device lives.
const DefaultPath = "/dev/kvm"

// Cap is a KVM capability (KVM_CAP_*), queried with CheckExtension.
type Cap int

// Capabilities from include/uapi/linux/kvm.h.
const (
	CapIRQChip            Cap = 0   // KVM_CAP_IRQCHIP
	CapHLT                Cap = 1   // KVM_CAP_HLT
	CapUserMemory         Cap = 3   // KVM_CAP_USER_MEMORY
	CapSetTSSAddr         Cap = 4   // KVM_CAP_SET_TSS_ADDR
	CapExtCPUID           Cap = 7   // KVM_CAP_EXT_CPUID
	CapNrVCPUs            Cap = 9   // KVM_CAP_NR_VCPUS: recommended vCPUs per VM
	CapNrMemslots         Cap = 10  // KVM_CAP_NR_MEMSLOTS
	CapPIT                Cap = 11  // KVM_CAP_PIT
	CapMPState            Cap = 14  // KVM_CAP_MP_STATE
	CapSyncMMU            Cap = 16  // KVM_CAP_SYNC_MMU
	CapIRQRouting         Cap = 25  // KVM_CAP_IRQ_ROUTING
	CapIRQFD              Cap = 32  // KVM_CAP_IRQFD
	CapPIT2               Cap = 33  // KVM_CAP_PIT2
	CapIOEventFD          Cap = 36  // KVM_CAP_IOEVENTFD
	CapSetIdentityMapAddr Cap = 37  // KVM_CAP_SET_IDENTITY_MAP_ADDR
	CapAdjustClock        Cap = 39  // KVM_CAP_ADJUST_CLOCK
	CapInternalErrorData  Cap = 40  // KVM_CAP_INTERNAL_ERROR_DATA
	CapVCPUEvents         Cap = 41  // KVM_CAP_VCPU_EVENTS
	CapDebugRegs          Cap = 50  // KVM_CAP_DEBUGREGS
	CapXSave              Cap = 55  // KVM_CAP_XSAVE
	CapXCRs               Cap = 56  // KVM_CAP_XCRS
	CapTSCControl         Cap = 60  // KVM_CAP_TSC_CONTROL: KVM_SET_TSC_KHZ
	CapGetTSCKHz          Cap = 61  // KVM_CAP_GET_TSC_KHZ
	CapMaxVCPUs           Cap = 66  // KVM_CAP_MAX_VCPUS: maximum vCPUs per VM
	CapTSCDeadlineTimer   Cap = 72  // KVM_CAP_TSC_DEADLINE_TIMER
	CapSignalMSI          Cap = 77  // KVM_CAP_SIGNAL_MSI
	CapReadonlyMem        Cap = 81  // KVM_CAP_READONLY_MEM
	CapIOEventFDNoLength  Cap = 100 // KVM_CAP_IOEVENTFD_NO_LENGTH
	CapIOEventFDAnyLength Cap = 122 // KVM_CAP_IOEVENTFD_ANY_LENGTH
	CapMaxVCPUID          Cap = 128 // KVM_CAP_MAX_VCPU_ID
	CapX2APICAPI          Cap = 129 // KVM_CAP_X2APIC_API
	CapImmediateExit      Cap = 136 // KVM_CAP_IMMEDIATE_EXIT
	CapXSave2             Cap = 208 // KVM_CAP_XSAVE2: the XSAVE buffer size
	CapSystemEventData    Cap = 215 // KVM_CAP_SYSTEM_EVENT_DATA
)

// MemFlags are the flags of a memory slot (KVM_MEM_*).
type MemFlags uint32

const (
	MemLogDirtyPages MemFlags = 1 << 0 // KVM_MEM_LOG_DIRTY_PAGES
	MemReadonly      MemFlags = 1 << 1 // KVM_MEM_READONLY: guest writes exit as MMIO
)

// PITFlags configure KVM_CREATE_PIT2.
type PITFlags uint32

// PITSpeakerDummy (KVM_PIT_SPEAKER_DUMMY) makes the kernel emulate port
// 0x61 as a dummy speaker port instead of exiting to userspace.
const PITSpeakerDummy PITFlags = 1

// MPState is a vCPU's multiprocessing state (KVM_MP_STATE_*). It has the
// layout of struct kvm_mp_state, a single __u32.
type MPState uint32

const (
	MPStateRunnable      MPState = 0 // KVM_MP_STATE_RUNNABLE
	MPStateUninitialized MPState = 1 // KVM_MP_STATE_UNINITIALIZED: an AP waiting for INIT
	MPStateInitReceived  MPState = 2 // KVM_MP_STATE_INIT_RECEIVED
	MPStateHalted        MPState = 3 // KVM_MP_STATE_HALTED
	MPStateSIPIReceived  MPState = 4 // KVM_MP_STATE_SIPI_RECEIVED
)

// SystemEventType is the kind of an ExitSystemEvent (KVM_SYSTEM_EVENT_*).
type SystemEventType uint32

const (
	SystemEventShutdown SystemEventType = 1 // KVM_SYSTEM_EVENT_SHUTDOWN
	SystemEventReset    SystemEventType = 2 // KVM_SYSTEM_EVENT_RESET
	SystemEventCrash    SystemEventType = 3 // KVM_SYSTEM_EVENT_CRASH
	SystemEventWakeup   SystemEventType = 4 // KVM_SYSTEM_EVENT_WAKEUP
	SystemEventSuspend  SystemEventType = 5 // KVM_SYSTEM_EVENT_SUSPEND
	SystemEventSEVTerm  SystemEventType = 6 // KVM_SYSTEM_EVENT_SEV_TERM
)

var systemEventNames = map[SystemEventType]string{
	SystemEventShutdown: "shutdown",
	SystemEventReset:    "reset",
	SystemEventCrash:    "crash",
	SystemEventWakeup:   "wakeup",
	SystemEventSuspend:  "suspend",
	SystemEventSEVTerm:  "sev-term",
}

func (t SystemEventType) String() string {
	if s, ok := systemEventNames[t]; ok {
		return s
	}
	return fmt.Sprintf("system-event(%d)", uint32(t))
}

// ClockFlags describe a ClockData (KVM_CLOCK_*).
type ClockFlags uint32

const (
	ClockTSCStable ClockFlags = 1 << 1 // KVM_CLOCK_TSC_STABLE: the clock is the same on every vCPU
	ClockRealtime  ClockFlags = 1 << 2 // KVM_CLOCK_REALTIME: Realtime is valid
	ClockHostTSC   ClockFlags = 1 << 3 // KVM_CLOCK_HOST_TSC: HostTSC is valid
)

// CPUIDFlags qualify a CPUIDEntry (KVM_CPUID_FLAG_*).
type CPUIDFlags uint32

// CPUIDFlagSignificantIndex (KVM_CPUID_FLAG_SIGNIFCANT_INDEX) means the
// entry applies only to its Index (ECX input), as for leaves 4, 7 and 0xd.
const CPUIDFlagSignificantIndex CPUIDFlags = 1 << 0

// IRQChip names one of the in-kernel interrupt controllers
// (KVM_IRQCHIP_*), the target of an IRQ routing entry.
type IRQChip uint32

const (
	IRQChipPICMaster IRQChip = 0 // KVM_IRQCHIP_PIC_MASTER
	IRQChipPICSlave  IRQChip = 1 // KVM_IRQCHIP_PIC_SLAVE
	IRQChipIOAPIC    IRQChip = 2 // KVM_IRQCHIP_IOAPIC
)

// IRQRoutingType is the kind of an IRQRoutingEntry (KVM_IRQ_ROUTING_*).
type IRQRoutingType uint32

const (
	IRQRoutingIRQChip IRQRoutingType = 1 // KVM_IRQ_ROUTING_IRQCHIP
	IRQRoutingMSI     IRQRoutingType = 2 // KVM_IRQ_ROUTING_MSI
)

// AddressSpace says whether an ioeventfd watches port I/O or MMIO.
type AddressSpace int

const (
	SpaceMMIO AddressSpace = iota
	SpacePIO
)

// Flags the typed IRQFD and IOEventFD methods build; callers do not pass
// them directly.
const (
	irqfdFlagDeassign = 1 << 0 // KVM_IRQFD_FLAG_DEASSIGN

	ioeventfdFlagDatamatch = 1 << 0 // KVM_IOEVENTFD_FLAG_DATAMATCH
	ioeventfdFlagPIO       = 1 << 1 // KVM_IOEVENTFD_FLAG_PIO
	ioeventfdFlagDeassign  = 1 << 2 // KVM_IOEVENTFD_FLAG_DEASSIGN
)
