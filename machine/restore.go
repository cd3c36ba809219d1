package machine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/machine/snapshot"
	"github.com/gvmm-dev/gvmm/virtio"
	vnet "github.com/gvmm-dev/gvmm/virtio/net"
	"github.com/gvmm-dev/gvmm/virtio/vsock"
)

// ClockMode says what a restored guest's clock does about the time the
// snapshot spent on disk.
type ClockMode int

const (
	// ClockContinue resumes kvmclock where it stopped, as Firecracker
	// does: no time passes for the guest, whose monotonic clock never
	// jumps; its wall clock is behind until it resyncs (NTP, or from the
	// RTC, which always reads the host's time plus the guest's offset).
	ClockContinue ClockMode = iota
	// ClockRealtime advances kvmclock by the wall-clock time since the
	// snapshot was taken: the guest's clocks, monotonic ones included,
	// jump forward, and its wall clock is right at once.
	ClockRealtime
)

// RestoreOptions are the restoring process's own settings; everything
// else comes from the snapshot.
type RestoreOptions struct {
	// Paused leaves the restored machine paused until Resume.
	Paused bool
	Clock  ClockMode
	// VsockSocket, when set, replaces the vsock socket path of the
	// snapshot's configuration: clones of one snapshot each need their own.
	VsockSocket string
	// Nets, when set, replace the snapshot's TAPs: one for each of its
	// network devices, in order (a clone needs its own TAP). Tap and
	// File are as in Config.Nets, and Start takes File over likewise.
	// MAC, if set, must be the snapshot's: the guest's driver read it at
	// boot and keeps it. Limits, if not zero, replace the snapshot's.
	// Without Nets, each TAP the snapshot's machine was given by name is
	// opened by that name again (and created if absent).
	Nets []Net
	// Shares replace the snapshot's shares of the same tags (a clone
	// served a copy of the folder); a tag the snapshot lacks is refused.
	Shares []Share
	// Console, ConsoleIn, Log, KVMDevice and BeforeRun are as in Config.
	Console   io.Writer
	ConsoleIn io.Reader
	Log       *slog.Logger
	KVMDevice string
	BeforeRun func(reopen []string) error
}

// Errors a refused restore wraps, besides the snapshot package's.
var (
	ErrDiskChanged = errors.New("disk image changed since the snapshot")
	ErrShare       = errors.New("share of the snapshot cannot be served")
	ErrCPUFeatures = errors.New("host CPU lacks features the snapshot's vCPUs use")
)

// restorePlan is what Start needs to resume a snapshot instead of booting.
type restorePlan struct {
	dir   string
	state *snapshot.State
	opts  RestoreOptions
}

// Restore reads the snapshot in dir and returns a machine that Start
// resumes from it in this process, with no boot: guest RAM is mapped from
// the snapshot's memory file copy-on-write, so nothing is read up front
// and several machines restored from one snapshot share its pages until
// they write them. Refused before anything starts: a state file of
// another format version, damaged or truncated (snapshot.ErrFormat,
// ErrVersion, ErrChecksum), a memory file of the wrong size
// (snapshot.ErrMemoryFile), a disk image that changed (ErrDiskChanged);
// Start refuses a host CPU without the features the vCPUs were given
// (ErrCPUFeatures).
func Restore(dir string, opts RestoreOptions) (*Machine, error) {
	st, err := readState(filepath.Join(dir, snapshot.StateFile))
	if err != nil {
		return nil, err
	}
	if err := checkDisks(st.Config.Disks); err != nil {
		return nil, err
	}
	f, err := snapshot.OpenMemory(filepath.Join(dir, snapshot.MemoryFile), st.MemorySize)
	if err != nil {
		return nil, err
	}
	f.Close()
	rc, err := restoredConfig(st.Config, opts)
	if err != nil {
		return nil, err
	}
	if err := checkShares(rc.Shares); err != nil {
		return nil, err
	}
	if rc.Nets, err = restoredNets(st, opts.Nets); err != nil {
		return nil, err
	}
	c, err := rc.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Machine{cfg: c, log: c.Log, done: make(chan struct{}), stop: make(chan struct{}),
		vcpuStats: make([]vcpuStats, c.CPUs), restoring: &restorePlan{dir: dir, state: st, opts: opts}}, nil
}

