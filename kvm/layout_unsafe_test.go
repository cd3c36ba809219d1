package kvm

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
)

// layout is one size or offset of a kernel struct: what the Go mirror
// has and what the kernel header says (x86-64, from offsetof/sizeof).
type layout struct {
	name string
	got  uintptr
	want uintptr
}

// runExit is the offset of the exit union in kvm_run.
var runExit = unsafe.Offsetof(kvmRun{}.exit)

var layouts = []layout{
	{"sizeof(kvm_regs)", unsafe.Sizeof(Regs{}), 144},
	{"kvm_regs.rax", unsafe.Offsetof(Regs{}.RAX), 0},
	{"kvm_regs.rbx", unsafe.Offsetof(Regs{}.RBX), 8},
	{"kvm_regs.rcx", unsafe.Offsetof(Regs{}.RCX), 16},
	{"kvm_regs.rdx", unsafe.Offsetof(Regs{}.RDX), 24},
	{"kvm_regs.rsi", unsafe.Offsetof(Regs{}.RSI), 32},
	{"kvm_regs.rdi", unsafe.Offsetof(Regs{}.RDI), 40},
	{"kvm_regs.rsp", unsafe.Offsetof(Regs{}.RSP), 48},
	{"kvm_regs.rbp", unsafe.Offsetof(Regs{}.RBP), 56},
	{"kvm_regs.r8", unsafe.Offsetof(Regs{}.R8), 64},
	{"kvm_regs.r9", unsafe.Offsetof(Regs{}.R9), 72},
	{"kvm_regs.r10", unsafe.Offsetof(Regs{}.R10), 80},
	{"kvm_regs.r11", unsafe.Offsetof(Regs{}.R11), 88},
	{"kvm_regs.r12", unsafe.Offsetof(Regs{}.R12), 96},
	{"kvm_regs.r13", unsafe.Offsetof(Regs{}.R13), 104},
	{"kvm_regs.r14", unsafe.Offsetof(Regs{}.R14), 112},
	{"kvm_regs.r15", unsafe.Offsetof(Regs{}.R15), 120},
	{"kvm_regs.rip", unsafe.Offsetof(Regs{}.RIP), 128},
	{"kvm_regs.rflags", unsafe.Offsetof(Regs{}.RFLAGS), 136},

	{"sizeof(kvm_segment)", unsafe.Sizeof(Segment{}), 24},
	{"kvm_segment.base", unsafe.Offsetof(Segment{}.Base), 0},
	{"kvm_segment.limit", unsafe.Offsetof(Segment{}.Limit), 8},
	{"kvm_segment.selector", unsafe.Offsetof(Segment{}.Selector), 12},
	{"kvm_segment.type", unsafe.Offsetof(Segment{}.Type), 14},
	{"kvm_segment.present", unsafe.Offsetof(Segment{}.Present), 15},
	{"kvm_segment.dpl", unsafe.Offsetof(Segment{}.DPL), 16},
	{"kvm_segment.db", unsafe.Offsetof(Segment{}.DB), 17},
	{"kvm_segment.s", unsafe.Offsetof(Segment{}.S), 18},
	{"kvm_segment.l", unsafe.Offsetof(Segment{}.L), 19},
	{"kvm_segment.g", unsafe.Offsetof(Segment{}.G), 20},
	{"kvm_segment.avl", unsafe.Offsetof(Segment{}.AVL), 21},
	{"kvm_segment.unusable", unsafe.Offsetof(Segment{}.Unusable), 22},

	{"sizeof(kvm_dtable)", unsafe.Sizeof(DTable{}), 16},
	{"kvm_dtable.base", unsafe.Offsetof(DTable{}.Base), 0},
	{"kvm_dtable.limit", unsafe.Offsetof(DTable{}.Limit), 8},

	{"sizeof(kvm_sregs)", unsafe.Sizeof(Sregs{}), 312},
	{"kvm_sregs.cs", unsafe.Offsetof(Sregs{}.CS), 0},
	{"kvm_sregs.ds", unsafe.Offsetof(Sregs{}.DS), 24},
	{"kvm_sregs.es", unsafe.Offsetof(Sregs{}.ES), 48},
	{"kvm_sregs.fs", unsafe.Offsetof(Sregs{}.FS), 72},
	{"kvm_sregs.gs", unsafe.Offsetof(Sregs{}.GS), 96},
	{"kvm_sregs.ss", unsafe.Offsetof(Sregs{}.SS), 120},
	{"kvm_sregs.tr", unsafe.Offsetof(Sregs{}.TR), 144},
	{"kvm_sregs.ldt", unsafe.Offsetof(Sregs{}.LDT), 168},
	{"kvm_sregs.gdt", unsafe.Offsetof(Sregs{}.GDT), 192},
	{"kvm_sregs.idt", unsafe.Offsetof(Sregs{}.IDT), 208},
	{"kvm_sregs.cr0", unsafe.Offsetof(Sregs{}.CR0), 224},
	{"kvm_sregs.cr2", unsafe.Offsetof(Sregs{}.CR2), 232},
	{"kvm_sregs.cr3", unsafe.Offsetof(Sregs{}.CR3), 240},
	{"kvm_sregs.cr4", unsafe.Offsetof(Sregs{}.CR4), 248},
	{"kvm_sregs.cr8", unsafe.Offsetof(Sregs{}.CR8), 256},
	{"kvm_sregs.efer", unsafe.Offsetof(Sregs{}.EFER), 264},
	{"kvm_sregs.apic_base", unsafe.Offsetof(Sregs{}.APICBase), 272},
	{"kvm_sregs.interrupt_bitmap", unsafe.Offsetof(Sregs{}.InterruptBitmap), 280},

	{"sizeof(kvm_fpu)", unsafe.Sizeof(FPU{}), 416},
	{"kvm_fpu.fpr", unsafe.Offsetof(FPU{}.FPR), 0},
	{"kvm_fpu.fcw", unsafe.Offsetof(FPU{}.FCW), 128},
	{"kvm_fpu.fsw", unsafe.Offsetof(FPU{}.FSW), 130},
	{"kvm_fpu.ftwx", unsafe.Offsetof(FPU{}.FTWX), 132},
	{"kvm_fpu.last_opcode", unsafe.Offsetof(FPU{}.LastOpcode), 134},
	{"kvm_fpu.last_ip", unsafe.Offsetof(FPU{}.LastIP), 136},
	{"kvm_fpu.last_dp", unsafe.Offsetof(FPU{}.LastDP), 144},
	{"kvm_fpu.xmm", unsafe.Offsetof(FPU{}.XMM), 152},
	{"kvm_fpu.mxcsr", unsafe.Offsetof(FPU{}.MXCSR), 408},

	{"sizeof(kvm_lapic_state)", unsafe.Sizeof(LAPICState{}), 1024},
	{"kvm_lapic_state.regs", unsafe.Offsetof(LAPICState{}.Regs), 0},

	{"sizeof(kvm_cpuid_entry2)", unsafe.Sizeof(CPUIDEntry{}), 40},
	{"kvm_cpuid_entry2.function", unsafe.Offsetof(CPUIDEntry{}.Function), 0},
	{"kvm_cpuid_entry2.index", unsafe.Offsetof(CPUIDEntry{}.Index), 4},
	{"kvm_cpuid_entry2.flags", unsafe.Offsetof(CPUIDEntry{}.Flags), 8},
	{"kvm_cpuid_entry2.eax", unsafe.Offsetof(CPUIDEntry{}.EAX), 12},
	{"kvm_cpuid_entry2.ebx", unsafe.Offsetof(CPUIDEntry{}.EBX), 16},
	{"kvm_cpuid_entry2.ecx", unsafe.Offsetof(CPUIDEntry{}.ECX), 20},
	{"kvm_cpuid_entry2.edx", unsafe.Offsetof(CPUIDEntry{}.EDX), 24},
	{"sizeof(kvm_cpuid2)", unsafe.Sizeof(kvmCPUID2{}), 8},
	{"kvm_cpuid2.nent", unsafe.Offsetof(kvmCPUID2{}.nent), 0},
	{"kvm_cpuid2.entries = sizeof header", unsafe.Sizeof(kvmCPUID2{}), 8},

	{"sizeof(kvm_msr_entry)", unsafe.Sizeof(MSREntry{}), 16},
	{"kvm_msr_entry.index", unsafe.Offsetof(MSREntry{}.Index), 0},
	{"kvm_msr_entry.data", unsafe.Offsetof(MSREntry{}.Data), 8},
	{"sizeof(kvm_msrs)", unsafe.Sizeof(kvmMSRs{}), 8},
	{"kvm_msrs.nmsrs", unsafe.Offsetof(kvmMSRs{}.nmsrs), 0},
	{"kvm_msrs.entries = sizeof header", unsafe.Sizeof(kvmMSRs{}), 8},
	{"sizeof(kvm_msr_list)", unsafe.Sizeof(kvmMSRList{}), 4},
	{"kvm_msr_list.nmsrs", unsafe.Offsetof(kvmMSRList{}.nmsrs), 0},
	{"kvm_msr_list.indices = sizeof header", unsafe.Sizeof(kvmMSRList{}), 4},

	{"sizeof(kvm_clock_data)", unsafe.Sizeof(ClockData{}), 48},
	{"kvm_clock_data.clock", unsafe.Offsetof(ClockData{}.Clock), 0},
	{"kvm_clock_data.flags", unsafe.Offsetof(ClockData{}.Flags), 8},
	{"kvm_clock_data.realtime", unsafe.Offsetof(ClockData{}.Realtime), 16},
	{"kvm_clock_data.host_tsc", unsafe.Offsetof(ClockData{}.HostTSC), 24},

	{"sizeof(kvm_device_attr)", unsafe.Sizeof(kvmDeviceAttr{}), 24},
	{"kvm_device_attr.flags", unsafe.Offsetof(kvmDeviceAttr{}.flags), 0},
	{"kvm_device_attr.group", unsafe.Offsetof(kvmDeviceAttr{}.group), 4},
	{"kvm_device_attr.attr", unsafe.Offsetof(kvmDeviceAttr{}.attr), 8},
	{"kvm_device_attr.addr", unsafe.Offsetof(kvmDeviceAttr{}.addr), 16},

	{"sizeof(kvm_mp_state)", unsafe.Sizeof(MPState(0)), 4},

	{"sizeof(kvm_xcr)", unsafe.Sizeof(XCR{}), 16},
	{"kvm_xcr.value", unsafe.Offsetof(XCR{}.Value), 8},
	{"sizeof(kvm_xcrs)", unsafe.Sizeof(XCRs{}), 392},
	{"kvm_xcrs.flags", unsafe.Offsetof(XCRs{}.Flags), 4},
	{"kvm_xcrs.xcrs", unsafe.Offsetof(XCRs{}.XCRs), 8},

	{"sizeof(kvm_debugregs)", unsafe.Sizeof(DebugRegs{}), 128},
	{"kvm_debugregs.dr6", unsafe.Offsetof(DebugRegs{}.DR6), 32},
	{"kvm_debugregs.dr7", unsafe.Offsetof(DebugRegs{}.DR7), 40},
	{"kvm_debugregs.flags", unsafe.Offsetof(DebugRegs{}.Flags), 48},

	{"sizeof(kvm_vcpu_events)", unsafe.Sizeof(VCPUEvents{}), 64},
	{"kvm_vcpu_events.exception.error_code", unsafe.Offsetof(VCPUEvents{}.Exception) + unsafe.Offsetof(VCPUEvents{}.Exception.ErrorCode), 4},
	{"kvm_vcpu_events.interrupt", unsafe.Offsetof(VCPUEvents{}.Interrupt), 8},
	{"kvm_vcpu_events.nmi", unsafe.Offsetof(VCPUEvents{}.NMI), 12},
	{"kvm_vcpu_events.sipi_vector", unsafe.Offsetof(VCPUEvents{}.SIPIVector), 16},
	{"kvm_vcpu_events.flags", unsafe.Offsetof(VCPUEvents{}.Flags), 20},
	{"kvm_vcpu_events.smi", unsafe.Offsetof(VCPUEvents{}.SMI), 24},
	{"kvm_vcpu_events.triple_fault", unsafe.Offsetof(VCPUEvents{}.TripleFault), 28},
	{"kvm_vcpu_events.exception_has_payload", unsafe.Offsetof(VCPUEvents{}.ExceptionHasPayload), 55},
	{"kvm_vcpu_events.exception_payload", unsafe.Offsetof(VCPUEvents{}.ExceptionPayload), 56},

	{"sizeof(kvm_irqchip)", unsafe.Sizeof(IRQChipState{}), 520},
	{"kvm_irqchip.chip", unsafe.Offsetof(IRQChipState{}.Data), 8},

	{"sizeof(kvm_pit_channel_state)", unsafe.Sizeof(PITChannelState{}), 24},
	{"kvm_pit_channel_state.latched_count", unsafe.Offsetof(PITChannelState{}.LatchedCount), 4},
	{"kvm_pit_channel_state.gate", unsafe.Offsetof(PITChannelState{}.Gate), 15},
	{"kvm_pit_channel_state.count_load_time", unsafe.Offsetof(PITChannelState{}.CountLoadTime), 16},
	{"sizeof(kvm_pit_state2)", unsafe.Sizeof(PITState2{}), 112},
	{"kvm_pit_state2.flags", unsafe.Offsetof(PITState2{}.Flags), 72},

	{"sizeof(kvm_xsave)", unsafe.Sizeof(kvmXSave{}), 4096},

	{"sizeof(kvm_userspace_memory_region)", unsafe.Sizeof(kvmUserspaceMemoryRegion{}), 32},
	{"kvm_userspace_memory_region.slot", unsafe.Offsetof(kvmUserspaceMemoryRegion{}.slot), 0},
	{"kvm_userspace_memory_region.flags", unsafe.Offsetof(kvmUserspaceMemoryRegion{}.flags), 4},
	{"kvm_userspace_memory_region.guest_phys_addr", unsafe.Offsetof(kvmUserspaceMemoryRegion{}.guestPhysAddr), 8},
	{"kvm_userspace_memory_region.memory_size", unsafe.Offsetof(kvmUserspaceMemoryRegion{}.memorySize), 16},
	{"kvm_userspace_memory_region.userspace_addr", unsafe.Offsetof(kvmUserspaceMemoryRegion{}.userspaceAddr), 24},

	{"sizeof(kvm_pit_config)", unsafe.Sizeof(kvmPITConfig{}), 64},
	{"kvm_pit_config.flags", unsafe.Offsetof(kvmPITConfig{}.flags), 0},

	{"sizeof(kvm_irq_level)", unsafe.Sizeof(kvmIRQLevel{}), 8},
	{"kvm_irq_level.irq", unsafe.Offsetof(kvmIRQLevel{}.irq), 0},
	{"kvm_irq_level.level", unsafe.Offsetof(kvmIRQLevel{}.level), 4},

	{"sizeof(kvm_irqfd)", unsafe.Sizeof(kvmIRQFD{}), 32},
	{"kvm_irqfd.fd", unsafe.Offsetof(kvmIRQFD{}.fd), 0},
	{"kvm_irqfd.gsi", unsafe.Offsetof(kvmIRQFD{}.gsi), 4},
	{"kvm_irqfd.flags", unsafe.Offsetof(kvmIRQFD{}.flags), 8},
	{"kvm_irqfd.resamplefd", unsafe.Offsetof(kvmIRQFD{}.resamplefd), 12},

	{"sizeof(kvm_ioeventfd)", unsafe.Sizeof(kvmIOEventFD{}), 64},
	{"kvm_ioeventfd.datamatch", unsafe.Offsetof(kvmIOEventFD{}.datamatch), 0},
	{"kvm_ioeventfd.addr", unsafe.Offsetof(kvmIOEventFD{}.addr), 8},
	{"kvm_ioeventfd.len", unsafe.Offsetof(kvmIOEventFD{}.len), 16},
	{"kvm_ioeventfd.fd", unsafe.Offsetof(kvmIOEventFD{}.fd), 20},
	{"kvm_ioeventfd.flags", unsafe.Offsetof(kvmIOEventFD{}.flags), 24},

	{"sizeof(kvm_msi)", unsafe.Sizeof(kvmMSI{}), 32},
	{"kvm_msi.address_lo", unsafe.Offsetof(kvmMSI{}.addressLo), 0},
	{"kvm_msi.address_hi", unsafe.Offsetof(kvmMSI{}.addressHi), 4},
	{"kvm_msi.data", unsafe.Offsetof(kvmMSI{}.data), 8},
	{"kvm_msi.flags", unsafe.Offsetof(kvmMSI{}.flags), 12},
	{"kvm_msi.devid", unsafe.Offsetof(kvmMSI{}.devid), 16},

	{"sizeof(kvm_irq_routing)", unsafe.Sizeof(kvmIRQRouting{}), 8},
	{"kvm_irq_routing.nr", unsafe.Offsetof(kvmIRQRouting{}.nr), 0},
	{"kvm_irq_routing.flags", unsafe.Offsetof(kvmIRQRouting{}.flags), 4},
	{"kvm_irq_routing.entries = sizeof header", unsafe.Sizeof(kvmIRQRouting{}), 8},
	{"sizeof(kvm_irq_routing_entry)", unsafe.Sizeof(IRQRoutingEntry{}), 48},
	{"kvm_irq_routing_entry.gsi", unsafe.Offsetof(IRQRoutingEntry{}.GSI), 0},
	{"kvm_irq_routing_entry.type", unsafe.Offsetof(IRQRoutingEntry{}.Type), 4},
	{"kvm_irq_routing_entry.flags", unsafe.Offsetof(IRQRoutingEntry{}.Flags), 8},
	{"kvm_irq_routing_entry.u", unsafe.Offsetof(IRQRoutingEntry{}.u), 16},
	{"sizeof(kvm_irq_routing_irqchip)", unsafe.Sizeof(kvmIRQRoutingIRQChip{}), 8},
	{"kvm_irq_routing_irqchip.irqchip", unsafe.Offsetof(kvmIRQRoutingIRQChip{}.irqchip), 0},
	{"kvm_irq_routing_irqchip.pin", unsafe.Offsetof(kvmIRQRoutingIRQChip{}.pin), 4},
	{"sizeof(kvm_irq_routing_msi)", unsafe.Sizeof(kvmIRQRoutingMSI{}), 16},
	{"kvm_irq_routing_msi.address_lo", unsafe.Offsetof(kvmIRQRoutingMSI{}.addressLo), 0},
	{"kvm_irq_routing_msi.address_hi", unsafe.Offsetof(kvmIRQRoutingMSI{}.addressHi), 4},
	{"kvm_irq_routing_msi.data", unsafe.Offsetof(kvmIRQRoutingMSI{}.data), 8},
	{"kvm_irq_routing_msi.devid", unsafe.Offsetof(kvmIRQRoutingMSI{}.devid), 12},

	{"sizeof(kvm_run)", unsafe.Sizeof(kvmRun{}), 2352},
	{"kvm_run.request_interrupt_window", unsafe.Offsetof(kvmRun{}.requestInterruptWindow), 0},
	{"kvm_run.immediate_exit", unsafe.Offsetof(kvmRun{}.immediateExit), 1},
	{"kvm_run.exit_reason", unsafe.Offsetof(kvmRun{}.exitReason), 8},
	{"kvm_run.ready_for_interrupt_injection", unsafe.Offsetof(kvmRun{}.readyForInterruptInjection), 12},
	{"kvm_run.if_flag", unsafe.Offsetof(kvmRun{}.ifFlag), 13},
	{"kvm_run.flags", unsafe.Offsetof(kvmRun{}.flags), 14},
	{"kvm_run.cr8", unsafe.Offsetof(kvmRun{}.cr8), 16},
	{"kvm_run.apic_base", unsafe.Offsetof(kvmRun{}.apicBase), 24},
	{"kvm_run.io.direction", runExit + unsafe.Offsetof(kvmRunIO{}.direction), 32},
	{"kvm_run.io.size", runExit + unsafe.Offsetof(kvmRunIO{}.size), 33},
	{"kvm_run.io.port", runExit + unsafe.Offsetof(kvmRunIO{}.port), 34},
	{"kvm_run.io.count", runExit + unsafe.Offsetof(kvmRunIO{}.count), 36},
	{"kvm_run.io.data_offset", runExit + unsafe.Offsetof(kvmRunIO{}.dataOffset), 40},
	{"kvm_run.mmio.phys_addr", runExit + unsafe.Offsetof(kvmRunMMIO{}.physAddr), 32},
	{"kvm_run.mmio.data", runExit + unsafe.Offsetof(kvmRunMMIO{}.data), 40},
	{"kvm_run.mmio.len", runExit + unsafe.Offsetof(kvmRunMMIO{}.len), 48},
	{"kvm_run.mmio.is_write", runExit + unsafe.Offsetof(kvmRunMMIO{}.isWrite), 52},
	{"kvm_run.fail_entry.hardware_entry_failure_reason", runExit + unsafe.Offsetof(kvmRunFailEntry{}.hardwareEntryFailureReason), 32},
	{"kvm_run.fail_entry.cpu", runExit + unsafe.Offsetof(kvmRunFailEntry{}.cpu), 40},
	{"kvm_run.internal.suberror", runExit + unsafe.Offsetof(kvmRunInternal{}.suberror), 32},
	{"kvm_run.internal.ndata", runExit + unsafe.Offsetof(kvmRunInternal{}.ndata), 36},
	{"kvm_run.internal.data", runExit + unsafe.Offsetof(kvmRunInternal{}.data), 40},
	{"sizeof(kvm_run.internal.data)", unsafe.Sizeof(kvmRunInternal{}.data), 128},
	{"kvm_run.system_event.type", runExit + unsafe.Offsetof(kvmRunSystemEvent{}.typ), 32},
	{"kvm_run.system_event.ndata", runExit + unsafe.Offsetof(kvmRunSystemEvent{}.ndata), 36},
	{"kvm_run.system_event.data", runExit + unsafe.Offsetof(kvmRunSystemEvent{}.data), 40},
	{"kvm_run.debug.arch.exception", runExit + unsafe.Offsetof(kvmRunDebug{}.exception), 32},
	{"kvm_run.debug.arch.pc", runExit + unsafe.Offsetof(kvmRunDebug{}.pc), 40},
	{"kvm_run.debug.arch.dr6", runExit + unsafe.Offsetof(kvmRunDebug{}.dr6), 48},
	{"kvm_run.debug.arch.dr7", runExit + unsafe.Offsetof(kvmRunDebug{}.dr7), 56},
	{"kvm_run.hw.hardware_exit_reason", runExit + unsafe.Offsetof(kvmRunHW{}.hardwareExitReason), 32},
	{"kvm_run.kvm_valid_regs", unsafe.Offsetof(kvmRun{}.kvmValidRegs), 288},
	{"kvm_run.kvm_dirty_regs", unsafe.Offsetof(kvmRun{}.kvmDirtyRegs), 296},
	{"kvm_run.s", unsafe.Offsetof(kvmRun{}.s), 304},
}

