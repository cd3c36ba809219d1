// Package linuxboot_test boots the stock Debian kernel with gvmm, inside
// the KVM test host where /dev/kvm is missing, and checks what the guest
// sees.
package linuxboot_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/u-root/u-root/pkg/boot/bzimage"

	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guestinit", "github.com/gvmm-dev/gvmm/tests/guestinit"),
		// Room for a 3.5 GiB guest next to the host's own use.
		kvmhost.WithMemory(8192),
	)
}

// bootTimeout bounds one guest boot; a stuck guest fails the test.
const bootTimeout = 4 * time.Minute

// guestInitrd builds the guest's initramfs: our init and a few files.
func guestInitrd(t *testing.T) string {
	t.Helper()
	a := initramfs.New()
	require.NoError(t, a.AddCharDev("dev/console", 0o600, 5, 1))
	require.NoError(t, a.AddProgram("init", kvmhost.Asset("guestinit")))
	require.NoError(t, a.AddData("etc/gvmmtest/a.txt", []byte("alpha\n"), 0o644))
	require.NoError(t, a.AddData("etc/gvmmtest/b.txt", []byte("beta\n"), 0o644))
	p := filepath.Join(t.TempDir(), "guest.cpio")
	require.NoError(t, a.WriteFile(p))
	return p
}

func kernel(t *testing.T) *debkernel.Kernel {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	return k
}

type result struct {
	status int
	stdout string
	stderr string
	report map[string][]string // GVMMTEST key -> values in order
}

func (r result) one(t *testing.T, key string) string {
	t.Helper()
	v := r.report[key]
	require.Len(t, v, 1, "GVMMTEST %s in guest output:\n%s\nstderr:\n%s", key, r.stdout, r.stderr)
	return v[0]
}

// gvmm runs the gvmm binary with args, feeding stdin, and collects the
// guest's report.
func gvmm(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvmhost.Asset("gvmm"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "gvmm did not finish in %s\nstdout:\n%s\nstderr:\n%s", bootTimeout, out.String(), errb.String())
	r := result{stdout: out.String(), stderr: errb.String(), report: map[string][]string{}}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.status = exit.ExitCode()
	case err != nil:
		t.Fatalf("running gvmm: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if i := strings.Index(line, "GVMMTEST "); i >= 0 {
			k, v, _ := strings.Cut(line[i+len("GVMMTEST "):], "=")
			r.report[k] = append(r.report[k], v)
		}
	}
	return r
}

func bootArgs(k *debkernel.Kernel, initrd string, extra ...string) []string {
	return append([]string{"run", "--kernel", k.Vmlinuz, "--initrd", initrd}, extra...)
}

