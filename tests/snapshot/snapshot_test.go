// Package snapshot_test boots the stock Debian kernel under `gvmm run`
// with a guest (tests/guestsnapshot) whose state lives only in its memory
// and registers, a counting loop, and checks snapshots end to end: the
// count goes on after a snapshot, the VMM killed and a restore in a new
// process, with no boot; the guest's disk writes after the restore land
// and its poweroff ends the VMM with status 0; three clones of one
// snapshot run at once on a fraction of the memory of three VMs, each
// with vsock on a socket of its own; and a
// damaged state file, a truncated memory file and a changed disk image
// are refused.
package snapshot_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/machine/snapshot"
	"github.com/gvmm-dev/gvmm/tests/bench/measure"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/guestsnapshot/layout"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/vmmproc"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire/wiretest"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

var guestModules = []string{"virtio_pci", "virtio_blk", "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"}

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guestsnapshot", "github.com/gvmm-dev/gvmm/tests/guestsnapshot"),
		kvmhost.WithModules(guestModules...),
		// A KVM host's clocksource is the TSC, which KVM's exact pairing of
		// kvmclock and the TSCs needs (docs/snapshots.md).
		kvmhost.WithHostKernelArgs("tsc=reliable"),
	)
}

const (
	bootTimeout = 4 * time.Minute
	// restoreTimeout bounds a restore's first count: no boot, so it is
	// far below a boot's.
	restoreTimeout = time.Minute
	ioTimeout      = time.Minute
	cmdline        = "console=ttyS0 reboot=k panic=1"
	// bootBanner is the kernel's first line: a restored guest must not
	// print it again.
	bootBanner = "Linux version"
	// maxCountGap bounds how many counts of the killed VMM's may have
	// been lost in its console buffer before the restored guest's first.
	maxCountGap = 5
	// downtime is at least how long a snapshot waits before its restore,
	// and clockSlack how far a guest's wall clock may be from the host's
	// (the RTC it read at boot has whole seconds).
	downtime   = 8 * time.Second
	clockSlack = 3 * time.Second
)

// fixture is the kernel, the guest's initramfs and a folder for sockets
// (short: unix socket paths are limited) and snapshots.
type fixture struct {
	kernel, initrd, dir string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	cs, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	require.NoError(t, err)
	t.Logf("the test host's clocksource: %s", strings.TrimSpace(string(cs)))
	k, err := debkernel.Get()
	require.NoError(t, err)
	mods, err := k.Modules(guestModules...)
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "gvmm-snap-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	initrd := filepath.Join(dir, "guest.cpio")
	require.NoError(t, initramfs.WriteGuest(initrd, kvmhost.Asset("guestsnapshot"), mods))
	return &fixture{kernel: k.Vmlinuz, initrd: initrd, dir: dir}
}

func (f *fixture) path(name string) string { return filepath.Join(f.dir, name) }

// number parses a report's value: its leading digits, since a kernel
// message (printk) may land on the console in the middle of the line.
func number(t *testing.T, v string) uint64 {
	t.Helper()
	end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(v)
	}
	n, err := strconv.ParseUint(v[:end], 10, 64)
	require.NoError(t, err, "report value %q", v)
	return n
}

// counts returns the counts a VMM's guest reported, in order.
func counts(t *testing.T, vm *vmmproc.Proc) []uint64 {
	t.Helper()
	var out []uint64
	for _, v := range vm.Out.Values("count") {
		out = append(out, number(t, v))
	}
	return out
}

// lastClock returns the guest's latest wall clock report, waiting for
// the first: a restored guest reports its clock a line after its count.
func lastClock(t *testing.T, vm *vmmproc.Proc) time.Time {
	t.Helper()
	vm.WaitFor(t, "clock", ioTimeout)
	v := vm.Out.Values("clock")
	return time.UnixMilli(int64(number(t, v[len(v)-1])))
}

// waitCount waits until the guest has counted to at least n.
func waitCount(t *testing.T, vm *vmmproc.Proc, n uint64, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		if c := counts(t, vm); len(c) > 0 && c[len(c)-1] >= n {
			return
		}
		select {
		case <-vm.Exited:
			t.Fatalf("the VMM ended before the guest counted to %d\n%s", n, vm.Out.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "the guest did not count to %d in %s", n, timeout)
	}
}