func readState(path string) (*snapshot.State, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("machine: restore: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, snapshot.MaxStateSize+4096))
	if err != nil {
		return nil, fmt.Errorf("machine: restore: %w", err)
	}
	st, err := snapshot.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("machine: restore %s: %w", path, err)
	}
	return st, nil
}

// restoredNets returns the network devices of the snapshot st, on the
// TAPs of over if given: each with the MAC and rate limits its device
// had.
func restoredNets(st *snapshot.State, over []Net) ([]Net, error) {
	var states []*vnet.State
	for _, v := range st.Devices.Virtio {
		if v.Type == virtio.DeviceNet {
			if v.Net == nil {
				return nil, fmt.Errorf("machine: restore: %w: network device without its state", snapshot.ErrFormat)
			}
			states = append(states, v.Net)
		}
	}
	saved := st.Config.Nets
	switch {
	case len(states) != len(saved):
		return nil, fmt.Errorf("machine: restore: %w: %d network devices configured, %d saved", snapshot.ErrFormat, len(saved), len(states))
	case len(over) > 0 && len(over) != len(saved):
		return nil, configError("Nets", nil, "the snapshot has %d network devices, %d TAPs given: one for each, in order", len(saved), len(over))
	}
	var nets []Net
	for i, s := range saved {
		n := Net{Tap: s.Tap, MAC: slices.Clone(states[i].MAC[:]), Limits: states[i].Limits}
		if len(over) > 0 {
			o := over[i]
			if o.MAC != nil && !bytes.Equal(o.MAC, n.MAC) {
				return nil, configError(fmt.Sprintf("Nets[%d].MAC", i), nil,
					"network device %d: MAC %s, the snapshot's is %s: the guest's driver keeps the MAC it read at boot", i, o.MAC, n.MAC)
			}
			n.Tap, n.File = o.Tap, o.File
			if o.Limits != (vnet.Limits{}) {
				n.Limits = o.Limits
			}
		}
		if n.Tap == "" && n.File == nil {
			return nil, configError(fmt.Sprintf("Nets[%d]", i), nil,
				"network device %d was given an open TAP file, not a TAP name: give it a TAP to restore onto", i)
		}
		nets = append(nets, n)
	}
	return nets, nil
}

func checkDisks(disks []snapshot.Disk) error {
	for _, d := range disks {
		id, err := diskIdentity(d.Path)
		if err != nil {
			return fmt.Errorf("machine: restore: %w", err)
		}
		if id != d.Identity {
			return fmt.Errorf("machine: restore: %w: %s (size, inode or modification time differ)", ErrDiskChanged, d.Path)
		}
	}
	return nil
}

// checkShares refuses a share whose folder is missing, before anything
// starts: its fids could not be reopened.
func checkShares(shares []Share) error {
	for _, sh := range shares {
		fi, err := os.Stat(sh.Path)
		if err == nil && !fi.IsDir() {
			err = errors.New("not a folder")
		}
		if err != nil {
			return fmt.Errorf("machine: restore: %w: tag %s, folder %s: %w", ErrShare, sh.Tag, sh.Path, err)
		}
	}
	return nil
}

func restoredConfig(s snapshot.Config, o RestoreOptions) (*Config, error) {
	c := &Config{
		Kernel: s.Kernel, KernelCache: s.KernelCache, Initrd: s.Initrd, Cmdline: s.Cmdline,
		CPUs: s.CPUs, Memory: s.Memory, Mergeable: s.Mergeable, HugePages: s.HugePages,
		AllowCPUOvercommit: s.AllowCPUOvercommit,
		Console:            o.Console, ConsoleIn: o.ConsoleIn, Log: o.Log, KVMDevice: o.KVMDevice,
		BeforeRun: o.BeforeRun,
	}
	if s.RebootRestart {
		c.OnReboot = RebootRestart
	}
	for _, d := range s.Disks {
		c.Disks = append(c.Disks, Disk{Path: d.Path, ReadOnly: d.ReadOnly, Serial: d.Serial, Limit: d.Limit})
	}
	for _, sh := range s.Shares {
		c.Shares = append(c.Shares, Share{Path: sh.Path, Tag: sh.Tag, ReadOnly: sh.ReadOnly, SetID: sh.SetID})
	}
	for _, sh := range o.Shares {
		i := slices.IndexFunc(c.Shares, func(s Share) bool { return s.Tag == sh.Tag })
		if i < 0 {
			return nil, fmt.Errorf("machine: restore: %w: the snapshot has no share tagged %q", ErrShare, sh.Tag)
		}
		c.Shares[i] = sh
	}
	if s.Balloon != nil {
		c.Balloon = &BalloonConfig{Size: s.Balloon.Size}
	}
	if s.Vsock != nil {
		c.Vsock = &VsockConfig{CID: s.Vsock.CID, Socket: s.Vsock.Socket}
		if o.VsockSocket != "" {
			c.Vsock.Socket = o.VsockSocket
		}
	}
	return c, nil
}