// TestGuestSeesTheMachine boots three machine shapes (boots are slow in
// the KVM test host, so each checks everything the guest can see): the
// vCPUs, the memory, including a size that straddles the MMIO hole, the
// command line, the initrd's files and the clock.
func TestGuestSeesTheMachine(t *testing.T) {
	k, initrd := kernel(t), guestInitrd(t)
	for _, tc := range []struct {
		cpus   int
		memory string
		mib    int
	}{
		{1, "128M", 128},
		{2, "1G", 1024},
		{4, "3584", 3584},
	} {
		t.Run(fmt.Sprintf("%dcpu-%s", tc.cpus, tc.memory), func(t *testing.T) {
			before := time.Now().Unix()
			// The test host may have a single CPU: more vCPUs are an over-commit.
			r := gvmm(t, "", bootArgs(k, initrd, "--cpus", strconv.Itoa(tc.cpus), "--allow-cpu-overcommit",
				"--memory", tc.memory, "--cmdline", "console=ttyS0 reboot=k panic=1 quiet gvmm.marker=xyzzy")...)
			after := time.Now().Unix()
			require.Equal(t, 0, r.status, "stderr:\n%s", r.stderr)
			assert.Contains(t, r.stderr, "powered off")

			assert.Equal(t, strconv.Itoa(tc.cpus), r.one(t, "nproc"))
			online := "0"
			if tc.cpus > 1 {
				online = "0-" + strconv.Itoa(tc.cpus-1)
			}
			assert.Equal(t, online, r.one(t, "online"))

			// The RAM the firmware map gives the guest is what was asked
			// for, less the 384 KiB legacy BIOS hole; MemTotal further
			// excludes what the kernel keeps for itself at boot: its image
			// and early allocations (about 48 MiB for this kernel) and
			// per-page structures that grow with RAM (a few percent).
			ramKB, err := strconv.Atoi(r.one(t, "ram_kb"))
			require.NoError(t, err)
			assert.InDelta(t, tc.mib*1024-384, ramKB, 8, "System RAM in /proc/iomem (Linux keeps page 0)")
			memKB, err := strconv.Atoi(r.one(t, "memtotal_kb"))
			require.NoError(t, err)
			assert.Less(t, memKB, tc.mib*1024)
			assert.Greater(t, memKB, ramKB*94/100-48*1024, "MemTotal %d kB for %d MiB", memKB, tc.mib)

			assert.Contains(t, r.one(t, "cmdline"), "gvmm.marker=xyzzy")
			assert.Equal(t, "a.txt,b.txt", r.one(t, "files"))
			date, err := strconv.ParseInt(r.one(t, "date_unix"), 10, 64)
			require.NoError(t, err)
			assert.GreaterOrEqual(t, date, before-5, "the guest's clock is the host's")
			assert.LessOrEqual(t, date, after+5, "the guest's clock is the host's")
			rtc, err := strconv.ParseInt(r.one(t, "rtc_unix"), 10, 64)
			require.NoError(t, err)
			assert.InDelta(t, date, rtc, 2, "the CMOS RTC says the same")
		})
	}
}

func TestRebootExitsZero(t *testing.T) {
	k, initrd := kernel(t), guestInitrd(t)
	// Power-off is checked by every boot of TestGuestSeesTheMachine.
	r := gvmm(t, "", bootArgs(k, initrd, "--cmdline", "console=ttyS0 reboot=k panic=1 quiet gvmm.action=reboot")...)
	assert.Equal(t, 0, r.status, "stderr:\n%s", r.stderr)
	assert.Equal(t, "1", r.one(t, "ready"))
	assert.Contains(t, r.stderr, "rebooted")
}

func TestPipedInputReachesGuest(t *testing.T) {
	k, initrd := kernel(t), guestInitrd(t)
	r := gvmm(t, "hello from the host\nsecond line\nquit\n",
		bootArgs(k, initrd, "--cmdline", "console=ttyS0 reboot=k panic=1 quiet gvmm.action=echo")...)
	require.Equal(t, 0, r.status, "stderr:\n%s", r.stderr)
	assert.Equal(t, []string{"hello from the host", "second line"}, r.report["echo"])
}

func TestBadInputIsRefused(t *testing.T) {
	k, initrd := kernel(t), guestInitrd(t)
	dir := t.TempDir()
	full, err := os.ReadFile(k.Vmlinuz)
	require.NoError(t, err)
	truncated := filepath.Join(dir, "truncated")
	require.NoError(t, os.WriteFile(truncated, full[:4096], 0o644))
	text := filepath.Join(dir, "text")
	require.NoError(t, os.WriteFile(text, []byte("this is not a kernel\n"), 0o644))
	big := filepath.Join(dir, "big.cpio")
	f, err := os.Create(big)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(200<<20))
	require.NoError(t, f.Close())

	for _, tc := range []struct {
		name   string
		args   []string
		status []int
		msg    string
	}{
		{"truncated kernel", []string{"run", "--kernel", truncated}, []int{1, 2}, "truncated"},
		{"text file", []string{"run", "--kernel", text}, []int{1, 2}, "not a bzImage or ELF kernel"},
		{"initrd larger than RAM", []string{"run", "--kernel", k.Vmlinuz, "--initrd", big, "--memory", "128M"}, []int{1, 2}, "initrd does not fit"},
		{"zero vCPUs", bootArgs(k, initrd, "--cpus", "0"), []int{2}, "at least one vCPU"},
		{"bad memory", bootArgs(k, initrd, "--memory", "12Q"), []int{2}, "--memory"},
		{"missing kernel", []string{"run", "--kernel", filepath.Join(dir, "nope")}, []int{1, 2}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := gvmm(t, "", tc.args...)
			assert.Contains(t, tc.status, r.status)
			assert.Contains(t, r.stderr, tc.msg)
			assert.NotContains(t, r.stderr, "panic")
		})
	}
}

