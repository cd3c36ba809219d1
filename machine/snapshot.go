package machine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/gvmm-dev/gvmm/devices/cmos"
	"github.com/gvmm-dev/gvmm/devices/pci"
	"github.com/gvmm-dev/gvmm/devices/ps2"
	"github.com/gvmm-dev/gvmm/devices/uart"
	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/machine/snapshot"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
)

// savedDevices are the devices of a boot whose state a snapshot saves,
// besides the PM block, the virtio functions and KVM's own.
type savedDevices struct {
	uart *uart.UART
	kbd  *ps2.Controller
	rtc  *cmos.RTC
	root *pci.Root
}

// Snapshot saves the paused machine into dir, which must not exist or be
// empty: its configuration and device, vCPU and KVM state in a state
// file, and guest RAM as a sparse memory file. Disk images are not
// copied: Pause has flushed them, and the snapshot records each image's
// identity so that a restore onto a changed image is refused. Shares are
// quiesced meanwhile (no 9P request in flight) and their fids saved by
// path. The machine stays paused. vsock connections are not saved, a
// restore resets them; frames in a TAP's queue stay with it.
func (m *Machine) Snapshot(dir string) error {
	m.pauseMu.Lock()
	defer m.pauseMu.Unlock()
	b := m.current()
	if b == nil {
		return ErrNotRunning
	}
	if !b.gate.isPaused() {
		return fmt.Errorf("%w: snapshot of a running machine: pause it first", ErrState)
	}
	// Until the memory is written: a share's fids and its used ring must
	// agree, and 9P answers out of order (see p9.Device.Quiesce).
	for _, s := range m.shares {
		s.Quiesce()
		defer s.Release()
	}
	st, err := b.save()
	if err != nil {
		return fmt.Errorf("machine: snapshot: %w", err)
	}
	return writeSnapshot(dir, st, b.mem.Regions())
}

// writeSnapshot creates dir and writes the memory file, then the state
// file under a temporary name renamed into place last: a folder without
// a state file is an unfinished snapshot that Restore refuses.
func writeSnapshot(dir string, st *snapshot.State, regions []memory.Region) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("machine: snapshot: %w", err)
	}
	if entries, err := os.ReadDir(dir); err != nil {
		return fmt.Errorf("machine: snapshot: %w", err)
	} else if len(entries) > 0 {
		return fmt.Errorf("machine: snapshot: %s is not empty", dir)
	}
	data, err := snapshot.Marshal(st)
	if err != nil {
		return err
	}
	ram := make([][]byte, len(regions))
	for i, r := range regions {
		ram[i] = r.Data
	}
	if err := snapshot.WriteMemory(filepath.Join(dir, snapshot.MemoryFile), ram); err != nil {
		return err
	}
	tmp := filepath.Join(dir, snapshot.StateFile+".tmp")
	if err := writeSynced(tmp, data); err != nil {
		return fmt.Errorf("machine: snapshot: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, snapshot.StateFile)); err != nil {
		return fmt.Errorf("machine: snapshot: %w", err)
	}
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// save collects the state of a paused boot.
func (b *bootedVM) save() (*snapshot.State, error) {
	m := b.m
	st := &snapshot.State{Taken: time.Now(), Config: snapshotConfig(m.cfg), MemorySize: m.cfg.Memory}
	for i, sh := range st.Config.Shares {
		// A restore may run from another folder.
		abs, err := filepath.Abs(sh.Path)
		if err != nil {
			return nil, fmt.Errorf("share %s: %w", sh.Path, err)
		}
		st.Config.Shares[i].Path = abs
	}
	for i, d := range st.Config.Disks {
		// From the open image: a confined VMM cannot reach it by path.
		fi, err := m.disks[i].Stat()
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.Path, err)
		}
		id, err := fileIdentity(fi)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.Path, err)
		}
		st.Config.Disks[i].Identity = id
		st.Config.Disks[i].Limit = m.disks[i].Limit()
	}
	msrs, err := b.sys.MSRIndexList()
	if err != nil {
		return nil, err
	}
	xsaveSize, err := b.sys.CheckExtension(kvm.CapXSave2)
	if err != nil {
		return nil, err
	}
	for _, v := range b.vcpus {
		vs, err := saveVCPU(v.cpu, msrs, xsaveSize)
		if err != nil {
			return nil, fmt.Errorf("vCPU %d: %w", v.id, err)
		}
		vs.CPUID = v.cpuid
		st.VCPUs = append(st.VCPUs, vs)
	}
	for _, chip := range []kvm.IRQChip{kvm.IRQChipPICMaster, kvm.IRQChipPICSlave, kvm.IRQChipIOAPIC} {
		s, err := b.vm.IRQChip(chip)
		if err != nil {
			return nil, err
		}
		st.VM.IRQChips = append(st.VM.IRQChips, s)
	}
	if st.VM.PIT, err = b.vm.PIT2(); err != nil {
		return nil, err
	}
	if st.VM.Clock, err = b.saveClock(st.VCPUs); err != nil {
		return nil, err
	}
	st.Devices = snapshot.Devices{
		UART: b.saved.uart.State(), I8042: b.saved.kbd.State(), RTC: b.saved.rtc.State(),
		PM: b.power.State(), PCI: b.saved.root.State(),
	}
	nets, shares := m.nets, m.shares
	for _, fn := range b.virtio {
		d := snapshot.VirtioDevice{Type: fn.Type(), Transport: fn.State()}
		switch d.Type {
		case virtio.DeviceBalloon:
			s := m.balloon.State()
			d.Balloon = &s
		case virtio.DeviceNet:
			s := nets[0].dev.State()
			d.Net, nets = &s, nets[1:]
		case virtio.Device9P:
			s, err := shares[0].State()
			if err != nil {
				return nil, err
			}
			d.P9, shares = &s, shares[1:]
		}
		st.Devices.Virtio = append(st.Devices.Virtio, d)
	}
	return st, nil
}