// restoreVM rebuilds the VM of the snapshot and starts its vCPUs. It runs
// once: a later reboot boots the kernel.
func (m *Machine) restoreVM() (_ *bootedVM, err error) {
	plan := m.restoring
	m.restoring = nil
	st := plan.state
	// Again now that the images are open and locked.
	if err := checkDisks(st.Config.Disks); err != nil {
		return nil, err
	}
	f, err := snapshot.OpenMemory(filepath.Join(plan.dir, snapshot.MemoryFile), st.MemorySize)
	if err != nil {
		return nil, err
	}
	b, ctx, mem, err := m.createVM(f)
	f.Close() // the mappings keep the file
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.shutdown()
		}
	}()
	supported, err := b.sys.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	for id, vs := range st.VCPUs {
		if err := checkCPUID(vs.CPUID, supported); err != nil {
			return nil, fmt.Errorf("machine: restore: vCPU %d: %w", id, err)
		}
	}
	if err := b.setupDevices(ctx, mem); err != nil {
		return nil, err
	}
	// ClockRealtime moves the whole machine's time forward by what the
	// snapshot waited: kvmclock and each TSC by the same amount, as the
	// KVM API asks of KVM_CLOCK_REALTIME's users, so that the guest's
	// clocksource watchdog sees them agree.
	var advance time.Duration
	if plan.opts.Clock == ClockRealtime {
		advance = max(0, time.Since(st.Taken))
	}
	var tscAt time.Time // when vCPU 0's TSC was written, which the others follow
	for id, vs := range st.VCPUs {
		vs.MSRs = advanceTSC(vs.MSRs, vs.TSCKHz, advance)
		v, at, err := b.restoreVCPU(id, vs)
		if err != nil {
			return nil, fmt.Errorf("machine: restore: vCPU %d: %w", id, err)
		}
		if id == 0 {
			tscAt = at
		}
		b.vcpus = append(b.vcpus, v)
	}
	// kvmclock right after the TSCs, paired with them (see saveClock).
	if err := b.restoreClock(st, advance, tscAt); err != nil {
		return nil, fmt.Errorf("machine: restore: %w", err)
	}
	if err := b.restoreVMState(st.VM); err != nil {
		return nil, fmt.Errorf("machine: restore: %w", err)
	}
	// Devices after the vCPUs and irqchips: the interrupts they raise
	// (a pending SCI, each virtio queue's once-over) must reach restored
	// LAPICs, not ones the restore then overwrites.
	if err := b.restoreDevices(st.Devices); err != nil {
		return nil, fmt.Errorf("machine: restore: %w", err)
	}
	if err := m.resetVsock(); err != nil {
		return nil, fmt.Errorf("machine: restore: %w", err)
	}
	if plan.opts.Paused {
		if err := m.quiesce(); err != nil {
			return nil, err
		}
		b.gate.startPaused()
		for _, v := range b.vcpus {
			v.cpu.SetImmediateExit(true) // parks at its first KVM_RUN
		}
	}
	if err := m.beforeRun(); err != nil {
		return nil, err
	}
	for _, v := range b.vcpus {
		b.vcpuWG.Add(1)
		go b.runVCPU(v)
	}
	m.log.Info("guest restored", "snapshot", plan.dir, "vcpus", m.cfg.CPUs, "memory_mib", m.cfg.Memory/MiB,
		"paused", plan.opts.Paused, "taken", st.Taken)
	return b, nil
}

// resetVsock ends the vsock connections the guest had when the snapshot
// was taken: their host ends stayed with the old process. The
// TRANSPORT_RESET event makes the guest's driver drop its sockets and
// read its CID again (spec 5.10.6.7), as Firecracker does.
func (m *Machine) resetVsock() error {
	if m.vsock == nil {
		return nil
	}
	err := m.vsock.dev.ResetTransport()
	switch {
	case errors.Is(err, vsock.ErrNotReady):
		return nil // the driver had not started: it has no connections
	case errors.Is(err, vsock.ErrNoEventBuf):
		m.log.Warn("vsock: the guest left no event buffer; its connections from before the snapshot hang until they time out")
		return nil
	}
	return err
}

