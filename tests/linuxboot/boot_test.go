// Package linuxboot_test boots the stock Debian kernel with gvmm, inside
// the KVM test host where /dev/kvm is missing, and checks what the guest
// sees.
package linuxboot_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
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
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/payload"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guestinit", "github.com/gvmm-dev/gvmm/tests/guestinit"),
		// u-root's shell, the one make run boots, without its full-screen
		// line editor (which waits for a terminal to answer its queries):
		// a prompt and lines read from the serial console.
		kvmhost.WithBinary("sh", "github.com/u-root/u-root/cmds/core/gosh", "goshsmall"),
		// Room for a 3.5 GiB guest next to the host's own use.
		kvmhost.WithMemory(8192),
	)
}

// bootTimeout bounds one guest boot; a stuck guest fails the test.
const bootTimeout = 4 * time.Minute

// guestInitrd builds the guest's initramfs: our init, a shell and a few
// files.
func guestInitrd(t *testing.T) string {
	t.Helper()
	a := initramfs.New()
	require.NoError(t, a.AddCharDev("dev/console", 0o600, 5, 1))
	require.NoError(t, a.AddProgram("init", kvmhost.Asset("guestinit")))
	require.NoError(t, a.AddProgram("bin/sh", kvmhost.Asset("sh")))
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
			args := bootArgs(k, initrd, "--cpus", strconv.Itoa(tc.cpus),
				"--memory", tc.memory, "--cmdline", "console=ttyS0 reboot=k panic=1 quiet gvmm.marker=xyzzy")
			if tc.cpus > runtime.NumCPU() {
				args = append(args, "--allow-cpu-overcommit") // more vCPUs than the test host has
			}
			r := gvmm(t, "", args...)
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
			// COM1 is a 16550A; nothing answers at COM2-4.
			assert.Equal(t, "0:16550A,1:unknown,2:unknown,3:unknown", r.one(t, "uarts"))
			// The KVM CPUID leaves are seen: kvmclock is registered.
			assert.Contains(t, strings.Fields(r.one(t, "clocksources")), "kvm-clock")
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

// TestPipedInputReachesGuest pipes commands into gvmm, as in
// "echo ... | gvmm run": the guest's shell reads them from its serial
// console and its answers come back on stdout.
func TestPipedInputReachesGuest(t *testing.T) {
	k, initrd := kernel(t), guestInitrd(t)
	r := gvmm(t, "read x < /etc/gvmmtest/a.txt\necho GVMMTEST shell=$((6*7)) $x\nexit\n",
		bootArgs(k, initrd, "--cmdline", "console=ttyS0 reboot=k panic=1 quiet gvmm.action=shell")...)
	require.Equal(t, 0, r.status, "stderr:\n%s", r.stderr)
	// The terminal echoes the command line too, unexpanded.
	assert.Contains(t, r.report["shell"], "42 alpha", "stdout:\n%s", r.stdout)
	assert.Equal(t, "0", r.one(t, "shell_exit"))
}

// TestSignalsStopTheVMM sends SIGINT and SIGTERM to a gvmm whose guest
// runs on: each ends every vCPU, blocked in KVM_RUN or not, and gvmm
// exits with status 0 saying the machine was stopped.
func TestSignalsStopTheVMM(t *testing.T) {
	k, initrd := kernel(t), guestInitrd(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(kvmhost.Asset("gvmm"),
				bootArgs(k, initrd, "--cmdline", "console=ttyS0 reboot=k panic=1 quiet gvmm.action=hang")...)
			out := &syncBuffer{}
			var errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = out, &errb
			require.NoError(t, cmd.Start())
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			waitFor(t, out, "GVMMTEST ready=1", done)

			require.NoError(t, cmd.Process.Signal(sig))
			select {
			case err := <-done:
				require.NoError(t, err, "stderr:\n%s", errb.String())
			case <-time.After(time.Minute):
				_ = cmd.Process.Kill()
				t.Fatalf("gvmm still runs a minute after %v\nstderr:\n%s", sig, errb.String())
			}
			assert.Contains(t, errb.String(), `reason=stopped`)
		})
	}
}

