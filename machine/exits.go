package machine

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/gvmm-dev/gvmm/kvm"
)

// handleExit dispatches one exit of vCPU v; it reports whether the vCPU
// thread is done.
func (b *bootedVM) handleExit(v *vcpu, exit kvm.Exit) bool {
	switch exit.Reason {
	case kvm.ExitIO:
		io := exit.IO
		for i := 0; i < int(io.Count); i++ {
			data := io.Data[i*int(io.Size) : (i+1)*int(io.Size)]
			if io.Direction == kvm.IOIn {
				b.pio.Read(v.id, uint64(io.Port), data)
			} else {
				b.pio.Write(v.id, uint64(io.Port), data)
			}
		}
	case kvm.ExitMMIO:
		if exit.MMIO.IsWrite {
			b.mmio.Write(v.id, exit.MMIO.Addr, exit.MMIO.Data)
		} else {
			b.mmio.Read(v.id, exit.MMIO.Addr, exit.MMIO.Data)
		}
	case kvm.ExitInterrupted, kvm.ExitIRQWindowOpen:
		// A kick or a signal: the loop re-checks whether the VM is ending.
	case kvm.ExitSystemEvent:
		switch exit.SystemEvent.Type {
		case kvm.SystemEventShutdown:
			b.end(ExitPowerOff, nil)
		case kvm.SystemEventReset:
			b.end(ExitReboot, nil)
		default:
			b.fault(v, fmt.Errorf("%w: vcpu %d: system event %s", ErrGuestFault, v.id, exit.SystemEvent.Type))
		}
		return true
	case kvm.ExitShutdown:
		b.fault(v, fmt.Errorf("%w: vcpu %d: triple fault", ErrGuestFault, v.id))
		return true
	case kvm.ExitInternalError:
		// Named: "suberror 1" tells a user nothing about a guest that, say,
		// jumped to where no RAM is.
		b.fault(v, fmt.Errorf("%w: vcpu %d: KVM internal error: %v (suberror %d)",
			ErrGuestFault, v.id, exit.Internal.Suberror, uint32(exit.Internal.Suberror)))
		return true
	case kvm.ExitFailEntry:
		b.fault(v, fmt.Errorf("%w: vcpu %d: VM entry failed, hardware reason %#x", ErrGuestFault, v.id, exit.FailEntry.HardwareReason))
		return true
	default:
		b.fault(v, fmt.Errorf("%w: vcpu %d: unexpected exit %s", ErrGuestFault, v.id, exit.Reason))
		return true
	}
	return false
}

// fault ends the VM with err, logging the vCPU's registers at debug level
// for whoever has to find out what the guest did.
func (b *bootedVM) fault(v *vcpu, err error) {
	b.dumpRegs(v)
	b.end(ExitFault, err)
}

// dumpRegs logs a vCPU's registers at debug level.
func (b *bootedVM) dumpRegs(v *vcpu) {
	if b.m.log.Enabled(context.Background(), slog.LevelDebug) {
		if regs, rerr := v.cpu.Regs(); rerr == nil {
			b.m.log.Debug("vcpu registers", "vcpu", v.id, "regs", fmt.Sprintf("%+v", regs))
		}
		if sregs, rerr := v.cpu.Sregs(); rerr == nil {
			b.m.log.Debug("vcpu system registers", "vcpu", v.id, "cr0", fmt.Sprintf("%#x", sregs.CR0),
				"cr3", fmt.Sprintf("%#x", sregs.CR3), "cr4", fmt.Sprintf("%#x", sregs.CR4),
				"efer", fmt.Sprintf("%#x", sregs.EFER), "cs", fmt.Sprintf("%+v", sregs.CS))
		}
	}
}