// snapshotVM pauses the VM on apiSock and snapshots it into dir,
// checking on the way that a running VM's snapshot is refused.
func snapshotVM(t *testing.T, apiSock, dir string) {
	t.Helper()
	c := api.NewClient(apiSock)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := c.Snapshot(ctx, dir)
	var ae *api.Error
	require.ErrorAs(t, err, &ae, "a snapshot of a running VM is refused")
	assert.Equal(t, 409, ae.StatusCode)
	require.NoError(t, c.Pause(ctx))
	start := time.Now()
	require.NoError(t, c.Snapshot(ctx, dir))
	t.Logf("snapshot written in %v", time.Since(start).Round(time.Millisecond))
}

// memory reads a process's resident and proportional set sizes in KiB.
func memory(t *testing.T, pid int) (rss, pss int64) {
	t.Helper()
	field := func(file, name string) int64 {
		f, err := os.Open(fmt.Sprintf("/proc/%d/%s", pid, file))
		require.NoError(t, err)
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				require.NoError(t, err)
				return kb
			}
		}
		t.Fatalf("no %s in /proc/%d/%s", name, pid, file)
		return 0
	}
	return field("status", "VmRSS"), field("smaps_rollup", "Pss")
}

// checkNoOwnHugePages checks that a VMM's own memory, outside its guest
// RAM of ramBytes, holds no transparent huge page even where the host
// gives them to every mapping (the test host: "always"), and that guest
// RAM still has them there.
func checkNoOwnHugePages(t *testing.T, pid int, ramBytes uint64) {
	t.Helper()
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	require.NoError(t, err)
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	require.NoError(t, err)
	defer f.Close()
	mem, err := measure.ReadSmaps(f, ramBytes)
	require.NoError(t, err)
	t.Logf("THP %s: guest RAM %d MiB in huge pages, the VMM's own memory %d KiB, own RSS %d KiB",
		strings.TrimSpace(string(mode)), mem.GuestHuge>>20, mem.OwnHuge()>>10, mem.Own()>>10)
	assert.Zero(t, mem.OwnHuge(), "the VMM's own memory takes no huge page")
	if strings.Contains(string(mode), "[always]") {
		assert.NotZero(t, mem.GuestHuge, "guest RAM still takes huge pages")
	}
}

// checkSnapshotFiles reads a snapshot of a one-vCPU, 256 MiB guest: its
// state holds the TSC, TSC-deadline and kvmclock MSRs, and its memory
// file is sparse.
func checkSnapshotFiles(t *testing.T, dir string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, snapshot.StateFile))
	require.NoError(t, err)
	st, err := snapshot.Parse(data)
	require.NoError(t, err)
	require.Len(t, st.VCPUs, 1)
	msrs := map[uint32]bool{}
	for _, m := range st.VCPUs[0].MSRs {
		msrs[m.Index] = true
	}
	for name, idx := range map[string]uint32{"TSC": 0x10, "TSC deadline": 0x6e0, "kvmclock system time": 0x4b564d01} {
		assert.True(t, msrs[idx], "the %s MSR (%#x) is saved", name, idx)
	}
	fi, err := os.Stat(filepath.Join(dir, snapshot.MemoryFile))
	require.NoError(t, err)
	used := fi.Sys().(*syscall.Stat_t).Blocks * 512
	t.Logf("state file %d KiB, %d MSRs; memory file %d MiB, %d MiB of it on disk", len(data)>>10, len(msrs), fi.Size()>>20, used>>20)
	assert.Equal(t, int64(256<<20), fi.Size())
	assert.Less(t, used, fi.Size()/2, "the memory file is sparse")
}

// assertTSCStable checks that a guest kept the TSC as its clocksource:
// its kernel watches the TSC against kvmclock and falls back to
// kvm-clock when the two disagree, which they do when a snapshot or
// restore does not keep them the pair they were. The test host runs
// KVM's master clock, so the VMM must have paired them exactly
// (machine/tscclock.go), not by timing its calls.
func assertTSCStable(t *testing.T, vm *vmmproc.Proc, who string) {
	t.Helper()
	assert.NotContains(t, vm.Err.String(), "paired by timing", "%s: the VMM paired kvmclock and the TSCs exactly", who)
	assert.NotContains(t, vm.Out.String(), "Marking clocksource 'tsc' as unstable", "%s kept the TSC as its clocksource", who)
}

