// Package confine_test checks gvmm run --user in the KVM test host: from
// outside, the confined VMM runs as the user with no capabilities,
// no_new_privs and seccomp, in mount, PID, IPC, UTS and network
// namespaces of its own whose root holds nothing of the host's, inside a
// cgroup with its limits; the guest still boots and writes its disk, the
// API answers, and the cgroup goes with the VMM. A test build of gvmm
// (tag escapetest) tries from inside the confined VMM what a guest that
// took it over would try, each of which must fail. A confined VMM saves
// snapshots into its --snapshot-dir, and a restore runs confined too.
// The guest's init is tests/guestblk.
package confine_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/machine/snapshot"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/guestblk/pattern"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/vmmproc"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

var guestModules = []string{"virtio_pci", "virtio_blk"}

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("gvmm-escape", "github.com/gvmm-dev/gvmm/cmd/gvmm", "escapetest"),
		kvmhost.WithBinary("guestblk", "github.com/gvmm-dev/gvmm/tests/guestblk"),
		kvmhost.WithModules(guestModules...),
		kvmhost.WithHostModules("tun"),
	)
}

const (
	mib       = 1 << 20
	imageSize = 64 * mib
	dataMiB   = 8
	seed      = 5
	guestWait = 4 * time.Minute
	uid, gid  = 1000, 1000
	// memoryLimit is --memory-limit: the guest's 256 MiB and the VMM.
	memoryLimit = 400 * mib
)

// vm is what one confined boot needs.
type vm struct {
	dir, image, api string
	args            []string
}

// newVM prepares a guest that writes dataMiB of the pattern to its disk,
// then sleeps, run by a VMM confined as uid:gid with limits.
func newVM(t *testing.T) vm {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	mods, err := k.Modules(guestModules...)
	require.NoError(t, err)
	v := vm{dir: t.TempDir()}
	initrd := filepath.Join(v.dir, "guest.cpio")
	require.NoError(t, initramfs.WriteGuest(initrd, kvmhost.Asset("guestblk"), mods))
	// The run folder is the user's: the VMM rotates its console log there.
	run := filepath.Join(v.dir, "run")
	require.NoError(t, os.Mkdir(run, 0o700))
	require.NoError(t, os.Chown(run, uid, gid))
	v.image = filepath.Join(v.dir, "disk.img")
	require.NoError(t, os.WriteFile(v.image, nil, 0o600))
	require.NoError(t, os.Truncate(v.image, imageSize))
	v.api = filepath.Join(run, "api.sock")
	v.args = []string{"run", "--kernel", k.Vmlinuz, "--initrd", initrd, "--memory", "256M",
		"--cmdline", fmt.Sprintf("console=ttyS0 reboot=k panic=1 quiet gvmm.steps=write-direct,sleep gvmm.mib=%d gvmm.seed=%d gvmm.sleep=600", dataMiB, seed),
		"--disk", v.image, "--api-socket", v.api, "--console-log", filepath.Join(run, "console.log"),
		"--user", fmt.Sprintf("%d:%d", uid, gid), "--memory-limit", "400M", "--cpu-limit", "1", "--log-level", "debug"}
	return v
}

// vmmOf is the VMM the supervisor pid started: its only child.
func vmmOf(t *testing.T, supervisor int) int {
	t.Helper()
	// The child is listed by the thread that started it.
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", supervisor))
	require.NoError(t, err)
	var kids []string
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		require.NoError(t, err)
		kids = append(kids, strings.Fields(string(b))...)
	}
	require.Len(t, kids, 1, "the supervisor's children")
	pid, err := strconv.Atoi(kids[0])
	require.NoError(t, err)
	return pid
}

// procStatus is /proc/pid/status by key.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	defer f.Close()
	st := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	require.NoError(t, sc.Err())
	return st
}

