package kvm

import (
	"fmt"
	"strings"
)

// ExitReason is why KVM_RUN returned (KVM_EXIT_*).
type ExitReason uint32

// Exit reasons from include/uapi/linux/kvm.h that can occur on x86.
const (
	ExitUnknown       ExitReason = 0 // KVM_EXIT_UNKNOWN: Exit.HardwareExitReason
	ExitException     ExitReason = 1 // KVM_EXIT_EXCEPTION
	ExitIO            ExitReason = 2 // KVM_EXIT_IO: Exit.IO
	ExitHypercall     ExitReason = 3 // KVM_EXIT_HYPERCALL
	ExitDebug         ExitReason = 4 // KVM_EXIT_DEBUG: Exit.Debug
	ExitHLT           ExitReason = 5 // KVM_EXIT_HLT (only without an in-kernel LAPIC)
	ExitMMIO          ExitReason = 6 // KVM_EXIT_MMIO: Exit.MMIO
	ExitIRQWindowOpen ExitReason = 7 // KVM_EXIT_IRQ_WINDOW_OPEN
	ExitShutdown      ExitReason = 8 // KVM_EXIT_SHUTDOWN: triple fault
	ExitFailEntry     ExitReason = 9 // KVM_EXIT_FAIL_ENTRY: Exit.FailEntry
	// ExitInterrupted is KVM_EXIT_INTR. Run reports it whenever KVM_RUN
	// fails with EINTR: a signal reached the vCPU thread, or
	// immediate_exit was set (see VCPU.SetImmediateExit).
	ExitInterrupted   ExitReason = 10
	ExitSetTPR        ExitReason = 11 // KVM_EXIT_SET_TPR
	ExitTPRAccess     ExitReason = 12 // KVM_EXIT_TPR_ACCESS
	ExitNMI           ExitReason = 16 // KVM_EXIT_NMI
	ExitInternalError ExitReason = 17 // KVM_EXIT_INTERNAL_ERROR: Exit.Internal
	ExitSystemEvent   ExitReason = 24 // KVM_EXIT_SYSTEM_EVENT: Exit.SystemEvent
	ExitIOAPICEOI     ExitReason = 26 // KVM_EXIT_IOAPIC_EOI (split irqchip only)
	ExitHyperV        ExitReason = 27 // KVM_EXIT_HYPERV
	ExitX86RDMSR      ExitReason = 29 // KVM_EXIT_X86_RDMSR (only if MSR exits are enabled)
	ExitX86WRMSR      ExitReason = 30 // KVM_EXIT_X86_WRMSR (only if MSR exits are enabled)
	ExitDirtyRingFull ExitReason = 31 // KVM_EXIT_DIRTY_RING_FULL
	ExitX86BusLock    ExitReason = 33 // KVM_EXIT_X86_BUS_LOCK
	ExitNotify        ExitReason = 37 // KVM_EXIT_NOTIFY
)

var exitReasonNames = map[ExitReason]string{
	ExitUnknown:       "UNKNOWN",
	ExitException:     "EXCEPTION",
	ExitIO:            "IO",
	ExitHypercall:     "HYPERCALL",
	ExitDebug:         "DEBUG",
	ExitHLT:           "HLT",
	ExitMMIO:          "MMIO",
	ExitIRQWindowOpen: "IRQ_WINDOW_OPEN",
	ExitShutdown:      "SHUTDOWN",
	ExitFailEntry:     "FAIL_ENTRY",
	ExitInterrupted:   "interrupted",
	ExitSetTPR:        "SET_TPR",
	ExitTPRAccess:     "TPR_ACCESS",
	ExitNMI:           "NMI",
	ExitInternalError: "INTERNAL_ERROR",
	ExitSystemEvent:   "SYSTEM_EVENT",
	ExitIOAPICEOI:     "IOAPIC_EOI",
	ExitHyperV:        "HYPERV",
	ExitX86RDMSR:      "X86_RDMSR",
	ExitX86WRMSR:      "X86_WRMSR",
	ExitDirtyRingFull: "DIRTY_RING_FULL",
	ExitX86BusLock:    "X86_BUS_LOCK",
	ExitNotify:        "NOTIFY",
}

