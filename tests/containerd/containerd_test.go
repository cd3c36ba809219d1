// Package containerd_test runs Debian 13's containerd and ctr in the KVM
// test host with the gvmm shim (runtime io.containerd.gvmm.v1) in PATH:
// a busybox image the test builds itself is imported with ctr image
// import, and ctr runs, execs, signals, pauses, resumes and deletes its
// containers, each in a VM of its own whose kernel is the stock Debian
// one; afterwards no shim, socket or mount is left behind.
package containerd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/gvmm-dev/gvmm/tests/containerdpkg"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

const (
	runtimeName = "io.containerd.gvmm.v1"
	shimBinary  = "containerd-shim-gvmm-v1"
	// guestMemory is the VM's: MemTotal in the container shows it.
	guestMemory = "256M"
)

func TestMain(m *testing.M) {
	opts := []kvmhost.Option{
		kvmhost.WithBinary(shimBinary, "github.com/gvmm-dev/gvmm/cmd/containerd-shim-gvmm-v1"),
		kvmhost.WithBinary("gvmm-agent", "github.com/gvmm-dev/gvmm/cmd/gvmm-agent"),
		kvmhost.WithHostProgram("busybox"),
		// What the shim's agent loads in its guest.
		kvmhost.WithModules("virtio_pci", "9pnet_virtio", "9p", "vmw_vsock_virtio_transport", "virtio_net"),
		// A pod's network namespace, its veth, the shim's TAP and tc
		// redirections, in the test host; CNI's bridge.
		kvmhost.WithHostModules("veth", "tun", "sch_ingress", "cls_u32", "act_mirred", "bridge"),
	}
	if os.Getenv(kvmhost.EnvInside) == "" {
		root, err := containerdpkg.Get()
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			os.Exit(1)
		}
		for _, p := range []string{"usr/bin/containerd", "usr/bin/ctr", "usr/bin/containerd-shim-runc-v2"} {
			opts = append(opts, kvmhost.WithHostProgram(filepath.Join(root, p)))
		}
		runc, err := containerdpkg.Runc()
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			os.Exit(1)
		}
		opts = append(opts, kvmhost.WithHostProgram(runc))
		plugins, err := containerdpkg.CNI()
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			os.Exit(1)
		}
		for _, p := range plugins {
			opts = append(opts, kvmhost.WithHostProgram(p))
		}
	}
	kvmhost.Main(m, opts...)
}

// cmdTimeout bounds one ctr command; a guest boot in the test host
// takes 10 to 40 s alone, minutes when ten boot at once.
const cmdTimeout = 10 * time.Minute

// env is one containerd with its own root, state and socket.
type env struct {
	t         testing.TB
	dir       string
	address   string
	shimConf  string
	daemonLog *bytes.Buffer
}

// startContainerd starts containerd for the test and imports the image.
func startContainerd(t testing.TB) *env {
	t.Helper()
	return startContainerdWith(t, "", "", "")
}