func TestConfinedVMM(t *testing.T) {
	v := newVM(t)
	p := vmmproc.Start(t, guestWait+time.Minute, kvmhost.Asset("gvmm"), v.args...)
	p.WaitFor(t, "written", guestWait)
	p.WaitFor(t, "sleeping", guestWait)
	vmm := vmmOf(t, p.Cmd.Process.Pid)

	st := procStatus(t, vmm)
	assert.Equal(t, "1000\t1000\t1000\t1000", st["Uid"])
	assert.Equal(t, "1000\t1000\t1000\t1000", st["Gid"])
	assert.Empty(t, st["Groups"])
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		assert.Equal(t, "0000000000000000", st[k], k)
	}
	assert.Equal(t, "1", st["NoNewPrivs"])
	assert.Equal(t, "2", st["Seccomp"], "seccomp filter mode")
	assert.Equal(t, "1", strings.Fields(st["NSpid"])[1], "the VMM is the first process of its PID namespace")

	for _, ns := range []string{"mnt", "pid", "ipc", "uts", "net"} {
		mine, err := os.Readlink("/proc/self/ns/" + ns)
		require.NoError(t, err)
		its, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", vmm, ns))
		require.NoError(t, err)
		assert.NotEqual(t, mine, its, "%s namespace", ns)
	}
	// Its root holds /proc and the way to its run folder (under /tmp
	// here), nothing of the host's.
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/root", vmm))
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"proc", strings.Split(v.dir, "/")[1]}, names)
	_, err = os.Stat(fmt.Sprintf("/proc/%d/root/etc/passwd", vmm))
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = os.Stat(fmt.Sprintf("/proc/%d/root%s", vmm, v.image))
	assert.ErrorIs(t, err, os.ErrNotExist, "the disk image is open, not reachable by path")

	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", vmm))
	require.NoError(t, err)
	cgDir := filepath.Join("/sys/fs/cgroup", strings.TrimSpace(strings.TrimPrefix(string(cg), "0::")))
	assert.Equal(t, fmt.Sprintf("/sys/fs/cgroup/gvmm/vm-%d", p.Cmd.Process.Pid), cgDir)
	memMax, err := os.ReadFile(filepath.Join(cgDir, "memory.max"))
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(memoryLimit), strings.TrimSpace(string(memMax)))
	cpuMax, err := os.ReadFile(filepath.Join(cgDir, "cpu.max"))
	require.NoError(t, err)
	assert.Equal(t, "100000 100000", strings.TrimSpace(string(cpuMax)))
	current, err := os.ReadFile(filepath.Join(cgDir, "memory.current"))
	require.NoError(t, err)
	t.Logf("VMM pid %d, cgroup %s, memory.current %s", vmm, cgDir, strings.TrimSpace(string(current)))

	cl := api.NewClient(v.api)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := cl.Info(ctx)
	require.NoError(t, err, "the API of the confined VMM")
	assert.Equal(t, api.StateRunning, info.State)

	// SIGTERM to the supervisor reaches the VMM, which stops the guest.
	require.NoError(t, p.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.Exited:
	case <-time.After(time.Minute):
		t.Fatalf("the VMM did not end after SIGTERM\n%s", p.Err.String())
	}
	assert.Equal(t, 0, p.Cmd.ProcessState.ExitCode(), "%s", p.Err.String())
	assert.NoDirExists(t, cgDir, "the cgroup is removed with the VMM")
	assert.NoFileExists(t, v.api, "the API socket is removed")

	f, err := os.Open(v.image)
	require.NoError(t, err)
	defer f.Close()
	got := make([]byte, dataMiB*mib)
	_, err = f.ReadAt(got, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(-1), pattern.Mismatch(got, seed, 0), "what the guest wrote")
}

// openPTY returns a pseudo-terminal's two ends, from /dev/pts, mounted
// if the test host has not.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	if _, err := os.Stat("/dev/pts/ptmx"); err != nil {
		require.NoError(t, os.MkdirAll("/dev/pts", 0o755))
		require.NoError(t, unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"))
	}
	m, err := os.OpenFile("/dev/pts/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return m, s
}

func TestEscapeFromConfinedVMM(t *testing.T) {
	v := newVM(t)
	// Its stdin is a terminal, where TIOCSTI would type into the shell
	// that owns it.
	_, tty := openPTY(t)
	ctx, cancel := context.WithTimeout(context.Background(), guestWait+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvmhost.Asset("gvmm-escape"), v.args...)
	out, errOut := &guest.Recorder{}, &guest.Recorder{}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, out, errOut
	cmd.WaitDelay = 5 * time.Second
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() { cancel(); <-exited }()
	vmmproc.WaitFor(t, out, "written", guestWait, exited)

	attempts := map[string]string{}
	done := false
	for _, line := range strings.Split(errOut.String(), "\n") {
		if !strings.Contains(line, "msg=escapetest") {
			continue
		}
		what, err := logValue(line, "what"), logValue(line, "err")
		if what == "done" {
			done = true
			continue
		}
		attempts[what] = err
	}
	require.True(t, done, "the escape hook did not run to its end\n%s", errOut.String())
	for _, what := range []string{"open /etc/passwd", "write /root/x", "execve /proc/self/exe", "ioctl TIOCSTI on stdin", "setuid 0"} {
		err, ok := attempts[what]
		if assert.True(t, ok, "no attempt %q", what) {
			assert.NotEqual(t, "none: it worked", err, what)
			t.Logf("%s: %s", what, err)
		}
	}
	assert.NoFileExists(t, "/root/x")
	// Debian's kernel has Landlock on (CONFIG_LSM lists it), as the test
	// host's: the execve above is what it refused.
	assert.Contains(t, errOut.String(), `msg="VMM confined" uid=1000 gid=1000 landlock=true`)
}