func (r ExitReason) String() string {
	if s, ok := exitReasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("exit(%d)", uint32(r))
}

// IODirection is the direction of a port access (KVM_EXIT_IO_IN/OUT).
type IODirection uint8

const (
	IOIn  IODirection = 0 // KVM_EXIT_IO_IN: the guest reads; fill Data
	IOOut IODirection = 1 // KVM_EXIT_IO_OUT: the guest writes Data
)

func (d IODirection) String() string {
	switch d {
	case IOIn:
		return "in"
	case IOOut:
		return "out"
	}
	return fmt.Sprintf("io-direction(%d)", uint8(d))
}

// IOExit is a guest port access.
type IOExit struct {
	Direction IODirection
	Port      uint16
	Size      uint8  // bytes per access: 1, 2 or 4
	Count     uint32 // accesses, more than one for REP INS/OUTS
	// Data is Count*Size bytes inside the kvm_run mapping. For IOOut it
	// holds what the guest wrote; for IOIn the caller fills it and the
	// next Run hands it to the guest. Valid until the next Run.
	Data []byte
}

// MMIOExit is a guest access to an address no memory slot backs (or a
// write to a read-only slot).
type MMIOExit struct {
	Addr    uint64
	IsWrite bool
	// Data is the access, at most 8 bytes, inside the kvm_run mapping:
	// written by the guest, or to be filled by the caller for a read and
	// delivered by the next Run. Valid until the next Run.
	Data []byte
}

// FailEntryExit is a VM entry the hardware refused.
type FailEntryExit struct {
	HardwareReason uint64 // VMX/SVM exit reason of the failed entry
	CPU            uint32 // host CPU the entry was attempted on
}

// InternalErrorExit is an error inside KVM, typically an instruction it
// could not emulate.
type InternalErrorExit struct {
	Suberror InternalSuberror
	Data     []uint64 // suberror-specific; valid until the next Run
}

// InternalSuberror says what went wrong in an internal error exit
// (KVM_INTERNAL_ERROR_*).
type InternalSuberror uint32

const (
	InternalEmulation       InternalSuberror = 1 // KVM_INTERNAL_ERROR_EMULATION
	InternalSimultaneousExc InternalSuberror = 2 // KVM_INTERNAL_ERROR_SIMUL_EX
	InternalDeliveryEvent   InternalSuberror = 3 // KVM_INTERNAL_ERROR_DELIVERY_EV
	InternalUnexpectedExit  InternalSuberror = 4 // KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON
)

var internalSuberrorNames = map[InternalSuberror]string{
	InternalEmulation:       "instruction emulation failed",
	InternalSimultaneousExc: "exception while delivering an exception",
	InternalDeliveryEvent:   "event delivery failed",
	InternalUnexpectedExit:  "unexpected exit reason",
}

func (s InternalSuberror) String() string {
	if n, ok := internalSuberrorNames[s]; ok {
		return n
	}
	return fmt.Sprintf("suberror %d", uint32(s))
}

// SystemEventExit is a guest-initiated shutdown, reset or crash report.
type SystemEventExit struct {
	Type SystemEventType
	Data []uint64 // with KVM_CAP_SYSTEM_EVENT_DATA; valid until the next Run
}

// DebugExit is a debug exception (breakpoint, single step) KVM forwarded.
type DebugExit struct {
	Exception uint32
	PC        uint64
	DR6, DR7  uint64
}

// Exit is a decoded KVM_RUN exit. Reason says which of the per-reason
// fields is meaningful; the others are zero.
type Exit struct {
	Reason ExitReason

	// The interrupt-injection state kvm_run reports after every exit.
	ReadyForInterruptInjection bool
	IFFlag                     bool

	IO                 IOExit            // ExitIO
	MMIO               MMIOExit          // ExitMMIO
	FailEntry          FailEntryExit     // ExitFailEntry
	Internal           InternalErrorExit // ExitInternalError
	SystemEvent        SystemEventExit   // ExitSystemEvent
	Debug              DebugExit         // ExitDebug
	HardwareExitReason uint64            // ExitUnknown
}

