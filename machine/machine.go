// Package machine assembles a virtual machine from the kvm, boot and
// devices packages: guest memory and its layout, the in-kernel irqchip,
// the legacy devices on the port I/O bus, ACPI tables, one locked OS
// thread per vCPU, and the machine's lifecycle.
package machine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/boot"
	"github.com/gvmm-dev/gvmm/boot/kernelcache"
	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/devices/pm"
	"github.com/gvmm-dev/gvmm/devices/uart"
	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/machine/mptable"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/balloon"
	"github.com/gvmm-dev/gvmm/virtio/blk"
	"github.com/gvmm-dev/gvmm/virtio/p9"
)

// ExitReason says why a machine ended.
type ExitReason int

const (
	ExitPowerOff ExitReason = iota + 1 // the guest powered off
	ExitReboot                         // the guest rebooted and OnReboot is RebootExit
	ExitStopped                        // Stop or context cancellation
	ExitFault                          // a VMM or guest fault; Wait returns the error
)

func (r ExitReason) String() string {
	switch r {
	case ExitPowerOff:
		return "powered off"
	case ExitReboot:
		return "rebooted"
	case ExitStopped:
		return "stopped"
	case ExitFault:
		return "fault"
	}
	return fmt.Sprintf("ExitReason(%d)", int(r))
}

// ErrGuestFault is wrapped by errors the guest caused (triple fault,
// KVM internal error, failed VM entry).
var ErrGuestFault = errors.New("guest fault")

// Machine is one virtual machine. Several can run in one process.
type Machine struct {
	cfg Config
	log *slog.Logger
	// kernel is the image that boots: Config.Kernel, or the ELF kernel
	// the cache holds for it.
	kernel string
	// console carries the UART's output to Config.Console.
	console *uart.Sink

	startOnce sync.Once
	done      chan struct{}
	stop      chan struct{} // closed by Stop
	stopOnce  sync.Once

	disks   []*blk.Disk // open for the machine's lifetime: the image locks
	pauseMu sync.Mutex  // serialises Pause and Resume
	balloon *balloon.Balloon
	shares  []*p9.Device // open for the machine's lifetime
	vsock   *vsockDev
	nets    []netDev // open for the machine's lifetime
	cur     atomic.Pointer[bootedVM]
	started atomic.Pointer[time.Time]

	vcpuStats []vcpuStats // by vCPU id, kept across reboots

	restoring *restorePlan // set by Restore: Start resumes a snapshot

	// input carries console input from the one goroutine reading
	// Config.ConsoleIn to the UART of the current boot.
	input chan []byte

	mu     sync.Mutex
	reason ExitReason
	err    error
}

// New validates cfg and returns a machine ready to Start.
func New(cfg Config) (*Machine, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	for _, f := range []string{c.Kernel, c.Initrd} {
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		} else if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalidConfig, f)
		}
	}
	return &Machine{cfg: c, log: c.Log, done: make(chan struct{}), stop: make(chan struct{}),
		vcpuStats: make([]vcpuStats, c.CPUs)}, nil
}

// Start boots the guest. It returns once the vCPUs run, or with the
// error that kept the guest from booting. Cancelling ctx stops the
// machine, as Stop does.
func (m *Machine) Start(ctx context.Context) error {
	err := errors.New("machine: already started")
	m.startOnce.Do(func() {
		if m.cfg.ConsoleIn != nil {
			m.input = make(chan []byte)
		}
		var b *bootedVM
		// Before the vCPU threads start: see reserveProcs.
		reserveProcs(m.cfg.CPUs)
		m.kernel = m.cfg.Kernel
		if m.restoring == nil { // a restore boots no kernel: spare it the cache
			m.kernel = m.cachedKernel()
		}
		m.console = uart.NewSink(m.cfg.Console, consoleBuffer, m.log)
		if err = m.openBalloon(); err == nil {
			err = m.openDisks()
		}
		if err == nil {
			err = m.openShares()
		}
		if err == nil {
			err = m.openVsock()
		}
		if err == nil {
			err = m.openNets()
		}
		if err == nil && m.restoring != nil {
			b, err = m.restoreVM()
		} else if err == nil {
			b, err = m.boot()
		}
		if err != nil {
			releaseProcs(m.cfg.CPUs)
			m.finish(ExitFault, err)
			m.closeDisks()
			m.closeShares()
			m.closeVsock()
			m.closeNets()
			m.closeConsole()
			close(m.done)
			return
		}
		now := time.Now()
		m.started.Store(&now)
		m.cur.Store(b)
		if m.input != nil {
			go m.readConsole()
		}
		go m.supervise(ctx, b)
	})
	return err
}