// logValue is key's value in a log/slog text line, unquoted.
func logValue(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	rest := line[i+len(key)+2:]
	if strings.HasPrefix(rest, `"`) {
		if s, err := strconv.QuotedPrefix(rest); err == nil {
			u, _ := strconv.Unquote(s)
			return u
		}
	}
	v, _, _ := strings.Cut(rest, " ")
	return v
}

// TestStartConfined starts a definition naming a user and limits with
// gvmm start: the VMM detached from gvmm start is confined as when run
// directly, and gvmm destroy ends it and its cgroup.
func TestStartConfined(t *testing.T) {
	v := newVM(t)
	k, err := debkernel.Get()
	require.NoError(t, err)
	stateDir := filepath.Join(v.dir, "state")
	def := fmt.Sprintf(`{"name": "jailed", "kernel": %q, "initrd": %q, "memory": "256M",
		"cmdline": "console=ttyS0 reboot=k panic=1 quiet gvmm.steps=write-direct,sleep gvmm.mib=%d gvmm.seed=%d gvmm.sleep=600",
		"disks": [{"path": %q}], "user": "%d:%d", "limits": {"cpus": 1, "memory": "400M"}}`,
		k.Vmlinuz, filepath.Join(v.dir, "guest.cpio"), dataMiB, seed, v.image, uid, gid)
	defFile := filepath.Join(v.dir, "jailed.json")
	require.NoError(t, os.WriteFile(defFile, []byte(def), 0o644))
	gvmm := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(kvmhost.Asset("gvmm"), args...)
		cmd.Env = append(os.Environ(), "GVMM_STATE_DIR="+stateDir)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "gvmm %v: %s", args, out)
		t.Logf("gvmm %s: %s", strings.Join(args, " "), out)
		return string(out)
	}
	gvmm("define", defFile)
	out := gvmm("start", "jailed")
	var supervisor int
	_, err = fmt.Sscanf(out[strings.Index(out, "(pid "):], "(pid %d)", &supervisor)
	require.NoError(t, err, "%s", out)
	runDir := filepath.Join(stateDir, "run", "jailed")
	defer func() {
		if t.Failed() {
			vmmLog, _ := os.ReadFile(filepath.Join(runDir, "vmm.log"))
			t.Logf("vmm.log:\n%s", vmmLog)
		}
	}()
	deadline := time.Now().Add(guestWait)
	for {
		b, _ := os.ReadFile(filepath.Join(runDir, "console.log"))
		if strings.Contains(string(b), "GVMMTEST sleeping=") {
			break
		}
		require.True(t, time.Now().Before(deadline), "the guest did not report sleeping\n%s", b)
		time.Sleep(100 * time.Millisecond)
	}
	vmm := vmmOf(t, supervisor)
	st := procStatus(t, vmm)
	assert.Equal(t, "1000\t1000\t1000\t1000", st["Uid"])
	assert.Equal(t, "0000000000000000", st["CapEff"])
	assert.Equal(t, "2", st["Seccomp"])
	cgDir := fmt.Sprintf("/sys/fs/cgroup/gvmm/vm-%d", supervisor)
	memMax, err := os.ReadFile(filepath.Join(cgDir, "memory.max"))
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(memoryLimit), strings.TrimSpace(string(memMax)))
	info, err := os.Stat(runDir)
	require.NoError(t, err)
	assert.Equal(t, uint32(uid), info.Sys().(*syscall.Stat_t).Uid, "the run folder is the VMM's user's")
	assert.Contains(t, gvmm("list"), "running")

	// gvmm snapshot: the confined VMM saves into its run folder's
	// snapshot folder, gvmm moves it where it was asked for, as root's,
	// and the VM runs on.
	snap := filepath.Join(v.dir, "snap")
	gvmm("snapshot", "jailed", snap)
	for _, name := range []string{"", snapshot.StateFile, snapshot.MemoryFile} {
		info, err := os.Stat(filepath.Join(snap, name))
		require.NoError(t, err)
		assert.Equal(t, uint32(0), info.Sys().(*syscall.Stat_t).Uid, "%s is root's", filepath.Join(snap, name))
	}
	left, err := os.ReadDir(filepath.Join(runDir, "snapshots"))
	require.NoError(t, err)
	assert.Empty(t, left, "nothing left in the VMM's snapshot folder")
	assert.Contains(t, gvmm("list"), "running")

	gvmm("destroy", "jailed")
	assert.NoDirExists(t, cgDir, "the cgroup goes with the VMM")
	assert.NotContains(t, gvmm("list"), "running")
}

