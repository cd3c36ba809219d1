package measure

import "fmt"

// ExitName names a kvm_exit tracepoint's exit_reason: an SVM exit code
// on AMD (svm bool), a VMX basic exit reason on Intel.
func ExitName(svm bool, code uint64) string {
	if !svm {
		if n, ok := vmxExits[code]; ok {
			return n
		}
		return fmt.Sprintf("VMX_%d", code)
	}
	switch {
	case code < 0x10:
		return fmt.Sprintf("READ_CR%d", code)
	case code < 0x20:
		return fmt.Sprintf("WRITE_CR%d", code-0x10)
	case code < 0x30:
		return fmt.Sprintf("READ_DR%d", code-0x20)
	case code < 0x40:
		return fmt.Sprintf("WRITE_DR%d", code-0x30)
	case code < 0x60:
		if n, ok := exceptions[code-0x40]; ok {
			return "EXCP_" + n
		}
		return fmt.Sprintf("EXCP_%d", code-0x40)
	case code >= 0x90 && code < 0xa0:
		return fmt.Sprintf("CR%d_WRITE_TRAP", code-0x90)
	}
	if n, ok := svmExits[code]; ok {
		return n
	}
	return fmt.Sprintf("SVM_%#x", code)
}

// From arch/x86/include/uapi/asm/svm.h.
var svmExits = map[uint64]string{
	0x60: "INTR", 0x61: "NMI", 0x62: "SMI", 0x63: "INIT", 0x64: "VINTR",
	0x65: "CR0_SEL_WRITE", 0x6e: "RDTSC", 0x6f: "RDPMC", 0x70: "PUSHF",
	0x71: "POPF", 0x72: "CPUID", 0x73: "RSM", 0x74: "IRET", 0x75: "SWINT",
	0x76: "INVD", 0x77: "PAUSE", 0x78: "HLT", 0x79: "INVLPG", 0x7a: "INVLPGA",
	0x7b: "IOIO", 0x7c: "MSR", 0x7d: "TASK_SWITCH", 0x7e: "FERR_FREEZE",
	0x7f: "SHUTDOWN", 0x80: "VMRUN", 0x81: "VMMCALL", 0x82: "VMLOAD",
	0x83: "VMSAVE", 0x84: "STGI", 0x85: "CLGI", 0x86: "SKINIT", 0x87: "RDTSCP",
	0x88: "ICEBP", 0x89: "WBINVD", 0x8a: "MONITOR", 0x8b: "MWAIT",
	0x8c: "MWAIT_COND", 0x8d: "XSETBV", 0x8e: "RDPRU", 0x8f: "EFER_WRITE_TRAP",
	0xa0: "INVPCID", 0x400: "NPF", 0x401: "AVIC_INCOMPLETE_IPI",
	0x402: "AVIC_UNACCELERATED_ACCESS", 0x403: "VMGEXIT",
}

var exceptions = map[uint64]string{
	0: "DE", 1: "DB", 2: "NMI", 3: "BP", 4: "OF", 5: "BR", 6: "UD", 7: "NM",
	8: "DF", 10: "TS", 11: "NP", 12: "SS", 13: "GP", 14: "PF", 16: "MF",
	17: "AC", 18: "MC", 19: "XM",
}

// From arch/x86/include/uapi/asm/vmx.h.
var vmxExits = map[uint64]string{
	0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 2: "TRIPLE_FAULT",
	3: "INIT_SIGNAL", 7: "INTERRUPT_WINDOW", 8: "NMI_WINDOW", 9: "TASK_SWITCH",
	10: "CPUID", 12: "HLT", 13: "INVD", 14: "INVLPG", 15: "RDPMC", 16: "RDTSC",
	18: "VMCALL", 28: "CR_ACCESS", 29: "DR_ACCESS", 30: "IO_INSTRUCTION",
	31: "MSR_READ", 32: "MSR_WRITE", 33: "INVALID_STATE", 36: "MWAIT",
	39: "MONITOR", 40: "PAUSE", 43: "TPR_BELOW_THRESHOLD", 44: "APIC_ACCESS",
	45: "EOI_INDUCED", 48: "EPT_VIOLATION", 49: "EPT_MISCONFIG",
	52: "PREEMPTION_TIMER", 54: "WBINVD", 55: "XSETBV", 56: "APIC_WRITE",
	58: "INVPCID",
}