// The console's buffer, and how long a machine that ended waits for it
// to drain: output past them is dropped rather than stall a vCPU or the
// end of the machine.
const (
	consoleBuffer = 1 << 20
	consoleDrain  = 2 * time.Second
)

func (m *Machine) closeConsole() {
	if n := m.console.Close(consoleDrain); n > 0 {
		m.log.Warn("console output dropped", "bytes", n)
	}
}

func (m *Machine) openDisks() error {
	for _, d := range m.cfg.Disks {
		disk, err := blk.Open(d.Path, blk.Options{ReadOnly: d.ReadOnly, Serial: d.Serial, Limit: d.Limit, Log: m.log})
		if err != nil {
			return fmt.Errorf("machine: disk %s: %w", d.Path, err)
		}
		m.disks = append(m.disks, disk)
	}
	return nil
}

func (m *Machine) closeDisks() {
	m.pauseMu.Lock() // Pause may be quiescing them
	defer m.pauseMu.Unlock()
	for _, d := range m.disks {
		if err := d.Close(); err != nil {
			m.log.Warn("closing a disk", "err", err)
		}
	}
	m.disks = nil
}

// readConsole reads Config.ConsoleIn until EOF, an error or the end of
// the machine. A read in progress when the machine ends finishes when
// the reader returns: close the reader to end it.
func (m *Machine) readConsole() {
	defer close(m.input)
	for {
		buf := make([]byte, 4096)
		n, err := m.cfg.ConsoleIn.Read(buf)
		if n > 0 {
			select {
			case m.input <- buf[:n]:
			case <-m.done:
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				m.log.Warn("reading console input", "err", err)
			}
			return
		}
	}
}