// TestELFVmlinuxBootsViaPVH boots the ELF vmlinux inside the stock
// bzImage (what u-root's bzimage package decompresses) through its PVH
// entry note.
func TestELFVmlinuxBootsViaPVH(t *testing.T) {
	k, initrd := kernel(t), guestInitrd(t)
	image, err := os.ReadFile(k.Vmlinuz)
	require.NoError(t, err)
	var bz bzimage.BzImage
	require.NoError(t, bz.UnmarshalBinary(image))
	vmlinux := filepath.Join(t.TempDir(), "vmlinux")
	require.NoError(t, os.WriteFile(vmlinux, bz.KernelCode, 0o644))

	// One vCPU: SMP start-up is the guest kernel's, the same for both
	// entries, and TestGuestSeesTheMachine covers it.
	r := gvmm(t, "", "run", "--kernel", vmlinux, "--initrd", initrd, "--cmdline", "console=ttyS0 reboot=k panic=1 quiet")
	require.Equal(t, 0, r.status, "stderr:\n%s", r.stderr)
	assert.Equal(t, "1", r.one(t, "nproc"))
	assert.Equal(t, "a.txt,b.txt", r.one(t, "files"))
}

// TestLibraryEmbedsMachines boots machines through the library, as a
// sandbox runner would: one powers off by itself, the next would run
// forever and Stop ends it, and no goroutine is left behind. (They run
// one after the other: two VMs at once in one process have crashed the
// emulated test host's kvm_amd in svm_vcpu_enter_exit.)
func TestLibraryEmbedsMachines(t *testing.T) {
	k, initrd := kernel(t), guestInitrd(t)
	goroutines := runtime.NumGoroutine()
	boot := func(action string) (*machine.Machine, *syncBuffer) {
		out := &syncBuffer{}
		m, err := machine.New(machine.Config{
			Kernel: k.Vmlinuz, Initrd: initrd, Memory: 256 << 20, Console: out,
			Cmdline: "console=ttyS0 reboot=k panic=1 quiet gvmm.action=" + action,
		})
		require.NoError(t, err)
		require.NoError(t, m.Start(context.Background()))
		return m, out
	}

	m, out := boot("poweroff")
	require.NoError(t, m.Wait(), "console:\n%s", out.String())
	assert.Equal(t, machine.ExitPowerOff, m.ExitReason())
	assert.Contains(t, out.String(), "GVMMTEST ready=1")

	m, out = boot("hang")
	deadline := time.Now().Add(bootTimeout)
	for !strings.Contains(out.String(), "GVMMTEST ready=1") {
		require.True(t, time.Now().Before(deadline), "the guest never got ready:\n%s", out.String())
		time.Sleep(100 * time.Millisecond)
	}
	m.Stop()
	require.NoError(t, m.Wait(), "console:\n%s", out.String())
	assert.Equal(t, machine.ExitStopped, m.ExitReason())
	// Polled here, not with assert.Eventually, whose own goroutines count.
	for end := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutines && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	if !assert.LessOrEqual(t, runtime.NumGoroutine(), goroutines, "goroutines leaked") {
		var stacks bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		t.Log(stacks.String())
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
