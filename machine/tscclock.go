package machine

import (
	"fmt"
	"time"

	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/machine/snapshot"
)

// A guest whose clocksource is the TSC, watched by kvmclock, marks its
// TSC unstable when the two disagree by more than a fraction of a
// millisecond, so a snapshot saves them as one pair: kvmclock, and each
// vCPU's TSC (its saved MSR) as it was at the clock's instant. A restore
// sets them so that the pair holds again: at kvmclock K, vCPU i's TSC is
// its saved TSC plus K minus the saved clock, in ticks.
//
// The exact way is the KVM API's migration recipe (Linux 5.16 and
// later): KVM_GET_CLOCK with KVM_CLOCK_HOST_TSC gives kvmclock and the
// host's TSC at one instant, and each vCPU's KVM_VCPU_TSC_OFFSET turns
// the host's TSC into the guest's. KVM only reports the host's TSC while
// it runs its master clock (the host's clocksource is the TSC, and the
// vCPUs' TSCs are synchronised). Without it, the pair is made by timing
// the calls, which the scheduler can upset by milliseconds.

// saveClock reads kvmclock and sets every saved vCPU's TSC to its value
// at the clock's instant.
func (b *bootedVM) saveClock(vcpus []snapshot.VCPU) (kvm.ClockData, error) {
	reason, err := b.exactClockUnavailable()
	if err != nil {
		return kvm.ClockData{}, err
	}
	if reason == "" {
		c, err := b.vm.Clock()
		if err != nil {
			return kvm.ClockData{}, err
		}
		if c.Flags&kvm.ClockHostTSC != 0 {
			for i, v := range b.vcpus {
				off, err := v.cpu.TSCOffset()
				if err != nil {
					return kvm.ClockData{}, fmt.Errorf("vCPU %d: %w", v.id, err)
				}
				setTSC(vcpus[i].MSRs, c.HostTSC+off)
			}
			return c, nil
		}
		reason = "KVM does not run its master clock"
	}
	b.m.log.Info("snapshot: kvmclock and the TSCs paired by timing the calls, which can be off by milliseconds", "reason", reason)
	return b.clockAtTSC(vcpus)
}

// exactClockUnavailable says why KVM cannot pair kvmclock and the TSCs
// exactly, or "" if it may (KVM_GET_CLOCK has the final say).
func (b *bootedVM) exactClockUnavailable() (string, error) {
	for _, v := range b.vcpus {
		if v.tscScaled {
			return "the vCPUs' TSCs are scaled to the snapshot's rate", nil
		}
		ok, err := v.cpu.HasTSCOffset()
		if err != nil {
			return "", fmt.Errorf("vCPU %d: %w", v.id, err)
		}
		if !ok {
			return "KVM has no KVM_VCPU_TSC_OFFSET (Linux before 5.16)", nil
		}
	}
	return "", nil
}

// clockAtTSC reads vCPU 0's TSC again and kvmclock right after, and
// returns kvmclock as it was when the TSC was read. Every vCPU is saved
// with vCPU 0's TSC: KVM gives vCPUs whose TSCs are written within a
// second of each other one offset anyway.
func (b *bootedVM) clockAtTSC(vcpus []snapshot.VCPU) (kvm.ClockData, error) {
	before := time.Now()
	tsc, err := b.vcpus[0].cpu.MSRs([]uint32{msrTSC})
	tscAt := midpoint(before, time.Now())
	if err != nil {
		return kvm.ClockData{}, err
	}
	before = time.Now()
	c, err := b.vm.Clock()
	clockAt := midpoint(before, time.Now())
	if err != nil {
		return kvm.ClockData{}, err
	}
	for _, vs := range vcpus {
		setTSC(vs.MSRs, tsc[0].Data)
	}
	c.Clock -= min(c.Clock, uint64(clockAt.Sub(tscAt)))
	return c, nil
}

func midpoint(a, b time.Time) time.Time { return a.Add(b.Sub(a) / 2) }

// restoreClock sets kvmclock to the saved clock plus advance and makes
// the vCPUs' TSCs agree with it. tscAt is when vCPU 0's TSC MSR was
// written, for the timed way.
//
// Only the time is taken from the saved clock: KVM_CLOCK_TSC_STABLE and
// the host TSC and realtime samples describe the old host, and
// KVM_SET_CLOCK would read KVM_CLOCK_REALTIME as a request to add the
// host time since that sample, which ClockRealtime does itself (advance)
// so that it works on kernels before 5.16 too.
func (b *bootedVM) restoreClock(st *snapshot.State, advance time.Duration, tscAt time.Time) error {
	saved := st.VM.Clock.Clock
	reason, err := b.exactClockUnavailable()
	if err != nil {
		return err
	}
	if reason == "" {
		if err := b.vm.SetClock(kvm.ClockData{Clock: saved + uint64(advance)}); err != nil {
			return err
		}
		c, err := b.vm.Clock()
		if err != nil {
			return err
		}
		if c.Flags&kvm.ClockHostTSC != 0 {
			for i, v := range b.vcpus {
				vs := st.VCPUs[i]
				tsc := tscAtClock(vs.MSRs, vs.TSCKHz, saved, c.Clock)
				if err := v.cpu.SetTSCOffset(tsc - c.HostTSC); err != nil {
					return fmt.Errorf("vCPU %d: %w", v.id, err)
				}
			}
			return nil
		}
		reason = "KVM does not run its master clock"
	}
	// kvmclock as it would have been had it been set at the same instant
	// as vCPU 0's TSC, which the others follow.
	b.m.log.Info("restore: kvmclock and the TSCs paired by timing the calls, which can be off by milliseconds", "reason", reason)
	return b.vm.SetClock(kvm.ClockData{Clock: saved + uint64(advance) + uint64(time.Since(tscAt))})
}

// tscAtClock is the TSC a vCPU saved with msrs must have when kvmclock
// reads now, the snapshot's clock having been saved: the saved TSC plus
// the clock's progress since, in ticks at khz.
func tscAtClock(msrs []kvm.MSREntry, khz uint32, saved, now uint64) uint64 {
	var tsc uint64
	for _, m := range msrs {
		if m.Index == msrTSC {
			tsc = m.Data
		}
	}
	if now <= saved {
		return tsc
	}
	return tsc + tscTicks(khz, time.Duration(now-saved))
}

// tscTicks is how far a TSC at khz moves in d.
func tscTicks(khz uint32, d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	// In two parts so that no product overflows: centuries at GHz fit.
	ms := uint64(d / time.Millisecond)
	return ms*uint64(khz) + uint64(d%time.Millisecond)*uint64(khz)/uint64(time.Millisecond)
}

func setTSC(msrs []kvm.MSREntry, v uint64) {
	for i := range msrs {
		if msrs[i].Index == msrTSC {
			msrs[i].Data = v
		}
	}
}