func TestKernelStructLayouts(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			assert.Equal(t, l.want, l.got)
		})
	}
}

// The union views cast the start of a union to a member mirror; each
// member must fit inside the union and need no more alignment than the
// union has in its Go container (whose offset is a multiple of 8).
func TestUnionMembersFit(t *testing.T) {
	tests := []struct {
		name        string
		size, align uintptr
		union       uintptr
		unionAlign  uintptr
	}{
		{"kvm_run.io", unsafe.Sizeof(kvmRunIO{}), unsafe.Alignof(kvmRunIO{}), kvmRunExitSize, unsafe.Alignof(kvmRun{})},
		{"kvm_run.mmio", unsafe.Sizeof(kvmRunMMIO{}), unsafe.Alignof(kvmRunMMIO{}), kvmRunExitSize, unsafe.Alignof(kvmRun{})},
		{"kvm_run.fail_entry", unsafe.Sizeof(kvmRunFailEntry{}), unsafe.Alignof(kvmRunFailEntry{}), kvmRunExitSize, unsafe.Alignof(kvmRun{})},
		{"kvm_run.internal", unsafe.Sizeof(kvmRunInternal{}), unsafe.Alignof(kvmRunInternal{}), kvmRunExitSize, unsafe.Alignof(kvmRun{})},
		{"kvm_run.system_event", unsafe.Sizeof(kvmRunSystemEvent{}), unsafe.Alignof(kvmRunSystemEvent{}), kvmRunExitSize, unsafe.Alignof(kvmRun{})},
		{"kvm_run.debug", unsafe.Sizeof(kvmRunDebug{}), unsafe.Alignof(kvmRunDebug{}), kvmRunExitSize, unsafe.Alignof(kvmRun{})},
		{"kvm_run.hw", unsafe.Sizeof(kvmRunHW{}), unsafe.Alignof(kvmRunHW{}), kvmRunExitSize, unsafe.Alignof(kvmRun{})},
		{"kvm_irq_routing_entry.u.irqchip", unsafe.Sizeof(kvmIRQRoutingIRQChip{}), unsafe.Alignof(kvmIRQRoutingIRQChip{}), irqRoutingUnionSize, unsafe.Alignof(IRQRoutingEntry{})},
		{"kvm_irq_routing_entry.u.msi", unsafe.Sizeof(kvmIRQRoutingMSI{}), unsafe.Alignof(kvmIRQRoutingMSI{}), irqRoutingUnionSize, unsafe.Alignof(IRQRoutingEntry{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.LessOrEqual(t, tt.size, tt.union)
			assert.Zero(t, tt.unionAlign%tt.align, "member alignment %d", tt.align)
		})
	}
	assert.Zero(t, runExit%8)
	assert.Zero(t, unsafe.Offsetof(IRQRoutingEntry{}.u)%8)
}