// startContainerdWith starts containerd with the CRI plugin when cri is
// its configuration (a format string of the shim's configuration path and
// cniDir, the CNI configuration's folder),
// and imports the image, in namespace ns ("" ctr's default).
func startContainerdWith(t testing.TB, cri, cniDir, ns string) *env {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	dir := t.TempDir()
	e := &env{t: t, dir: dir, address: filepath.Join(dir, "containerd.sock"), daemonLog: &bytes.Buffer{}}
	e.shimConf = filepath.Join(dir, "gvmm-shim.toml")
	require.NoError(t, os.WriteFile(e.shimConf, []byte(fmt.Sprintf(
		"kernel = %q\nmodules = %q\nmemory = %q\ncpus = 1\nboot_timeout = \"8m\"\n",
		k.Vmlinuz, k.ModulesDir(), guestMemory)), 0o644))
	conf := filepath.Join(dir, "config.toml")
	disabled := `"io.containerd.grpc.v1.cri", `
	if cri != "" {
		disabled, cri = "", fmt.Sprintf(cri, e.shimConf, cniDir)
	}
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [%s"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %q
%s`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), disabled, e.address, cri)), 0o644))
	cmd := exec.Command(kvmhost.Asset("containerd"), "--config", conf, "--log-level", "debug")
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv(kvmhost.EnvAssets)+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = e.daemonLog, e.daemonLog
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		// containerd copies its shims' logs to its own: a shim that made
		// a call its seccomp filter denies said so there, even when it
		// happened on its way out after the task's delete.
		assert.False(t, strings.Contains(e.daemonLog.String(), "seccomp: system call not allowed"), "a shim was stopped by its seccomp filter")
		if t.Failed() {
			t.Logf("containerd's log:\n%s", e.daemonLog)
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := e.ctr("version"); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "containerd did not answer within a minute:\n%s", e.daemonLog)
		time.Sleep(200 * time.Millisecond)
	}
	e.importImage(ns, imageName, []string{"/bin/sh"})
	return e
}

// importImage writes the busybox image as name, whose command is cmd,
// and imports it in namespace ns.
func (e *env) importImage(ns, name string, cmd []string) {
	t := e.t
	t.Helper()
	img := filepath.Join(e.dir, "image.tar")
	require.NoError(t, writeImage(img, kvmhost.Asset("busybox"), name, cmd))
	var args []string
	if ns != "" {
		args = []string{"--namespace", ns}
	}
	out, err := e.ctr(append(args, "image", "import", "--snapshotter", "native", img)...)
	require.NoError(t, err, "%s", out)
}

// ctrResult is a ctr command's outcome.
type ctrResult struct {
	status         int
	stdout, stderr string
}

// ctr runs ctr and returns its output; an error for a status other than 0.
func (e *env) ctr(args ...string) (string, error) {
	r := e.ctrStatus(args...)
	if r.status != 0 {
		return r.stdout, fmt.Errorf("ctr %s: status %d: %s", strings.Join(args, " "), r.status, r.stderr)
	}
	return r.stdout, nil
}

// ctrStatus runs ctr and returns its status, stdout and stderr.
func (e *env) ctrStatus(args ...string) ctrResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvmhost.Asset("ctr"), append([]string{"--address", e.address}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := ctrResult{stdout: out.String(), stderr: errb.String()}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		e.t.Fatalf("ctr %s did not finish in %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), cmdTimeout, r.stdout, r.stderr)
	case errors.As(err, &exit):
		r.status = exit.ExitCode()
	case err != nil:
		e.t.Fatalf("ctr: %v", err)
	}
	return r
}

// run is ctr run with the gvmm runtime.
func (e *env) run(flags []string, id string, args ...string) ctrResult {
	a := append([]string{"run", "--snapshotter", "native", "--runtime", runtimeName, "--runtime-config-path", e.shimConf}, flags...)
	return e.ctrStatus(append(append(a, imageName, id), args...)...)
}

// taskStatus is the task's status as ctr task ls shows it.
func (e *env) taskStatus(id string) string {
	out, err := e.ctr("task", "ls")
	require.NoError(e.t, err)
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// TestRunInAGuest: ctr run prints the command's output and exits with
// its status; the command ran in the VM's kernel (its command line is
// the shim's, its memory the VM's), not on the test host; a chmod in
// its root keeps a set-user-ID bit, as with runc.
func TestRunInAGuest(t *testing.T) {
	e := startContainerd(t)
	r := e.run([]string{"--rm", "--hostname", "box1"}, "run1", "sh", "-c",
		"echo hello from the container; cat /proc/cmdline; grep MemTotal /proc/meminfo; echo to-stderr >&2; hostname; "+
			"touch /setid && chmod 4755 /setid && stat -c %a /setid; exit 3")
	t.Logf("ctr run: status %d\nstdout:\n%s\nstderr:\n%s", r.status, r.stdout, r.stderr)
	assert.Equal(t, 3, r.status, "the command's exit status")
	lines := strings.Split(r.stdout, "\n")
	require.GreaterOrEqual(t, len(lines), 4, "stdout: %q", r.stdout)
	assert.Equal(t, "hello from the container", lines[0])
	assert.Contains(t, lines[1], "panic=-1", "the kernel's command line is the shim's guest's")
	host, err := os.ReadFile("/proc/cmdline")
	require.NoError(t, err)
	assert.NotEqual(t, strings.TrimSpace(string(host)), lines[1], "the command saw the test host's kernel")
	f := strings.Fields(lines[2])
	require.Len(t, f, 3, "MemTotal line %q", lines[2])
	kib, err := strconv.Atoi(f[1])
	require.NoError(t, err)
	assert.Less(t, kib, 256*1024, "MemTotal is the VM's (256 MiB, less the kernel's own)")
	assert.Greater(t, kib, 128*1024)
	assert.Equal(t, "box1", lines[3], "the container's hostname")
	require.GreaterOrEqual(t, len(lines), 5, "stdout: %q", r.stdout)
	assert.Equal(t, "4755", lines[4], "a container's root keeps the set-user-ID bit its chmod sets (its share is SetID)")
	assert.Contains(t, r.stderr, "to-stderr")
	e.assertNothingLeft("run1")
}

// TestLifecycle: exec, pause and resume, SIGTERM that the container
// ignores then SIGKILL, delete; then nothing is left behind.
func TestLifecycle(t *testing.T) {
	e := startContainerd(t)
	r := e.run([]string{"-d"}, "life1", "sh", "-c", "trap '' TERM; sleep 1000; echo not reached")
	require.Equal(t, 0, r.status, "ctr run -d: %s %s", r.stdout, r.stderr)
	assert.Equal(t, "RUNNING", e.taskStatus("life1"))
	pids := shimPids("life1")
	require.Len(t, pids, 1, "one shim for the container")
	mode, filters := seccompStatus(t, pids[0])
	assert.Equal(t, "2", mode, "the shim runs under a seccomp filter (mode 2)")
	assert.GreaterOrEqual(t, filters, 1, "the shim's seccomp filters")

	x := e.ctrStatus("task", "exec", "--exec-id", "e1", "life1", "sh", "-c", "echo from exec; id -u; exit 5")
	assert.Equal(t, 5, x.status, "the exec's status; stderr: %s", x.stderr)
	assert.Equal(t, "from exec\n0\n", x.stdout)

	out, err := e.ctr("task", "ps", "life1")
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(strings.Split(strings.TrimSpace(out), "\n")), 3, "ps: a header, sh and sleep:\n%s", out)

	out, err = e.ctr("task", "metrics", "life1")
	require.NoError(t, err)
	metrics := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			metrics[f[0]] = f[1]
		}
	}
	limit, err := strconv.ParseUint(metrics["memory.usage_limit"], 10, 64)
	require.NoError(t, err, "metrics:\n%s", out)
	assert.Less(t, limit, uint64(256<<20), "the guest's memory is the limit")
	assert.Greater(t, limit, uint64(128<<20))
	assert.Equal(t, "2", metrics["pids.current"], "sh and sleep")

	_, err = e.ctr("task", "pause", "life1")
	require.NoError(t, err)
	assert.Equal(t, "PAUSED", e.taskStatus("life1"))
	_, err = e.ctr("task", "resume", "life1")
	require.NoError(t, err)
	assert.Equal(t, "RUNNING", e.taskStatus("life1"))

	_, err = e.ctr("task", "kill", "life1") // SIGTERM, which it ignores
	require.NoError(t, err)
	time.Sleep(2 * time.Second)
	assert.Equal(t, "RUNNING", e.taskStatus("life1"), "SIGTERM is ignored by the container")
	_, err = e.ctr("task", "kill", "--signal", "SIGKILL", "life1")
	require.NoError(t, err)
	deadline := time.Now().Add(time.Minute)
	for e.taskStatus("life1") != "STOPPED" {
		require.True(t, time.Now().Before(deadline), "the task did not stop after SIGKILL")
		time.Sleep(200 * time.Millisecond)
	}
	out, err = e.ctr("task", "delete", "life1")
	require.NoError(t, err, "%s", out)
	_, err = e.ctr("container", "delete", "life1")
	require.NoError(t, err)
	e.assertNothingLeft("life1")
}

// TestKilledShim: the shim, which is the VMM, is killed; containerd
// sees the task end and its cleanup (shim delete) leaves nothing behind.
func TestKilledShim(t *testing.T) {
	e := startContainerd(t)
	r := e.run([]string{"-d"}, "dead1", "sleep", "1000")
	require.Equal(t, 0, r.status, "ctr run -d: %s %s", r.stdout, r.stderr)
	pids := shimPids("dead1")
	require.Len(t, pids, 1, "one shim for the container")
	require.NoError(t, syscall.Kill(pids[0], syscall.SIGKILL))
	deadline := time.Now().Add(time.Minute)
	for {
		st := e.taskStatus("dead1")
		if st == "STOPPED" || st == "" {
			break
		}
		require.True(t, time.Now().Before(deadline), "the task is still %s after its shim was killed", st)
		time.Sleep(200 * time.Millisecond)
	}
	_, _ = e.ctr("task", "delete", "dead1") // may be gone already
	_, err := e.ctr("container", "delete", "dead1")
	require.NoError(t, err)
	e.assertNothingLeft("dead1")
}

// TestSeccompOff: with seccomp = "off" in its configuration the shim
// installs no filter, and the container runs as with one.
func TestSeccompOff(t *testing.T) {
	e := startContainerd(t)
	conf, err := os.ReadFile(e.shimConf)
	require.NoError(t, err)
	off := filepath.Join(e.dir, "gvmm-shim-seccomp-off.toml")
	require.NoError(t, os.WriteFile(off, append(conf, "seccomp = \"off\"\n"...), 0o644))
	a := []string{"run", "--snapshotter", "native", "--runtime", runtimeName, "--runtime-config-path", off, "-d", imageName, "off1", "sleep", "1000"}
	r := e.ctrStatus(a...)
	require.Equal(t, 0, r.status, "ctr run -d: %s %s", r.stdout, r.stderr)
	pids := shimPids("off1")
	require.Len(t, pids, 1, "one shim for the container")
	mode, filters := seccompStatus(t, pids[0])
	assert.Equal(t, "0", mode, "the shim runs without a seccomp filter")
	assert.Zero(t, filters)
	_, err = e.ctr("task", "kill", "--signal", "SIGKILL", "off1")
	require.NoError(t, err)
	deadline := time.Now().Add(time.Minute)
	for e.taskStatus("off1") != "STOPPED" {
		require.True(t, time.Now().Before(deadline), "the task did not stop after SIGKILL")
		time.Sleep(200 * time.Millisecond)
	}
	_, err = e.ctr("task", "delete", "off1")
	require.NoError(t, err)
	_, err = e.ctr("container", "delete", "off1")
	require.NoError(t, err)
	e.assertNothingLeft("off1")
}

// seccompStatus is the Seccomp and Seccomp_filters lines of process
// pid's status.
func seccompStatus(t *testing.T, pid int) (mode string, filters int) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	require.NoError(t, err)
	filters = -1
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "Seccomp":
			mode = strings.TrimSpace(v)
		case "Seccomp_filters":
			filters, err = strconv.Atoi(strings.TrimSpace(v))
			require.NoError(t, err, "%q", line)
		}
	}
	require.NotEmpty(t, mode, "no Seccomp line in the status of %d:\n%s", pid, data)
	require.GreaterOrEqual(t, filters, 0, "no Seccomp_filters line in the status of %d:\n%s", pid, data)
	return mode, filters
}

// assertNothingLeft checks that no shim process of container id runs,
// and that no socket or mount of it is left.
func (e *env) assertNothingLeft(id string) {
	t := e.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(shimPids(id)) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	assert.Empty(t, shimPids(id), "a shim (the VMM) of %s is left", id)
	assert.Empty(t, mounterPids(), "a pod's mounter is left")
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, line := range strings.Split(string(mounts), "\n") {
		assert.NotContains(t, line, "/"+id+"/", "a mount of %s is left", id)
	}
	socks, _ := filepath.Glob("/run/containerd/s/*")
	for _, s := range socks {
		st, err := os.Stat(s)
		if err == nil && st.Mode()&os.ModeSocket != 0 {
			t.Errorf("a shim socket is left: %s", s)
		}
	}
	bundles, _ := filepath.Glob(filepath.Join(e.dir, "state", "io.containerd.runtime.v2.task", "*", id))
	assert.Empty(t, bundles, "the bundle of %s is left", id)
}

// mounterPids lists the pod mounters (the shim's helper) that run.
func mounterPids() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range ents {
		data, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if len(args) > 1 && filepath.Base(args[0]) == shimBinary && args[1] == "gvmm-pod-mounter" {
			pid, _ := strconv.Atoi(ent.Name())
			pids = append(pids, pid)
		}
	}
	return pids
}

// shimPids lists the shim daemons of container id.
func shimPids(id string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if filepath.Base(args[0]) != shimBinary {
			continue
		}
		for i, a := range args {
			if a == "-id" && i+1 < len(args) && args[i+1] == id {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// CRI's annotations of a pod's sandbox and of its containers.
const (
	annotationType      = "io.kubernetes.cri.container-type"
	annotationSandboxID = "io.kubernetes.cri.sandbox-id"
)

// TestPodSandbox: a sandbox and two containers with CRI's annotations
// (ctr run --annotation, as CRI sets them) run in one VM, the sandbox's
// shim's, each in its own root; the containers end one by one, the
// sandbox's delete ends the VM, and nothing is left behind.
func TestPodSandbox(t *testing.T) {
	e := startContainerd(t)
	pod := []string{"-d", "--annotation", annotationType + "=sandbox", "--annotation", annotationSandboxID + "=pod1"}
	r := e.run(pod, "pod1", "sleep", "100000")
	require.Equal(t, 0, r.status, "ctr run the sandbox: %s %s", r.stdout, r.stderr)
	member := []string{"-d", "--annotation", annotationType + "=container", "--annotation", annotationSandboxID + "=pod1"}
	for _, id := range []string{"c1", "c2"} {
		r := e.run(member, id, "sh", "-c", "echo "+id+" > /whoami; sleep 100000")
		require.Equal(t, 0, r.status, "ctr run %s: %s %s", id, r.stdout, r.stderr)
	}
	pids := shimPids("pod1")
	require.Len(t, pids, 1, "one shim for the pod")
	assert.Empty(t, shimPids("c1"), "no shim of a pod's container")
	assert.Empty(t, shimPids("c2"), "no shim of a pod's container")

	bootID := map[string]string{}
	for i, id := range []string{"pod1", "c1", "c2"} {
		x := e.ctrStatus("task", "exec", "--exec-id", fmt.Sprintf("b%d", i), id, "cat", "/proc/sys/kernel/random/boot_id")
		require.Equal(t, 0, x.status, "exec in %s: %s", id, x.stderr)
		bootID[id] = strings.TrimSpace(x.stdout)
	}
	assert.NotEmpty(t, bootID["pod1"])
	assert.Equal(t, bootID["pod1"], bootID["c1"], "c1 runs in the sandbox's guest")
	assert.Equal(t, bootID["pod1"], bootID["c2"], "c2 runs in the sandbox's guest")

	// Each container has its own root: c2 does not see c1's file.
	deadline := time.Now().Add(time.Minute)
	for {
		x := e.ctrStatus("task", "exec", "--exec-id", "w1", "c1", "cat", "/whoami")
		if x.status == 0 {
			assert.Equal(t, "c1\n", x.stdout)
			break
		}
		require.True(t, time.Now().Before(deadline), "c1's /whoami: %s", x.stderr)
		time.Sleep(200 * time.Millisecond)
	}
	x := e.ctrStatus("task", "exec", "--exec-id", "w2", "c2", "sh", "-c", "cat /whoami; ls /")
	assert.Equal(t, 0, x.status, "%s", x.stderr)
	assert.True(t, strings.HasPrefix(x.stdout, "c2\n"), "c2's root is its own: %q", x.stdout)
	// Each container's processes are its own: sh -c ran its last
	// command, sleep, in its place.
	ps := map[string][]string{}
	for _, id := range []string{"pod1", "c1", "c2"} {
		out, err := e.ctr("task", "ps", id)
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 2, "%s's ps: a header and sleep:\n%s", id, out)
		ps[id] = strings.Fields(lines[1])
	}
	assert.NotEqual(t, ps["c1"][0], ps["c2"][0], "c1 and c2 list their own sleep")
	assert.NotEqual(t, ps["pod1"][0], ps["c1"][0], "the sandbox and c1 list their own sleep")

	// Deleting c1 ends c1 only.
	e.killAndDelete("c1")
	assert.Equal(t, "RUNNING", e.taskStatus("c2"), "c2 runs on after c1's delete")
	assert.Equal(t, "RUNNING", e.taskStatus("pod1"), "the sandbox runs on after c1's delete")
	assert.Equal(t, pids, shimPids("pod1"), "the pod's shim runs on")
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	assert.NotContains(t, string(mounts), "/c1 ", "c1's root is unmounted")
	x = e.ctrStatus("task", "exec", "--exec-id", "after", "c2", "cat", "/whoami")
	assert.Equal(t, 0, x.status, "%s", x.stderr)
	assert.Equal(t, "c2\n", x.stdout)

	e.killAndDelete("c2")
	e.killAndDelete("pod1")
	for _, id := range []string{"pod1", "c1", "c2"} {
		e.assertNothingLeft(id)
	}
}

// TestKilledPodShim: the pod's shim (its VMM) is killed; containerd
// sees the sandbox's and the container's tasks end, and their cleanup
// (shim delete in each bundle) leaves no shim, mounter, socket or mount.
func TestKilledPodShim(t *testing.T) {
	e := startContainerd(t)
	r := e.run([]string{"-d", "--annotation", annotationType + "=sandbox", "--annotation", annotationSandboxID + "=pod2"}, "pod2", "sleep", "100000")
	require.Equal(t, 0, r.status, "ctr run the sandbox: %s %s", r.stdout, r.stderr)
	r = e.run([]string{"-d", "--annotation", annotationType + "=container", "--annotation", annotationSandboxID + "=pod2"}, "k1", "sleep", "100000")
	require.Equal(t, 0, r.status, "ctr run k1: %s %s", r.stdout, r.stderr)
	pids := shimPids("pod2")
	require.Len(t, pids, 1, "one shim for the pod")
	require.Len(t, mounterPids(), 1, "the pod's mounter")
	require.NoError(t, syscall.Kill(pids[0], syscall.SIGKILL))
	for _, id := range []string{"k1", "pod2"} {
		deadline := time.Now().Add(time.Minute)
		for st := e.taskStatus(id); st != "STOPPED" && st != ""; st = e.taskStatus(id) {
			require.True(t, time.Now().Before(deadline), "task %s is still %s after its shim was killed", id, st)
			time.Sleep(200 * time.Millisecond)
		}
		_, _ = e.ctr("task", "delete", id) // may be gone already
		_, err := e.ctr("container", "delete", id)
		require.NoError(t, err)
	}
	for _, id := range []string{"k1", "pod2"} {
		e.assertNothingLeft(id)
	}
}

// killAndDelete kills task id, waits for its end and deletes it and its
// container.
func (e *env) killAndDelete(id string) {
	t := e.t
	t.Helper()
	_, err := e.ctr("task", "kill", "--signal", "SIGKILL", id)
	require.NoError(t, err)
	deadline := time.Now().Add(time.Minute)
	for e.taskStatus(id) != "STOPPED" {
		require.True(t, time.Now().Before(deadline), "task %s did not stop after SIGKILL", id)
		time.Sleep(200 * time.Millisecond)
	}
	out, err := e.ctr("task", "delete", id)
	require.NoError(t, err, "%s", out)
	_, err = e.ctr("container", "delete", id)
	require.NoError(t, err)
}

// TestCgroup: the shim, which is the VMM, runs in the cgroup the spec
// names (ctr run --cgroup, as CRI names the pod's), created for it, and
// the cgroup is removed at the task's delete, and by shim delete after
// the shim was killed.
func TestCgroup(t *testing.T) {
	// The level above the containers' cgroups is the test's.
	t.Cleanup(func() { assert.NoError(t, os.Remove("/sys/fs/cgroup/gvmmtest")) })
	e := startContainerd(t)
	for _, tc := range []struct {
		id, cgroup string
		kill       bool
	}{
		{"cg1", "/gvmmtest/pod1", false},
		{"cg2", "/gvmmtest/pod2", true},
	} {
		r := e.run([]string{"-d", "--cgroup", tc.cgroup}, tc.id, "sleep", "1000")
		require.Equal(t, 0, r.status, "ctr run -d: %s %s", r.stdout, r.stderr)
		pids := shimPids(tc.id)
		require.Len(t, pids, 1, "one shim for the container")
		dir := filepath.Join("/sys/fs/cgroup", tc.cgroup)
		procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		require.NoError(t, err, "the container's cgroup")
		assert.Contains(t, strings.Fields(string(procs)), strconv.Itoa(pids[0]), "the shim is in %s", tc.cgroup)
		self, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pids[0]), "cgroup"))
		require.NoError(t, err)
		assert.Contains(t, strings.Split(string(self), "\n"), "0::"+tc.cgroup, "the shim's cgroups")
		if tc.kill {
			require.NoError(t, syscall.Kill(pids[0], syscall.SIGKILL))
			deadline := time.Now().Add(time.Minute)
			for st := e.taskStatus(tc.id); st != "STOPPED" && st != ""; st = e.taskStatus(tc.id) {
				require.True(t, time.Now().Before(deadline), "the task is still %s after its shim was killed", st)
				time.Sleep(200 * time.Millisecond)
			}
			_, _ = e.ctr("task", "delete", tc.id) // may be gone already
			_, err = e.ctr("container", "delete", tc.id)
			require.NoError(t, err)
		} else {
			e.killAndDelete(tc.id)
		}
		e.assertNothingLeft(tc.id)
		assert.NoDirExists(t, dir, "the cgroup of %s is left", tc.id)
	}
}

// TestPodNetwork: a container whose spec joins a network namespace (ctr
// run --with-ns network:PATH, as CRI joins the pod's that CNI set up)
// gets the namespace's interface in its guest: the veth's address, and
// it reaches the host end of the veth by ping and by TCP. After its
// delete the namespace's interface is as it was: no TAP, no qdisc.
func TestPodNetwork(t *testing.T) {
	const (
		nsName   = "gvmmtest"
		hostAddr = "10.77.0.1"
		podAddr  = "10.77.0.2"
	)
	nsPath := makePodNetns(t, nsName, hostAddr+"/24", podAddr+"/24")
	serveHello(t, hostAddr+":8080")

	e := startContainerd(t)
	r := e.run([]string{"--rm", "--with-ns", "network:" + nsPath}, "net1", "sh", "-c",
		"ip -4 addr show; ping -c 1 -W 5 "+hostAddr+" >/dev/null && echo ping ok; wget -q -O - http://"+hostAddr+":8080/; echo")
	t.Logf("ctr run: status %d\nstdout:\n%s\nstderr:\n%s", r.status, r.stdout, r.stderr)
	require.Equal(t, 0, r.status)
	assert.Contains(t, r.stdout, "inet "+podAddr+"/24", "the guest's interface has the veth's address")
	assert.Contains(t, r.stdout, "ping ok")
	assert.Contains(t, r.stdout, "hello "+podAddr, "TCP to the host end, from the pod's address")
	e.assertNothingLeft("net1")

	assertNetnsClean(t, mustNetns(t, nsPath))
}

// serveHello serves, on addr, a page that names the client's address.
func serveHello(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.RemoteAddr[:strings.LastIndexByte(r.RemoteAddr, ':')])
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
}

// netnsTC lists the TAPs in network namespace ns and the interfaces
// with an ingress qdisc: the shim's redirections while its VM runs.
func netnsTC(t *testing.T, ns netns.NsHandle) (taps, ingress []string) {
	t.Helper()
	h, err := netlink.NewHandleAt(ns, syscall.NETLINK_ROUTE)
	require.NoError(t, err)
	defer h.Delete()
	links, err := h.LinkList()
	require.NoError(t, err)
	for _, l := range links {
		if l.Type() == "tuntap" {
			taps = append(taps, l.Attrs().Name)
		}
		qdiscs, err := h.QdiscList(l)
		require.NoError(t, err)
		for _, q := range qdiscs {
			if q.Type() == "ingress" {
				ingress = append(ingress, l.Attrs().Name)
			}
		}
	}
	return taps, ingress
}

// assertNetnsClean checks that the shim left no TAP and no ingress
// qdisc in network namespace ns.
func assertNetnsClean(t *testing.T, ns netns.NsHandle) {
	t.Helper()
	taps, ingress := netnsTC(t, ns)
	assert.Empty(t, taps, "a TAP is left in the namespace")
	assert.Empty(t, ingress, "an ingress qdisc is left on these interfaces")
}

// makePodNetns makes the network namespace name with a veth pair, as a
// CNI plugin does: the host end with hostCIDR in the test's namespace,
// the pod end with podCIDR and a default route through the host end.
func makePodNetns(t *testing.T, name, hostCIDR, podCIDR string) string {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	require.NoError(t, err)
	defer orig.Close()
	pod, err := netns.NewNamed(name) // and the thread moves into it
	require.NoError(t, err)
	require.NoError(t, netns.Set(orig))
	t.Cleanup(func() {
		pod.Close()
		assert.NoError(t, netns.DeleteNamed(name))
	})
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gvmmh0"}, PeerName: "gvmmp0"}
	require.NoError(t, netlink.LinkAdd(veth))
	t.Cleanup(func() { _ = netlink.LinkDel(veth) })
	peer, err := netlink.LinkByName("gvmmp0")
	require.NoError(t, err)
	require.NoError(t, netlink.LinkSetNsFd(peer, int(pod)))
	host, err := netlink.LinkByName("gvmmh0")
	require.NoError(t, err)
	addr, err := netlink.ParseAddr(hostCIDR)
	require.NoError(t, err)
	require.NoError(t, netlink.AddrAdd(host, addr))
	require.NoError(t, netlink.LinkSetUp(host))

	h, err := netlink.NewHandleAt(pod, syscall.NETLINK_ROUTE)
	require.NoError(t, err)
	defer h.Delete()
	peer, err = h.LinkByName("gvmmp0")
	require.NoError(t, err)
	addr, err = netlink.ParseAddr(podCIDR)
	require.NoError(t, err)
	require.NoError(t, h.AddrAdd(peer, addr))
	require.NoError(t, h.LinkSetUp(peer))
	lo, err := h.LinkByName("lo")
	require.NoError(t, err)
	require.NoError(t, h.LinkSetUp(lo))
	gw := net.ParseIP(strings.Split(hostCIDR, "/")[0])
	require.NoError(t, h.RouteAdd(&netlink.Route{LinkIndex: peer.Attrs().Index, Gw: gw}))
	return filepath.Join("/run/netns", name) // where netns.NewNamed binds it
}

func mustNetns(t *testing.T, path string) netns.NsHandle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	require.NoError(t, err)
	t.Cleanup(func() { ns.Close() })
	return ns
}