// advanceTSC returns msrs with the TSC moved forward by d at khz.
func advanceTSC(msrs []kvm.MSREntry, khz uint32, d time.Duration) []kvm.MSREntry {
	if d <= 0 {
		return msrs
	}
	out := slices.Clone(msrs)
	for i := range out {
		if out[i].Index == msrTSC {
			out[i].Data += tscTicks(khz, d)
		}
	}
	return out
}

// tscTolerancePPM is how far the host's TSC rate may be from the
// snapshot's before the vCPUs' TSC is scaled (Firecracker uses the same
// 250 ppm): closer than that, NTP in the guest absorbs it.
const tscTolerancePPM = 250

// restoreVCPU creates vCPU id and loads vs in the order KVM needs:
//   - CPUID first: KVM checks the XSAVE area, XCR0 and MSRs against the
//     features it gives the vCPU.
//   - MP state, then registers and special registers: SREGS sets EFER and
//     the APIC base (xAPIC or x2APIC mode), which the LAPIC and MSR loads
//     are interpreted against.
//   - XSAVE, XCRs and debug registers.
//   - The LAPIC before the MSRs: a write of the TSC-deadline MSR arms the
//     timer only if the LAPIC's timer is in TSC-deadline mode.
//   - MSRs, the TSC first (saveVCPU sorts it so).
//   - vCPU events last: the loads before can queue or drop interrupts
//     and exceptions (SREGS's interrupt bitmap), and the saved pending
//     events must be what the vCPU resumes with.
//
// The values are untrusted but only the guest's own: KVM validates them.
//
// It returns when the TSC was written (the first MSR, just after the
// call began).
func (b *bootedVM) restoreVCPU(id int, vs snapshot.VCPU) (_ *vcpu, tscAt time.Time, _ error) {
	cpu, err := b.vm.CreateVCPU(uint32(id))
	if err != nil {
		return nil, tscAt, err
	}
	b.closers = append(b.closers, cpu.Close)
	if err := cpu.SetCPUID(vs.CPUID); err != nil {
		return nil, tscAt, err
	}
	scaled, err := b.restoreTSCRate(cpu, vs.TSCKHz)
	if err != nil {
		return nil, tscAt, err
	}
	steps := []func() error{
		func() error { return cpu.SetMPState(vs.MPState) },
		func() error { return cpu.SetRegs(vs.Regs) },
		func() error { return cpu.SetSregs(vs.Sregs) },
		func() error { return cpu.SetXSave(vs.XSave) },
		func() error { return cpu.SetXCRs(vs.XCRs) },
		func() error { return cpu.SetDebugRegs(vs.DebugRegs) },
		func() error { return cpu.SetLAPIC(vs.LAPIC) },
		func() error { tscAt = time.Now(); return cpu.SetMSRs(vs.MSRs) },
		func() error { return cpu.SetEvents(vs.Events) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, tscAt, err
		}
	}
	return &vcpu{id: id, cpu: cpu, stats: &b.m.vcpuStats[id], cpuid: vs.CPUID, tscScaled: scaled}, tscAt, nil
}

// restoreTSCRate makes the vCPU's TSC tick at the snapshot's rate when
// this host's differs by more than the tolerance, so the guest's
// calibrated TSC frequency stays true. It reports whether it scaled it.
func (b *bootedVM) restoreTSCRate(cpu *kvm.VCPU, khz uint32) (bool, error) {
	if khz == 0 {
		return false, nil
	}
	cur, err := cpu.TSCKHz()
	if err != nil {
		return false, err
	}
	if math.Abs(float64(cur)-float64(khz)) <= float64(khz)*tscTolerancePPM/1e6 {
		return false, nil
	}
	if ok, err := b.sys.CheckExtension(kvm.CapTSCControl); err != nil || ok == 0 {
		return false, fmt.Errorf("%w: TSC of %d kHz, this host's runs at %d kHz and KVM cannot scale it", ErrCPUFeatures, khz, cur)
	}
	return true, cpu.SetTSCKHz(khz)
}

