package machine

import (
	"encoding/binary"
	"math/bits"

	"github.com/gvmm-dev/gvmm/boot"
	"github.com/gvmm-dev/gvmm/kvm"
)

// CPUID leaves and bits the machine adjusts (Intel SDM Vol. 2A, CPUID).
const (
	cpuidFeatures      = 0x1
	cpuidCacheParams   = 0x4
	cpuidTopology      = 0xb
	cpuidTopologyV2    = 0x1f
	cpuidExtTopology   = 0x80000008
	featureECXHypervis = 1 << 31 // "running under a hypervisor": the guest looks for KVM's leaves
	featureECXTSCDline = 1 << 24 // the LAPIC timer's TSC-deadline mode
	featureEDXHTT      = 1 << 28 // more than one logical processor per package
	topologyLevelSMT   = 1
	topologyLevelCore  = 2
)

// guestCPUID derives vCPU id's CPUID from what KVM supports: its APIC ID
// and a topology of n single-thread cores in one package, which matches
// the MADT. KVM's own leaves (0x40000000, "KVMKVMKVM", kvmclock and
// friends) are kept, so the guest uses kvmclock rather than calibrating
// against the PIT. KVM emulates the TSC-deadline timer without listing
// it as supported; tscDeadline (KVM_CAP_TSC_DEADLINE_TIMER) offers it, as
// QEMU and Firecracker do: one MSR write arms the guest's timer, where
// the LAPIC's one-shot mode costs two.
func guestCPUID(supported []kvm.CPUIDEntry, id, n int, tscDeadline bool) []kvm.CPUIDEntry {
	out := append([]kvm.CPUIDEntry(nil), supported...)
	apicID := uint32(id)
	coreBits := uint32(bits.Len(uint(n - 1)))
	for i := range out {
		e := &out[i]
		switch e.Function {
		case cpuidFeatures:
			// EBX[31:24] initial APIC ID, EBX[23:16] logical processors.
			e.EBX = e.EBX&0xffff | apicID<<24 | uint32(n)<<16
			e.ECX |= featureECXHypervis
			if tscDeadline {
				e.ECX |= featureECXTSCDline
			}
			if n > 1 {
				e.EDX |= featureEDXHTT
			} else {
				e.EDX &^= featureEDXHTT
			}
		case cpuidCacheParams:
			// EAX[31:26]: cores per package - 1; one thread per cache.
			e.EAX = e.EAX&0x3fff | uint32(n-1)<<26
		case cpuidTopology, cpuidTopologyV2:
			e.EDX = apicID
			switch e.Index {
			case 0:
				e.EAX, e.EBX, e.ECX = 0, 1, topologyLevelSMT<<8
			case 1:
				e.EAX, e.EBX, e.ECX = coreBits, uint32(n), 1|topologyLevelCore<<8
			default:
				e.EAX, e.EBX, e.ECX = 0, 0, e.Index
			}
		case cpuidExtTopology:
			// ECX[15:12] APIC ID bits, ECX[7:0] cores - 1 (AMD).
			e.ECX = e.ECX&^0xf0ff | coreBits<<12 | uint32(n-1)
		}
	}
	return out
}

// MSRs every vCPU starts with, as Linux expects from firmware.
const (
	msrTSC            = 0x10
	msrSysenterCS     = 0x174
	msrSysenterESP    = 0x175
	msrSysenterEIP    = 0x176
	msrMiscEnable     = 0x1a0
	msrMTRRDefType    = 0x2ff
	msrSTAR           = 0xc0000081
	msrLSTAR          = 0xc0000082
	msrCSTAR          = 0xc0000083
	msrSyscallMask    = 0xc0000084
	msrKernelGSBase   = 0xc0000102
	miscEnableFastStr = 1 << 0
	// MTRRs enabled with write-back as the default type: without it the
	// guest would treat all of RAM as uncacheable.
	mtrrEnable      = 1 << 11
	mtrrTypeWB      = 6
	mtrrDefTypeBoot = mtrrEnable | mtrrTypeWB
)

func bootMSRs() []kvm.MSREntry {
	return []kvm.MSREntry{
		{Index: msrSysenterCS}, {Index: msrSysenterESP}, {Index: msrSysenterEIP},
		{Index: msrSTAR}, {Index: msrLSTAR}, {Index: msrCSTAR},
		{Index: msrKernelGSBase}, {Index: msrSyscallMask}, {Index: msrTSC},
		{Index: msrMiscEnable, Data: miscEnableFastStr},
		{Index: msrMTRRDefType, Data: mtrrDefTypeBoot},
	}
}

// Initial x87 and SSE control words (their values after FNINIT and reset).
const (
	fpuControlWord = 0x37f
	sseMXCSR       = 0x1f80
)

// Local APIC LVT registers and delivery modes (SDM Vol. 3A 10.5.1).
const (
	apicLVTLINT0     = 0x350
	apicLVTLINT1     = 0x360
	apicDeliveryMask = 0x700
	apicModeNMI      = 0x400
	apicModeExtINT   = 0x700
)

// setupLAPIC routes LINT0 to the PIC (ExtINT) and LINT1 to NMI, as the
// MADT's LAPIC NMI entry says and as a BIOS leaves it.
func setupLAPIC(s *kvm.LAPICState) {
	set := func(reg int, mode uint32) {
		v := binary.LittleEndian.Uint32(s.Regs[reg:])
		binary.LittleEndian.PutUint32(s.Regs[reg:], v&^apicDeliveryMask|mode)
	}
	set(apicLVTLINT0, apicModeExtINT)
	set(apicLVTLINT1, apicModeNMI)
}

// segment copies a boot segment into KVM's form.
func segment(s boot.Segment) kvm.Segment {
	b := func(v bool) uint8 {
		if v {
			return 1
		}
		return 0
	}
	return kvm.Segment{
		Base: s.Base, Limit: s.Limit, Selector: s.Selector, Type: s.Type,
		Present: b(s.Present), DPL: s.DPL, DB: b(s.DB), S: b(s.S), L: b(s.L), G: b(s.G),
	}
}

// applyEntry puts the boot CPU in the state the loader asked for.
func applyEntry(sregs *kvm.Sregs, regs *kvm.Regs, e *boot.Entry) {
	sregs.CS, sregs.DS, sregs.ES = segment(e.CS), segment(e.DS), segment(e.ES)
	sregs.FS, sregs.GS, sregs.SS = segment(e.FS), segment(e.GS), segment(e.SS)
	sregs.TR = segment(e.TR)
	sregs.GDT = kvm.DTable{Base: e.GDT.Base, Limit: e.GDT.Limit}
	sregs.IDT = kvm.DTable{}
	sregs.CR0, sregs.CR3, sregs.CR4, sregs.EFER = e.CR0, e.CR3, e.CR4, e.EFER
	*regs = kvm.Regs{RIP: e.RIP, RSP: e.RSP, RSI: e.RSI, RBX: e.RBX, RFLAGS: e.RFLAGS}
}