// feedConsole passes console input to the guest's UART until ctx ends.
func (m *Machine) feedConsole(ctx context.Context, u *uart.UART) {
	for {
		select {
		case p, ok := <-m.input:
			if !ok || u.Receive(ctx, p) != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// Wait blocks until the machine has ended and every vCPU thread, device
// goroutine and file descriptor is released. It returns nil when the
// guest powered off, rebooted or was stopped, and the fault otherwise.
func (m *Machine) Wait() error {
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// ExitReason says why the machine ended; valid after Wait returns.
func (m *Machine) ExitReason() ExitReason {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reason
}

// Stop ends the machine at once, even with vCPUs inside KVM_RUN.
func (m *Machine) Stop() {
	m.stopOnce.Do(func() { close(m.stop) })
}

// finish records the first reason the machine ends with.
func (m *Machine) finish(r ExitReason, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reason == 0 {
		m.reason, m.err = r, err
	}
}

// supervise runs the booted VM until it ends, booting it again on a
// reboot when asked to, then releases everything.
func (m *Machine) supervise(ctx context.Context, b *bootedVM) {
	defer close(m.done)
	defer releaseProcs(m.cfg.CPUs)
	for {
		var r vmResult
		select {
		case r = <-b.result:
		case <-m.stop:
			r = vmResult{reason: ExitStopped}
		case <-ctx.Done():
			r = vmResult{reason: ExitStopped}
		}
		b.shutdown()
		if r.reason == ExitReboot && m.cfg.OnReboot == RebootRestart {
			m.log.Info("guest rebooted: booting it again")
			next, err := m.boot()
			if err == nil {
				b = next
				m.cur.Store(b)
				continue
			}
			r = vmResult{reason: ExitFault, err: err}
		}
		m.log.Info("machine ended", "reason", r.reason.String(), "err", r.err)
		m.closeDisks()
		m.closeShares()
		m.closeVsock()
		m.closeNets()
		m.closeConsole()
		m.finish(r.reason, r.err)
		return
	}
}

type vmResult struct {
	reason ExitReason
	err    error
}

// bootedVM is one boot of the guest: the KVM VM, its memory, devices and
// vCPU threads. A reboot with RebootRestart replaces it whole.
type bootedVM struct {
	m      *Machine
	sys    *kvm.System
	vm     *kvm.VM
	vcpus  []*vcpu
	pio    *devices.Bus
	mmio   *devices.Bus
	result chan vmResult // first result wins; buffered
	ending atomic.Bool
	vcpuWG sync.WaitGroup // vCPU threads
	wg     sync.WaitGroup // device goroutines
	cancel context.CancelFunc

	gate      *pauseGate
	power     *pm.PM
	mem       *memory.Memory
	saved     savedDevices // what a snapshot saves besides the above
	gsi       *gsiRoutes
	notifiers *notifiers
	virtio    []*virtio.PCIDevice

	closers []func() error
	begun   time.Time     // when this boot began: the boot timer's origin
	sources []namedSource // the virtio devices' metrics
}

type vcpu struct {
	id    int
	cpu   *kvm.VCPU
	cpuid []kvm.CPUIDEntry // what it was created with, for snapshots
	// tscScaled: a restore made its TSC tick at the snapshot's rate.
	tscScaled bool
	tid       atomic.Int32
	stats     *vcpuStats
}

// end reports the result of this boot and kicks every vCPU out of the
// guest; the first call wins.
func (b *bootedVM) end(reason ExitReason, err error) {
	if !b.ending.CompareAndSwap(false, true) {
		return
	}
	b.result <- vmResult{reason: reason, err: err}
	b.kick()
}

// kick makes every vCPU leave KVM_RUN: immediate_exit covers a vCPU about
// to enter it, the signal one already inside.
func (b *bootedVM) kick() {
	for _, v := range b.vcpus {
		v.cpu.SetImmediateExit(true)
		if tid := v.tid.Load(); tid != 0 {
			_ = unix.Tgkill(os.Getpid(), int(tid), unix.SIGURG)
		}
	}
}

// shutdown stops the vCPUs, then the devices, and releases the VM: no
// device goroutine may touch guest memory once it is unmapped.
func (b *bootedVM) shutdown() {
	b.ending.Store(true)
	b.gate.end()
	b.cancel()
	// Keep kicking until every vCPU thread is out: one may have been
	// about to store its tid when the first kick went out.
	stopped := make(chan struct{})
	go func() { b.vcpuWG.Wait(); close(stopped) }()
	for out := false; !out; {
		b.kick()
		select {
		case <-stopped:
			out = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	for _, v := range b.vcpus {
		b.dumpRegs(v)
	}
	for _, fn := range b.virtio {
		fn.Reset()
	}
	if err := b.notifiers.closeAll(); err != nil {
		b.m.log.Warn("deassigning virtio doorbells", "err", err)
	}
	b.wg.Wait()
	b.release()
}

func (b *bootedVM) release() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		if err := b.closers[i](); err != nil {
			b.m.log.Warn("releasing the VM", "err", err)
		}
	}
	b.closers = nil
}

// boot creates the VM, loads the kernel and starts the vCPUs.
func (m *Machine) boot() (_ *bootedVM, err error) {
	b, ctx, mem, err := m.createVM(nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.shutdown()
		}
	}()
	e820, err := e820(ramLayout(m.cfg.Memory))
	if err != nil {
		return nil, err
	}
	rsdp, err := writeACPI(mem, m.cfg.CPUs)
	if err != nil {
		return nil, err
	}
	// Linux looks for an MP table before it reads ACPI; finding one at the
	// EBDA spares it a remapping scan of the whole BIOS area.
	if err := mptable.Write(mem, mptable.Config{
		CPUs: m.cfg.CPUs, LAPICAddr: LAPICAddr, IOAPICAddr: IOAPICAddr, SCI: sciIRQ,
	}); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	entry, err := m.loadKernel(mem, e820, rsdp)
	if err != nil {
		return nil, err
	}
	if err := b.setupDevices(ctx, mem); err != nil {
		return nil, err
	}
	supported, err := b.sys.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	deadline, err := b.sys.CheckExtension(kvm.CapTSCDeadlineTimer)
	if err != nil {
		return nil, err
	}
	for id := 0; id < m.cfg.CPUs; id++ {
		v, err := b.createVCPU(id, guestCPUID(supported, id, m.cfg.CPUs, deadline > 0), entry)
		if err != nil {
			return nil, err
		}
		b.vcpus = append(b.vcpus, v)
	}
	if err := m.beforeRun(); err != nil {
		return nil, err
	}
	for _, v := range b.vcpus {
		b.vcpuWG.Add(1)
		go b.runVCPU(v)
	}
	m.log.Info("guest started", "vcpus", m.cfg.CPUs, "memory_mib", m.cfg.Memory/MiB, "entry", entry.Mode.String())
	return b, nil
}

// beforeRun calls Config.BeforeRun at the first boot or restore, once
// everything is open and before any vCPU runs.
func (m *Machine) beforeRun() error {
	before := m.cfg.BeforeRun
	if before == nil || m.cur.Load() != nil {
		return nil
	}
	var reopen []string
	if m.cfg.OnReboot == RebootRestart {
		reopen = []string{m.cfg.KVMDevice, m.kernel}
		if m.cfg.Initrd != "" {
			reopen = append(reopen, m.cfg.Initrd)
		}
	}
	if err := before(reopen); err != nil {
		return fmt.Errorf("machine: before the vCPUs run: %w", err)
	}
	return nil
}

// createVM creates the VM with its irqchip, PIT, GSI routes and RAM:
// anonymous, or memFile's pages for a restore. ctx ends with the VM.
func (m *Machine) createVM(memFile *os.File) (_ *bootedVM, _ context.Context, _ *memory.Memory, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	b := &bootedVM{m: m, result: make(chan vmResult, 1), cancel: cancel, gate: newPauseGate(), begun: time.Now()}
	b.notifiers = &notifiers{b: b, on: map[notifyKey]*kvm.EventFD{}}
	defer func() {
		if err != nil {
			b.shutdown()
		}
	}()
	b.sys, err = kvm.OpenPath(m.cfg.KVMDevice)
	if err != nil {
		return nil, nil, nil, err
	}
	b.closers = append(b.closers, b.sys.Close)
	b.vm, err = b.sys.CreateVM()
	if err != nil {
		return nil, nil, nil, err
	}
	b.closers = append(b.closers, b.vm.Close)
	if err := b.vm.SetIdentityMapAddr(IdentityMapAddr); err != nil {
		return nil, nil, nil, err
	}
	if err := b.vm.SetTSSAddr(TSSAddr); err != nil {
		return nil, nil, nil, err
	}
	if err := b.vm.CreateIRQChip(); err != nil {
		return nil, nil, nil, err
	}
	if err := b.vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
		return nil, nil, nil, err
	}
	b.gsi = newGSIRoutes(b.vm)
	if err := b.gsi.commit(); err != nil {
		return nil, nil, nil, err
	}
	mem, err := b.setupMemory(memFile)
	if err != nil {
		return nil, nil, nil, err
	}
	return b, ctx, mem, nil
}

// setupMemory maps anonymous host memory for each RAM range, or with a
// snapshot's memory file the file's pages copy-on-write, and hands it to
// KVM. Pages are only backed once the guest touches them.
func (b *bootedVM) setupMemory(file *os.File) (*memory.Memory, error) {
	var regions []memory.Region
	var off int64
	for slot, r := range ramLayout(b.m.cfg.Memory) {
		data, unmap, err := memory.MapRAM(r.size)
		if file != nil {
			data, unmap, err = memory.MapFile(file, off, r.size)
			off += int64(r.size)
		}
		if err != nil {
			return nil, fmt.Errorf("machine: guest RAM: %w", err)
		}
		b.closers = append(b.closers, unmap)
		if err := b.m.adviseRAM(data); err != nil {
			return nil, err
		}
		if err := b.vm.SetUserMemoryRegion(uint32(slot), 0, r.base, data); err != nil {
			return nil, err
		}
		regions = append(regions, memory.Region{Base: memory.GuestAddress(r.base), Data: data})
	}
	mem, err := memory.New(regions...)
	b.mem = mem
	return mem, err
}

// adviseRAM applies the page-sharing and huge-page settings to guest RAM.
func (m *Machine) adviseRAM(data []byte) error {
	if m.cfg.Mergeable {
		if err := unix.Madvise(data, unix.MADV_MERGEABLE); err != nil {
			return fmt.Errorf("machine: marking guest RAM mergeable (is KSM built into the host kernel?): %w", err)
		}
	}
	if m.cfg.HugePages {
		if err := unix.Madvise(data, unix.MADV_HUGEPAGE); err != nil {
			return fmt.Errorf("machine: asking for transparent huge pages: %w", err)
		}
	}
	return nil
}

// cachedKernel returns the ELF kernel the kernel cache holds for a
// bzImage, else the kernel as given. A cache that fails costs speed,
// not the boot: the bzImage boots through its own decompressor.
func (m *Machine) cachedKernel() string {
	if m.cfg.KernelCache == NoKernelCache {
		return m.cfg.Kernel
	}
	c := kernelcache.New(m.cfg.KernelCache)
	if m.cfg.KernelCache == "" {
		var err error
		if c, err = kernelcache.Default(); err != nil {
			m.log.Warn("booting the kernel through its own decompressor", "err", err)
			return m.cfg.Kernel
		}
	}
	start := time.Now()
	elf, err := c.Kernel(m.cfg.Kernel)
	if err != nil {
		m.log.Warn("booting the kernel through its own decompressor", "err", err)
		return m.cfg.Kernel
	}
	if elf == "" {
		return m.cfg.Kernel
	}
	m.log.Debug("booting the decompressed kernel", "elf", elf, "took", time.Since(start))
	return elf
}

func (m *Machine) loadKernel(mem *memory.Memory, e820 []boot.E820Entry, rsdp memory.GuestAddress) (*boot.Entry, error) {
	k, err := os.Open(m.kernel)
	if err != nil {
		return nil, fmt.Errorf("machine: kernel: %w", err)
	}
	defer k.Close()
	kst, err := k.Stat()
	if err != nil {
		return nil, fmt.Errorf("machine: kernel: %w", err)
	}
	cfg := boot.Config{Kernel: k, KernelSize: kst.Size(), Cmdline: m.cfg.Cmdline, E820: e820, RSDP: rsdp}
	if m.cfg.Initrd != "" {
		f, err := os.Open(m.cfg.Initrd)
		if err != nil {
			return nil, fmt.Errorf("machine: initrd: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("machine: initrd: %w", err)
		}
		cfg.Initrd, cfg.InitrdSize = f, st.Size()
	}
	entry, err := boot.Load(mem, cfg)
	if err != nil {
		return nil, fmt.Errorf("machine: loading %s: %w", m.kernel, err)
	}
	return entry, nil
}

func (b *bootedVM) createVCPU(id int, cpuid []kvm.CPUIDEntry, entry *boot.Entry) (*vcpu, error) {
	cpu, err := b.vm.CreateVCPU(uint32(id))
	if err != nil {
		return nil, err
	}
	b.closers = append(b.closers, cpu.Close)
	if err := cpu.SetCPUID(cpuid); err != nil {
		return nil, err
	}
	if err := cpu.SetMSRs(bootMSRs()); err != nil {
		return nil, err
	}
	if err := cpu.SetFPU(kvm.FPU{FCW: fpuControlWord, MXCSR: sseMXCSR}); err != nil {
		return nil, err
	}
	lapic, err := cpu.LAPIC()
	if err != nil {
		return nil, err
	}
	setupLAPIC(&lapic)
	if err := cpu.SetLAPIC(lapic); err != nil {
		return nil, err
	}
	// Application processors wait for INIT/SIPI in KVM's LAPIC; only the
	// boot processor gets the loader's state.
	if id == 0 {
		sregs, err := cpu.Sregs()
		if err != nil {
			return nil, err
		}
		var regs kvm.Regs
		applyEntry(&sregs, &regs, entry)
		if err := cpu.SetSregs(sregs); err != nil {
			return nil, err
		}
		if err := cpu.SetRegs(regs); err != nil {
			return nil, err
		}
	}
	return &vcpu{id: id, cpu: cpu, stats: &b.m.vcpuStats[id], cpuid: cpuid}, nil
}

// runVCPU is a vCPU thread: it runs the vCPU and dispatches its exits
// until the VM ends.
func (b *bootedVM) runVCPU(v *vcpu) {
	defer b.vcpuWG.Done()
	// KVM_RUN must always be issued from the same thread, and the tid is
	// where a kick is sent.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	v.tid.Store(int32(tid))
	defer v.tid.Store(0)
	v.stats.bindThread(tid)
	defer v.stats.unbindThread()
	for !b.ending.Load() {
		exit, err := v.cpu.Run()
		if err != nil {
			b.end(ExitFault, fmt.Errorf("vcpu %d: %w", v.id, err))
			return
		}
		v.stats.countExit(exit.Reason)
		// A vCPU parks only after a KVM_RUN that the pause kick's
		// immediate_exit cut short: KVM completes an I/O or MMIO exit
		// handled just before on that run, so a paused vCPU's registers
		// are whole, as a snapshot needs (KVM API, "immediate_exit").
		if exit.Reason == kvm.ExitInterrupted && b.gate.wait() {
			v.cpu.SetImmediateExit(false)
			continue
		}
		if done := b.handleExit(v, exit); done {
			return
		}
	}
}