func (e Exit) String() string {
	var b strings.Builder
	b.WriteString(e.Reason.String())
	switch e.Reason {
	case ExitIO:
		fmt.Fprintf(&b, " %v port %#x size %d count %d", e.IO.Direction, e.IO.Port, e.IO.Size, e.IO.Count)
	case ExitMMIO:
		dir := "read"
		if e.MMIO.IsWrite {
			dir = "write"
		}
		fmt.Fprintf(&b, " %s %#x len %d", dir, e.MMIO.Addr, len(e.MMIO.Data))
	case ExitFailEntry:
		fmt.Fprintf(&b, " hardware reason %#x on cpu %d", e.FailEntry.HardwareReason, e.FailEntry.CPU)
	case ExitInternalError:
		fmt.Fprintf(&b, " suberror %d data %#x", e.Internal.Suberror, e.Internal.Data)
	case ExitSystemEvent:
		fmt.Fprintf(&b, " %v", e.SystemEvent.Type)
	case ExitDebug:
		fmt.Fprintf(&b, " exception %d at %#x", e.Debug.Exception, e.Debug.PC)
	case ExitUnknown:
		fmt.Fprintf(&b, " hardware reason %#x", e.HardwareExitReason)
	}
	return b.String()
}

// decodeExit decodes the kvm_run mapping after a successful KVM_RUN. Every
// offset and length that would index the mapping is checked first.
func decodeExit(mapping []byte) (Exit, error) {
	run := runView(mapping)
	e := Exit{
		Reason:                     run.exitReason,
		ReadyForInterruptInjection: run.readyForInterruptInjection != 0,
		IFFlag:                     run.ifFlag != 0,
	}
	switch e.Reason {
	case ExitIO:
		io := run.io()
		size := uint64(len(mapping))
		if io.dataOffset > size {
			return Exit{}, &DecodeError{Reason: e.Reason, Field: "io.data_offset", Value: io.dataOffset, Limit: size}
		}
		// Neither sum can overflow: dataOffset <= size and n < 2^40.
		n := uint64(io.count) * uint64(io.size)
		if io.dataOffset+n > size {
			return Exit{}, &DecodeError{Reason: e.Reason, Field: "io.data_offset+count*size", Value: io.dataOffset + n, Limit: size}
		}
		e.IO = IOExit{
			Direction: io.direction,
			Port:      io.port,
			Size:      io.size,
			Count:     io.count,
			Data:      mapping[io.dataOffset : io.dataOffset+n : io.dataOffset+n],
		}
	case ExitMMIO:
		m := run.mmio()
		if uint64(m.len) > uint64(len(m.data)) {
			return Exit{}, &DecodeError{Reason: e.Reason, Field: "mmio.len", Value: uint64(m.len), Limit: uint64(len(m.data))}
		}
		e.MMIO = MMIOExit{Addr: m.physAddr, IsWrite: m.isWrite != 0, Data: m.data[:m.len:m.len]}
	case ExitFailEntry:
		f := run.failEntry()
		e.FailEntry = FailEntryExit{HardwareReason: f.hardwareEntryFailureReason, CPU: f.cpu}
	case ExitInternalError:
		in := run.internal()
		data, err := words(e.Reason, "internal.ndata", &in.data, in.ndata)
		if err != nil {
			return Exit{}, err
		}
		e.Internal = InternalErrorExit{Suberror: InternalSuberror(in.suberror), Data: data}
	case ExitSystemEvent:
		se := run.systemEvent()
		data, err := words(e.Reason, "system_event.ndata", &se.data, se.ndata)
		if err != nil {
			return Exit{}, err
		}
		e.SystemEvent = SystemEventExit{Type: se.typ, Data: data}
	case ExitDebug:
		d := run.debug()
		e.Debug = DebugExit{Exception: d.exception, PC: d.pc, DR6: d.dr6, DR7: d.dr7}
	case ExitUnknown:
		e.HardwareExitReason = run.hw().hardwareExitReason
	}
	return e, nil
}

// words returns the first n entries of a kvm_run data array, checking n.
func words(r ExitReason, field string, data *[kvmRunDataWords]uint64, n uint32) ([]uint64, error) {
	if n > kvmRunDataWords {
		return nil, &DecodeError{Reason: r, Field: field, Value: uint64(n), Limit: kvmRunDataWords}
	}
	return data[:n:n], nil
}