func (b *bootedVM) restoreVMState(s snapshot.VM) error {
	seen := map[kvm.IRQChip]bool{}
	for _, c := range s.IRQChips {
		if c.ChipID > kvm.IRQChipIOAPIC || seen[c.ChipID] {
			return fmt.Errorf("%w: interrupt controller %d", snapshot.ErrFormat, c.ChipID)
		}
		seen[c.ChipID] = true
		if err := b.vm.SetIRQChip(c); err != nil {
			return err
		}
	}
	return b.vm.SetPIT2(s.PIT)
}

func (b *bootedVM) restoreDevices(d snapshot.Devices) error {
	s := b.saved
	if err := errors.Join(s.uart.Restore(d.UART), s.kbd.Restore(d.I8042), s.rtc.Restore(d.RTC), b.power.Restore(d.PM)); err != nil {
		return err
	}
	shares := b.m.shares // their functions come in this order
	if len(d.Virtio) != len(b.virtio) {
		return fmt.Errorf("%w: %d virtio devices saved, the configuration has %d", snapshot.ErrFormat, len(d.Virtio), len(b.virtio))
	}
	nets := 0
	for i, fn := range b.virtio {
		v := d.Virtio[i]
		if v.Type != fn.Type() {
			return fmt.Errorf("%w: virtio device %d is %s, the configuration's is %s", snapshot.ErrFormat, i, v.Type, fn.Type())
		}
		switch fn.Type() {
		case virtio.DeviceBalloon:
			if v.Balloon == nil {
				return fmt.Errorf("%w: balloon without its state", snapshot.ErrFormat)
			}
			if err := b.m.balloon.Restore(*v.Balloon); err != nil {
				return err
			}
		case virtio.DeviceNet:
			// restoredNets checked that each has its state, and took
			// its MAC and limits, or the limits given instead, into
			// the configuration the device was made from.
			c := b.m.cfg.Nets[nets]
			if err := b.m.nets[nets].dev.Restore(vnet.State{MAC: [6]byte(c.MAC), Limits: c.Limits}); err != nil {
				return err
			}
			nets++
		case virtio.Device9P:
			if v.P9 == nil {
				return fmt.Errorf("%w: share without its state", snapshot.ErrFormat)
			}
			if err := shares[0].Restore(*v.P9); err != nil {
				return err
			}
			shares = shares[1:]
		}
		if err := fn.Restore(v.Transport); err != nil {
			return err
		}
	}
	return s.root.Restore(d.PCI)
}

// Feature leaves whose bits a restored vCPU may use only if the host has
// them: leaf, subleaf and registers (eax, ebx, ecx, edx), with the bits
// the machine sets itself masked out of leaf 1.
var featureLeaves = []struct {
	fn, index uint32
	mask      [4]uint32
}{
	{cpuidFeatures, 0, [4]uint32{0, 0, ^uint32(featureECXHypervis | featureECXTSCDline), ^uint32(featureEDXHTT)}},
	{7, 0, [4]uint32{0, ^uint32(0), ^uint32(0), ^uint32(0)}},
	{7, 1, [4]uint32{^uint32(0), 0, 0, 0}},
	{0xd, 1, [4]uint32{^uint32(0), 0, 0, 0}},
	{0x80000001, 0, [4]uint32{0, 0, ^uint32(0), ^uint32(0)}},
}

// checkCPUID refuses a vCPU whose CPUID (from the snapshot) has feature
// bits this host's KVM does not support: a guest that detected them at
// boot would fault, or worse compute wrongly, using them here.
func checkCPUID(saved, host []kvm.CPUIDEntry) error {
	find := func(es []kvm.CPUIDEntry, fn, index uint32) (kvm.CPUIDEntry, bool) {
		for _, e := range es {
			if e.Function == fn && (e.Flags&kvm.CPUIDFlagSignificantIndex == 0 || e.Index == index) {
				return e, true
			}
		}
		return kvm.CPUIDEntry{}, false
	}
	var missing []string
	for _, l := range featureLeaves {
		s, ok := find(saved, l.fn, l.index)
		if !ok {
			continue
		}
		h, _ := find(host, l.fn, l.index)
		sv := [4]uint32{s.EAX, s.EBX, s.ECX, s.EDX}
		hv := [4]uint32{h.EAX, h.EBX, h.ECX, h.EDX}
		for r, name := range []string{"eax", "ebx", "ecx", "edx"} {
			if lack := sv[r] & l.mask[r] &^ hv[r]; lack != 0 {
				missing = append(missing, fmt.Sprintf("leaf %#x.%d %s bits %#x", l.fn, l.index, name, lack))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %v", ErrCPUFeatures, missing)
	}
	return nil
}