// TestConfinedVMMWithTAP: a VMM with a TAP stays in the host's network
// namespace, where the TAP it created lives until it ends.
func TestConfinedVMMWithTAP(t *testing.T) {
	const tap = "gvmmjail0"
	v := newVM(t)
	p := vmmproc.Start(t, guestWait+time.Minute, kvmhost.Asset("gvmm"), append(v.args, "--net", "tap="+tap)...)
	p.WaitForLink(t, tap, guestWait)
	p.WaitFor(t, "sleeping", guestWait)
	vmm := vmmOf(t, p.Cmd.Process.Pid)
	for ns, same := range map[string]bool{"net": true, "mnt": false, "pid": false} {
		mine, err := os.Readlink("/proc/self/ns/" + ns)
		require.NoError(t, err)
		its, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", vmm, ns))
		require.NoError(t, err)
		assert.Equal(t, same, mine == its, "%s namespace shared: %v", ns, same)
	}
	assert.Equal(t, "1000\t1000\t1000\t1000", procStatus(t, vmm)["Uid"])

	require.NoError(t, p.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.Exited:
	case <-time.After(time.Minute):
		t.Fatalf("the VMM did not end after SIGTERM\n%s", p.Err.String())
	}
	assert.Equal(t, 0, p.Cmd.ProcessState.ExitCode(), "%s", p.Err.String())
	_, err := netlink.LinkByName(tap)
	var notFound netlink.LinkNotFoundError
	assert.ErrorAs(t, err, &notFound, "the TAP the VMM created goes with it")
}

// TestConfinedSnapshotAndRestore: a confined VMM saves a snapshot into
// its --snapshot-dir, as its user, and refuses a folder elsewhere; a
// restore with --user runs confined as that user.
func TestConfinedSnapshotAndRestore(t *testing.T) {
	v := newVM(t)
	snaps := filepath.Join(v.dir, "snapshots")
	require.NoError(t, os.Mkdir(snaps, 0o700))
	require.NoError(t, os.Chown(snaps, uid, gid))
	p := vmmproc.Start(t, guestWait+time.Minute, kvmhost.Asset("gvmm"), append(v.args, "--snapshot-dir", snaps)...)
	p.WaitFor(t, "sleeping", guestWait)

	cl := api.NewClient(v.api)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, cl.Pause(ctx))
	err := cl.Snapshot(ctx, filepath.Join(v.dir, "elsewhere"))
	var ae *api.Error
	require.ErrorAs(t, err, &ae, "a snapshot outside --snapshot-dir is refused")
	assert.Equal(t, 400, ae.StatusCode)
	assert.Contains(t, ae.Error(), "--snapshot-dir "+snaps)
	snap := filepath.Join(snaps, "s1")
	require.NoError(t, cl.Snapshot(ctx, snap), "a snapshot inside --snapshot-dir")
	for _, name := range []string{"state", "memory"} {
		fi, err := os.Stat(filepath.Join(snap, name))
		require.NoError(t, err)
		assert.Equal(t, uint32(uid), fi.Sys().(*syscall.Stat_t).Uid, "the confined VMM wrote %s as its user", name)
	}
	require.NoError(t, p.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.Exited:
	case <-time.After(time.Minute):
		t.Fatalf("the VMM did not end after SIGTERM\n%s", p.Err.String())
	}

	restoredAPI := filepath.Join(v.dir, "run", "restored.sock")
	r := vmmproc.Start(t, guestWait, kvmhost.Asset("gvmm"), "run", "--restore", snap, "--api-socket", restoredAPI,
		"--user", fmt.Sprintf("%d:%d", uid, gid), "--memory-limit", "400M", "--log-level", "debug")
	rc := api.NewClient(restoredAPI)
	defer rc.Close()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		info, err := rc.Info(ctx)
		if err == nil && info.State == api.StateRunning {
			break
		}
		select {
		case <-r.Exited:
			t.Fatalf("the restored VMM ended\n%s", r.Err.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "the restored VMM did not run in a minute: %v %+v", err, info)
	}
	vmm := vmmOf(t, r.Cmd.Process.Pid)
	st := procStatus(t, vmm)
	assert.Equal(t, "1000\t1000\t1000\t1000", st["Uid"], "the restored VMM runs as the user")
	assert.Equal(t, "0000000000000000", st["CapEff"])
	assert.Equal(t, "2", st["Seccomp"])
	assert.Equal(t, "1", strings.Fields(st["NSpid"])[1], "the restored VMM is the first process of its PID namespace")
	assert.Contains(t, r.Err.String(), "VMM confined")
	assert.Contains(t, r.Err.String(), "guest restored")
	assert.NotContains(t, r.Out.String(), "Linux version", "no boot")

	require.NoError(t, r.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-r.Exited:
	case <-time.After(time.Minute):
		t.Fatalf("the restored VMM did not end after SIGTERM\n%s", r.Err.String())
	}
	assert.Equal(t, 0, r.Cmd.ProcessState.ExitCode(), "%s", r.Err.String())
}