// waitFor polls out until it holds want; a process that ends first (done)
// or a boot that takes longer than bootTimeout fails the test.
func waitFor(t *testing.T, out *syncBuffer, want string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(bootTimeout)
	for !strings.Contains(out.String(), want) {
		select {
		case err := <-done:
			t.Fatalf("ended (%v) before %q:\n%s", err, want, out.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "no %q in %s:\n%s", want, bootTimeout, out.String())
		time.Sleep(100 * time.Millisecond)
	}
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

// TestKernelCache boots the stock bzImage both ways: from the kernel
// cache, decompressed and entered through its PVH entry (as every other
// test here boots it: the test host brings the cache, filled by the same
// code at native speed, where gvmm would take half a minute to fill it
// under emulation), and with the cache off, through the bzImage's own
// decompressor and 64-bit entry.
func TestKernelCache(t *testing.T) {
	k, initrd := kernel(t), guestInitrd(t)
	// One vCPU: SMP start-up is the guest kernel's, the same for every
	// entry, and TestGuestSeesTheMachine covers it.
	for _, tc := range []struct {
		name, entry string
		flags       []string
	}{
		{"cached", "protected32", nil},
		{"no cache", "long64", []string{"--kernel-cache", "none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := gvmm(t, "", bootArgs(k, initrd, append(tc.flags, "--cmdline", "console=ttyS0 reboot=k panic=1 quiet")...)...)
			require.Equal(t, 0, r.status, "stderr:\n%s", r.stderr)
			assert.Contains(t, r.stderr, "entry="+tc.entry)
			assert.Equal(t, "1", r.one(t, "nproc"))
			assert.Equal(t, "a.txt,b.txt", r.one(t, "files"))
		})
	}
}

// TestLibraryEmbedsMachines runs machines through the library, as a
// sandbox runner would: two Linux guests at once that power off by
// themselves; then two machines at once, one ended by Stop while its vCPU
// is halted and one by cancelling its context while its vCPU spins in
// guest mode (payloads of a few instructions, whose vCPUs are known to be
// in those states). No goroutine or file descriptor is left behind.
func TestLibraryEmbedsMachines(t *testing.T) {
	k, initrd := kernel(t), guestInitrd(t)
	// A pipe makes the runtime open its poller's descriptors, which it
	// keeps, before the count.
	r, w, err := os.Pipe()
	require.NoError(t, err)
	require.NoError(t, errors.Join(r.Close(), w.Close()))
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)

	start := func(ctx context.Context, cfg machine.Config) (*machine.Machine, *syncBuffer) {
		out := &syncBuffer{}
		cfg.Console = out
		m, err := machine.New(cfg)
		require.NoError(t, err)
		require.NoError(t, m.Start(ctx))
		return m, out
	}
	linux := func() (*machine.Machine, *syncBuffer) {
		return start(context.Background(), machine.Config{Kernel: k.Vmlinuz, Initrd: initrd, Memory: 256 << 20,
			Cmdline: "console=ttyS0 reboot=k panic=1 quiet gvmm.action=poweroff"})
	}
	m1, out1 := linux()
	m2, out2 := linux()
	for _, g := range []struct {
		m   *machine.Machine
		out *syncBuffer
	}{{m1, out1}, {m2, out2}} {
		require.NoError(t, g.m.Wait(), "console:\n%s", g.out.String())
		assert.Equal(t, machine.ExitPowerOff, g.m.ExitReason())
		assert.Contains(t, g.out.String(), "GVMMTEST ready=1")
	}

	dir := t.TempDir()
	payloadMachine := func(ctx context.Context, name string, tail []byte) (*machine.Machine, *syncBuffer) {
		kernel := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(kernel, payload.PVH(printThen(name+" ready\n", tail)), 0o644))
		return start(ctx, machine.Config{Kernel: kernel, Memory: 64 << 20})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	halted, haltedOut := payloadMachine(context.Background(), "halted", haltForever)
	spinning, spinningOut := payloadMachine(ctx, "spinning", spinForever)
	waitFor(t, haltedOut, "halted ready", nil)
	waitFor(t, spinningOut, "spinning ready", nil)
	halted.Stop()
	cancel()
	for _, m := range []*machine.Machine{halted, spinning} {
		require.NoError(t, m.Wait())
		assert.Equal(t, machine.ExitStopped.String(), m.ExitReason().String())
	}

	// Polled here, not with assert.Eventually, whose own goroutines count.
	for end := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutines && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	if !assert.LessOrEqual(t, runtime.NumGoroutine(), goroutines, "goroutines leaked") {
		var stacks bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		t.Log(stacks.String())
	}
	assert.Equal(t, fds, openFDs(t), "file descriptors leaked")
}

// Payload code, 32-bit (assembled with GNU as; the bytes follow their
// listing).
var (
	haltForever = []byte{0xf4, 0xeb, 0xfd} // hlt; jmp hlt (interrupts are off)
	spinForever = []byte{0xeb, 0xfe}       // jmp .
)

// printThen returns code that writes msg to COM1, then runs tail.
func printThen(msg string, tail []byte) []byte {
	const msgOff = 0x200
	code := []byte{
		0xfc,                         // cld
		0xbe, 0x00, 0x00, 0x00, 0x00, // mov esi, msg (below)
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xac,       // next: lodsb
		0x84, 0xc0, // test al, al
		0x74, 0x03, // jz tail
		0xee,       // out dx, al
		0xeb, 0xf8, // jmp next
	}
	binary.LittleEndian.PutUint32(code[2:], payload.Entry+msgOff)
	code = append(code, tail...)
	code = append(code, make([]byte, msgOff-len(code))...)
	return append(append(code, msg...), 0)
}

// openFDs lists this process's open file descriptors and what they are.
func openFDs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	var fds []string
	for _, e := range entries {
		// The directory's own descriptor is gone by now.
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			fds = append(fds, e.Name()+" "+target)
		}
	}
	return fds
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