// refused runs a restore of dir and checks that it fails at once with a
// message containing want, the guest never started.
func refused(t *testing.T, f *fixture, dir, want string) {
	t.Helper()
	vm := vmmproc.Start(t, restoreTimeout, kvmhost.Asset("gvmm"), "run", "--restore", dir)
	select {
	case <-vm.Exited:
	case <-time.After(restoreTimeout):
		t.Fatalf("the restore of %s was not refused", dir)
	}
	assert.False(t, vm.Cmd.ProcessState.Success(), "the restore of %s fails", dir)
	assert.Contains(t, vm.Err.String(), want)
	assert.False(t, vm.Out.Has("count"), "the guest never ran")
}

func TestSnapshotRestoreContinuesWithoutBoot(t *testing.T) {
	f := newFixture(t)
	img := f.path("disk.img")
	require.NoError(t, os.WriteFile(img, nil, 0o600))
	require.NoError(t, os.Truncate(img, 16<<20))
	snap := f.path("snap")

	bootStart := time.Now()
	a := vmmproc.Start(t, 20*time.Minute, kvmhost.Asset("gvmm"), "run", "--kernel", f.kernel, "--initrd", f.initrd,
		"--cmdline", cmdline, "--memory", "256M", "--disk", img, "--api-socket", f.path("a.sock"))
	a.WaitFor(t, "ready", bootTimeout)
	waitCount(t, a, 10, bootTimeout)
	bootTook := time.Since(bootStart)
	bootedRSS, _ := memory(t, a.Cmd.Process.Pid)
	checkNoOwnHugePages(t, a.Cmd.Process.Pid, 256<<20)
	snapshotVM(t, f.path("a.sock"), snap)
	taken := time.Now()
	a.Kill()
	assertTSCStable(t, a, "the booted guest")
	before := counts(t, a)
	last := before[len(before)-1]
	t.Logf("booted in %v (to count 10), RSS %d MiB; snapshot at count %d", bootTook.Round(time.Millisecond), bootedRSS>>10, last)
	checkSnapshotFiles(t, snap)

	// A damaged state file and a truncated memory file are refused.
	damaged := f.path("damaged")
	require.NoError(t, os.Mkdir(damaged, 0o700))
	state, err := os.ReadFile(filepath.Join(snap, snapshot.StateFile))
	require.NoError(t, err)
	state[len(state)/2] ^= 0x40
	require.NoError(t, os.WriteFile(filepath.Join(damaged, snapshot.StateFile), state, 0o600))
	require.NoError(t, os.Link(filepath.Join(snap, snapshot.MemoryFile), filepath.Join(damaged, snapshot.MemoryFile)))
	refused(t, f, damaged, "damaged")
	truncated := f.path("truncated")
	require.NoError(t, os.Mkdir(truncated, 0o700))
	require.NoError(t, os.Link(filepath.Join(snap, snapshot.StateFile), filepath.Join(truncated, snapshot.StateFile)))
	require.NoError(t, os.WriteFile(filepath.Join(truncated, snapshot.MemoryFile), nil, 0o600))
	require.NoError(t, os.Truncate(filepath.Join(truncated, snapshot.MemoryFile), 128<<20))
	refused(t, f, truncated, "memory file")

	time.Sleep(time.Until(taken.Add(downtime)))
	restoreStart := time.Now()
	b := vmmproc.Start(t, 20*time.Minute, kvmhost.Asset("gvmm"), "run", "--restore", snap, "--api-socket", f.path("b.sock"))
	waitCount(t, b, last+1, restoreTimeout)
	t.Logf("restored to the first count in %v", time.Since(restoreStart).Round(time.Millisecond))
	// The guest's clock went on from where it stopped: behind the host's
	// by about the time the snapshot waited.
	lag := time.Since(lastClock(t, b))
	t.Logf("the restored guest's wall clock is %v behind (%v between snapshot and restore)", lag.Round(time.Millisecond), time.Since(taken).Round(time.Millisecond))
	assert.Greater(t, lag, downtime-clockSlack, "--clock continue: no time passed for the guest")
	after := counts(t, b)
	assert.Greater(t, after[0], last, "the count goes on from the snapshot's")
	assert.LessOrEqual(t, after[0], last+maxCountGap, "the count goes on from the snapshot's, not from a later one")
	assert.NotContains(t, b.Out.String(), bootBanner, "no boot after a restore")
	assert.False(t, b.Out.Has("ready"), "the guest's init did not start again")

	// The guest's disk writes after the restore reach the image.
	waitCount(t, b, after[0]+10, ioTimeout)
	disk, err := os.OpenFile(img, os.O_RDWR, 0)
	require.NoError(t, err)
	defer disk.Close()
	var word [8]byte
	_, err = disk.ReadAt(word[:], layout.CountOffset)
	require.NoError(t, err)
	written := binary.LittleEndian.Uint64(word[:])
	assert.GreaterOrEqual(t, written, after[0], "the image holds a count written after the restore")

	// Its poweroff ends the restored VMM with status 0.
	_, err = disk.WriteAt([]byte(layout.PowerOffCommand), layout.CommandOffset)
	require.NoError(t, err)
	select {
	case <-b.Exited:
	case <-time.After(ioTimeout):
		t.Fatal("the restored guest did not power off")
	}
	assert.True(t, b.Out.Has("bye"), "the guest saw the command")
	assert.True(t, b.Cmd.ProcessState.Success(), "gvmm exits 0 after the guest's poweroff: %v\n%s", b.Cmd.ProcessState, b.Err.String())
	assertTSCStable(t, b, "the restored guest")

	// The image has changed since: the snapshot no longer matches it.
	refused(t, f, snap, "disk image changed")
}