// saveVCPU reads a parked vCPU's state. KVM_GET_MP_STATE comes first: it
// makes KVM accept pending INIT/SIPI events into the LAPIC and MP state,
// which the later reads then see settled. The MSRs are those KVM saves
// (KVM_GET_MSR_INDEX_LIST) that this vCPU's CPUID lets it read, among
// them the TSC, the TSC deadline and kvmclock's.
func saveVCPU(cpu *kvm.VCPU, msrList []uint32, xsaveSize int) (s snapshot.VCPU, err error) {
	if s.MPState, err = cpu.MPState(); err != nil {
		return s, err
	}
	if s.Regs, err = cpu.Regs(); err != nil {
		return s, err
	}
	if s.Sregs, err = cpu.Sregs(); err != nil {
		return s, err
	}
	if s.XSave, err = cpu.XSave(xsaveSize); err != nil {
		return s, err
	}
	if s.XCRs, err = cpu.XCRs(); err != nil {
		return s, err
	}
	if s.DebugRegs, err = cpu.DebugRegs(); err != nil {
		return s, err
	}
	if s.LAPIC, err = cpu.LAPIC(); err != nil {
		return s, err
	}
	if s.TSCKHz, err = cpu.TSCKHz(); err != nil {
		return s, err
	}
	if s.MSRs, err = cpu.ReadableMSRs(msrList); err != nil {
		return s, err
	}
	// The TSC first, so that a restore writes it before the TSC deadline
	// and kvmclock MSRs, which are relative to it.
	slices.SortStableFunc(s.MSRs, func(a, b kvm.MSREntry) int {
		return boolOrder(b.Index == msrTSC) - boolOrder(a.Index == msrTSC)
	})
	if s.Events, err = cpu.Events(); err != nil {
		return s, err
	}
	return s, nil
}

func boolOrder(v bool) int {
	if v {
		return 1
	}
	return 0
}

// diskIdentity reads what the snapshot records of a disk image.
func diskIdentity(path string) (snapshot.DiskIdentity, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return snapshot.DiskIdentity{}, fmt.Errorf("disk %s: %w", path, err)
	}
	id, err := fileIdentity(fi)
	if err != nil {
		return snapshot.DiskIdentity{}, fmt.Errorf("disk %s: %w", path, err)
	}
	return id, nil
}

func fileIdentity(fi os.FileInfo) (snapshot.DiskIdentity, error) {
	sys, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return snapshot.DiskIdentity{}, errors.New("no inode information")
	}
	return snapshot.DiskIdentity{Dev: sys.Dev, Inode: sys.Ino, Size: fi.Size(), ModTimeNs: fi.ModTime().UnixNano()}, nil
}

func snapshotConfig(c Config) snapshot.Config {
	s := snapshot.Config{
		Kernel: c.Kernel, KernelCache: c.KernelCache, Initrd: c.Initrd, Cmdline: c.Cmdline,
		CPUs: c.CPUs, Memory: c.Memory, Mergeable: c.Mergeable, HugePages: c.HugePages,
		RebootRestart: c.OnReboot == RebootRestart, AllowCPUOvercommit: c.AllowCPUOvercommit,
	}
	for _, d := range c.Disks {
		s.Disks = append(s.Disks, snapshot.Disk{Path: d.Path, ReadOnly: d.ReadOnly, Serial: d.Serial})
	}
	for _, sh := range c.Shares {
		s.Shares = append(s.Shares, snapshot.Share{Path: sh.Path, Tag: sh.Tag, ReadOnly: sh.ReadOnly, SetID: sh.SetID})
	}
	if c.Balloon != nil {
		s.Balloon = &snapshot.Balloon{Size: c.Balloon.Size}
	}
	if c.Vsock != nil {
		s.Vsock = &snapshot.Vsock{CID: c.Vsock.CID, Socket: c.Vsock.Socket}
	}
	for _, n := range c.Nets {
		s.Nets = append(s.Nets, snapshot.Net{Tap: n.Tap})
	}
	return s
}