func TestClonesShareTheSnapshotsMemory(t *testing.T) {
	const clones = 3
	f := newFixture(t)
	snap := f.path("snap")
	a := vmmproc.Start(t, 20*time.Minute, kvmhost.Asset("gvmm"), "run", "--kernel", f.kernel, "--initrd", f.initrd,
		"--cmdline", cmdline+" gvmm.disk=0 gvmm.vsock=1", "--memory", "256M", "--api-socket", f.path("a.sock"),
		"--vsock", "cid=5,socket="+f.path("v.sock"))
	a.WaitFor(t, "ready", bootTimeout)
	waitCount(t, a, 10, bootTimeout)
	bootedRSS, _ := memory(t, a.Cmd.Process.Pid)
	snapshotVM(t, f.path("a.sock"), snap)
	a.Kill()
	assertTSCStable(t, a, "the booted guest")
	last := counts(t, a)[len(counts(t, a))-1]

	time.Sleep(downtime)
	var vms []*vmmproc.Proc
	for i := range clones {
		args := []string{"run", "--restore", snap,
			"--api-socket", f.path(fmt.Sprintf("c%d.sock", i)), "--vsock-socket", f.path(fmt.Sprintf("v%d.sock", i))}
		if i == 0 {
			args = append(args, "--clock", "realtime")
		}
		vms = append(vms, vmmproc.Start(t, 20*time.Minute, kvmhost.Asset("gvmm"), args...))
	}
	for _, vm := range vms {
		waitCount(t, vm, last+20, restoreTimeout)
	}
	// --clock realtime: the clone's wall clock is the host's at once.
	skew := time.Since(lastClock(t, vms[0]))
	t.Logf("with --clock realtime the clone's wall clock is %v from the host's", skew.Round(time.Millisecond))
	assert.Less(t, skew.Abs(), clockSlack, "--clock realtime puts the guest's wall clock right")
	for i, vm := range vms {
		assertTSCStable(t, vm, fmt.Sprintf("clone %d", i))
	}
	var rssSum, pssSum int64
	for i, vm := range vms {
		rss, pss := memory(t, vm.Cmd.Process.Pid)
		t.Logf("clone %d: RSS %d MiB, PSS %d MiB", i, rss>>10, pss>>10)
		rssSum += rss
		pssSum += pss
		c := counts(t, vm)
		assert.Greater(t, c[0], last, "clone %d goes on from the snapshot's count", i)
		assert.NotContains(t, vm.Out.String(), bootBanner, "clone %d did not boot", i)
	}
	t.Logf("booted VM: RSS %d MiB; %d clones: RSS %d MiB in all, PSS %d MiB in all", bootedRSS>>10, clones, rssSum>>10, pssSum>>10)
	assert.Less(t, rssSum, clones*bootedRSS/2, "the clones' total RSS is well below %d booted VMs'", clones)
	assert.Less(t, pssSum, rssSum, "the clones share the snapshot's pages")
	// vsock works in each clone, through its own socket: the guest's
	// listener survived the transport reset.
	for i := range vms {
		wiretest.ToGuest(t, wiretest.UnixDialer(f.path(fmt.Sprintf("v%d.sock", i))), 1<<20)
	}
	for _, vm := range vms {
		vm.Kill()
	}
}
