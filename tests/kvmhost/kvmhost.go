// Package kvmhost runs programs, and in particular integration test
// binaries, inside the KVM test host: a stock Debian kernel booted under
// QEMU's software emulation with -cpu max, whose emulated AMD SVM with
// nested paging gives it a working /dev/kvm. Machines without hardware
// virtualization can so run every end-to-end test.
package kvmhost

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/gvmm-dev/gvmm/boot/kernelcache"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/kvmhost/hostproto"
	"github.com/gvmm-dev/gvmm/tests/qemu"
)

// hostModules give the emulated host its /dev/kvm (dependencies are
// resolved from the modules themselves: irqbypass, kvm, ccp first).
var hostModules = []string{"kvm_amd"}

// Environment variables of the harness.
const (
	// EnvMode is "auto" (default: run directly where /dev/kvm works, else
	// in the test host), "always" (always in the test host) or "never".
	EnvMode = "GVMM_KVMHOST"
	// EnvInside is set for programs running inside the test host.
	EnvInside = "GVMM_KVMHOST_INSIDE"
	// EnvAssets names the folder holding the assets a test declared.
	EnvAssets = "GVMM_ASSETS"
	// EnvQEMU names the folder holding the tests' QEMU (see WithQEMU).
	EnvQEMU = "GVMM_QEMU"
)

// Where things are inside the host.
const (
	kernelDir  = "/kernel"
	assetsDir  = "/assets"
	payloadTTY = "/dev/ttyS1"
	qemuDir    = "/qemu"
	// userCache is the payload's XDG_CACHE_HOME, where gvmm finds its
	// kernel cache.
	userCache = "/cache"
)

// Config describes one run of the test host.
type Config struct {
	Program string            // host path of the program to run inside
	Args    []string          // its arguments (without argv[0])
	Env     []string          // extra environment, KEY=VALUE
	Assets  map[string]string // name -> host path, placed in AssetsDir
	Modules []string          // guest kernel modules the payload needs (with dependencies)
	QEMU    bool              // carry the tests' QEMU in, for the payload (see WithQEMU)
	// HostModules are loaded in the test host after hostModules.
	HostModules []string
	// KernelArgs are added to the test host kernel's command line.
	KernelArgs []string
	// CPUs defaults to the CPUs this process may use, each a thread of
	// QEMU's multi-threaded TCG.
	CPUs    int
	MemMiB  int // default 6144
	Timeout time.Duration
	Stdin   io.Reader // nil: no input
	Stdout  io.Writer // the payload's output, streamed live
	Log     io.Writer // progress lines of the launcher itself; nil discards
}

// Run boots the test host, runs the program inside it and returns the
// program's exit status.
func Run(ctx context.Context, cfg Config) (int, error) {
	if cfg.CPUs == 0 {
		cfg.CPUs = runtime.NumCPU()
	}
	if cfg.MemMiB == 0 {
		cfg.MemMiB = 6144
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	emu, err := qemu.Get()
	if err != nil {
		return 0, err
	}
	k, err := debkernel.Get()
	if err != nil {
		return 0, err
	}
	work, err := os.MkdirTemp("", "gvmm-kvmhost-")
	if err != nil {
		return 0, fmt.Errorf("kvmhost: %w", err)
	}
	defer os.RemoveAll(work)
	initrd := filepath.Join(work, "host.cpio")
	if err := writeInitramfs(initrd, work, k, emu, cfg); err != nil {
		return 0, err
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	unlock, err := lockMachine(ctx, cfg.Log)
	if err != nil {
		return 0, err
	}
	defer unlock()
	return boot(ctx, emu, k, initrd, filepath.Join(work, "console.log"), cfg)
}

// ErrFroze reports a test host whose user space stopped being scheduled:
// TCG has frozen hosts running KVM guests (QEMU 7.2 often; 10.0 seldom,
// see docs/kvm-test-host.md), which no program inside can cause or
// survive.
var ErrFroze = errors.New("the test host froze: its user space stopped showing signs of life")

// ErrDied reports a test host whose kernel ended under the payload
// without a word on its console: a triple fault of the emulated CPU,
// which, like a freeze, no program inside can cause or survive (seen
// once with two Linux guests running, see docs/kvm-test-host.md).
var ErrDied = errors.New("the test host ended without reporting the payload's status")

const (
	// aliveBoot is how long a host may take to show its first sign of
	// life, aliveGap how long it may then stay silent (AliveEvery is 5 s).
	aliveBoot = 2 * time.Minute
	aliveGap  = 90 * time.Second
)

func writeInitramfs(path, work string, k *debkernel.Kernel, emu *qemu.QEMU, cfg Config) error {
	init, err := BuildStatic(work, "github.com/gvmm-dev/gvmm/tests/kvmhost/hostinit")
	if err != nil {
		return err
	}
	a := initramfs.New()
	for _, step := range []func() error{
		func() error { return a.AddCharDev("dev/console", 0o600, 5, 1) },
		func() error { return a.AddProgram("init", init) },
		func() error { return a.AddDir("tmp", 0o1777) },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	hostMods, err := k.Modules(append(slices.Clone(hostModules), cfg.HostModules...)...)
	if err != nil {
		return err
	}
	var modPaths []string
	for _, m := range hostMods {
		dst := "/lib/modules/" + m.Name + ".ko"
		if err := a.AddFile(dst, m.Path); err != nil {
			return err
		}
		modPaths = append(modPaths, dst)
	}
	// The guest kernel, laid out as debkernel expects, with the modules
	// the payload's guests load.
	if err := addRel(a, k, kernelDir, k.Vmlinuz); err != nil {
		return err
	}
	if err := addRel(a, k, kernelDir, filepath.Join(k.ModulesDir(), "modules.builtin")); err != nil {
		return err
	}
	if err := addKernelCache(a, k); err != nil {
		return err
	}
	guestMods, err := k.Modules(cfg.Modules...)
	if err != nil {
		return err
	}
	for _, m := range guestMods {
		if err := addRel(a, k, kernelDir, m.Path); err != nil {
			return err
		}
	}
	for name, src := range cfg.Assets {
		if err := a.AddProgram(assetsDir+"/"+name, src); err != nil {
			return err
		}
	}
	var env []string
	if cfg.QEMU {
		files, err := emu.Files()
		if err != nil {
			return err
		}
		for _, rel := range files {
			if err := a.AddFile(qemuDir+"/"+rel, filepath.Join(emu.Root, rel)); err != nil {
				return err
			}
		}
		env = append(env, EnvQEMU+"="+qemuDir)
	}
	prog := "/payload/" + filepath.Base(cfg.Program)
	if err := a.AddProgram(prog, cfg.Program); err != nil {
		return err
	}
	env = append(env,
		"PATH=/payload:/usr/bin:/bin",
		"HOME=/tmp",
		"TMPDIR=/tmp",
		"XDG_CACHE_HOME="+userCache,
		EnvInside+"=1",
		debkernel.EnvDir+"="+kernelDir,
		EnvAssets+"="+assetsDir,
	)
	env = append(env, cfg.Env...)
	conf, err := json.Marshal(hostproto.Config{
		Modules: modPaths,
		TTY:     payloadTTY,
		Args:    append([]string{prog}, cfg.Args...),
		Env:     env,
		Dir:     "/tmp",
	})
	if err != nil {
		return fmt.Errorf("kvmhost: %w", err)
	}
	if err := a.AddData(hostproto.ConfigPath, conf, 0o644); err != nil {
		return err
	}
	return a.WriteFile(path)
}

// addKernelCache fills gvmm's kernel cache in the host with the guest
// kernel decompressed here, at native speed: gvmm would otherwise
// decompress it under emulation once per host, for seconds.
func addKernelCache(a *initramfs.Archive, k *debkernel.Kernel) error {
	dir, err := debkernel.CacheDir()
	if err != nil {
		return err
	}
	elf, err := kernelcache.New(filepath.Join(dir, "kernels")).Kernel(k.Vmlinuz)
	if err != nil || elf == "" {
		return fmt.Errorf("kvmhost: no PVH kernel in %s: %w", k.Vmlinuz, err)
	}
	return a.AddFile(filepath.Join(userCache, kernelcache.UserDir, filepath.Base(elf)), elf)
}

// KernelInside is where the test host puts the guest kernel image k.
func KernelInside(k *debkernel.Kernel) string {
	rel, _ := filepath.Rel(k.Root, k.Vmlinuz)
	return kernelDir + "/" + rel
}

// AssetInside is where the test host puts the asset name.
func AssetInside(name string) string { return assetsDir + "/" + name }

// addRel adds a file of the kernel tree under dir, at its path relative
// to the tree's root.
func addRel(a *initramfs.Archive, k *debkernel.Kernel, dir, path string) error {
	rel, err := filepath.Rel(k.Root, path)
	if err != nil {
		return fmt.Errorf("kvmhost: %w", err)
	}
	return a.AddFile(dir+"/"+rel, path)
}

func boot(ctx context.Context, emu *qemu.QEMU, k *debkernel.Kernel, initrd, consoleLog string, cfg Config) (int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := watchAlive(consoleLog, hostproto.AliveEvery, aliveBoot, aliveGap, func() {
		cancel(ErrFroze)
	})
	defer stopWatch()
	args := append(qemu.Argv(emu.Root),
		"-M", "q35", "-cpu", "max", "-accel", "tcg",
		"-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemMiB),
		"-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults",
		"-kernel", k.Vmlinuz, "-initrd", initrd,
		"-append", strings.Join(append([]string{"console=ttyS0 quiet panic=-1 8250.nr_uarts=2"}, cfg.KernelArgs...), " "),
		"-serial", "file:"+consoleLog,
		"-chardev", "stdio,id=payload,signal=off",
		"-serial", "chardev:payload",
	)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout = cfg.Stdout
	cmd.Stderr = cfg.Log
	cmd.Stdin = cfg.Stdin
	if f, ok := cfg.Stdin.(*os.File); cfg.Stdin != nil && !(ok && term.IsTerminal(int(f.Fd()))) {
		// Piped input waits for the payload's port, which drops what
		// arrives before it is open (a typist waits for the prompt).
		held := &heldReader{r: cfg.Stdin, ready: make(chan struct{}), done: ctx.Done()}
		cmd.Stdin = held
		stopReady := watchReady(consoleLog, held.ready)
		defer stopReady()
	}
	cmd.WaitDelay = 5 * time.Second
	// A test binary killed by go test's timeout must not leave QEMU behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	fmt.Fprintf(cfg.Log, "kvmhost: booting the KVM test host (%s, %d vCPUs, %d MiB)\n", k.Release, cfg.CPUs, cfg.MemMiB)
	runErr := cmd.Run()
	status, reportErr := report(consoleLog)
	switch {
	case ctx.Err() != nil:
		return 0, fmt.Errorf("kvmhost: the test host was stopped after %s: %w\n%s", time.Since(start).Round(time.Second), context.Cause(ctx), tail(consoleLog))
	case reportErr != nil:
		return 0, fmt.Errorf("kvmhost: %w (qemu: %v)\n%s", reportErr, runErr, tail(consoleLog))
	}
	fmt.Fprintf(cfg.Log, "kvmhost: the test host ran for %s\n", time.Since(start).Round(100*time.Millisecond))
	return status, nil
}

// lockMachine waits until no other test host runs on this machine, from
// any checkout or process: two emulated hosts on our two cores starve
// each other until their guests' timers fire late and tests time out.
func lockMachine(ctx context.Context, log io.Writer) (unlock func(), err error) {
	path := filepath.Join(os.TempDir(), "gvmm-kvmhost.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("kvmhost: %w", err)
	}
	for waited := false; ; waited = true {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("kvmhost: locking %s: %w", path, err)
		}
		if !waited {
			fmt.Fprintf(log, "kvmhost: another test host runs on this machine; waiting for it (%s)\n", path)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("kvmhost: waiting for another test host: %w", context.Cause(ctx))
		case <-time.After(time.Second):
		}
	}
}

// watchAlive checks the console log every period and calls froze once
// when it shows no AliveMarker line within first, or no new one within
// gap after that; stop ends the watch.
func watchAlive(consoleLog string, period, first, gap time.Duration, froze func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		var seen int
		last, wait := time.Now(), first
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			data, _ := os.ReadFile(consoleLog)
			if n := bytes.Count(data, []byte(hostproto.AliveMarker)); n > seen {
				seen, last, wait = n, time.Now(), gap
			}
			if time.Since(last) > wait {
				froze()
				return
			}
		}
	}()
	return func() { close(done) }
}

// heldReader reads r once ready is closed; once done is, it ends.
type heldReader struct {
	r     io.Reader
	ready chan struct{}
	done  <-chan struct{}
}

func (h *heldReader) Read(p []byte) (int, error) {
	select {
	case <-h.ready:
		return h.r.Read(p)
	case <-h.done:
		return 0, io.EOF
	}
}

// watchReady closes ready once hostinit says on the console that the
// payload's port is open.
func watchReady(consoleLog string, ready chan struct{}) (stop func()) {
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if data, _ := os.ReadFile(consoleLog); bytes.Contains(data, []byte(hostproto.ReadyMarker)) {
				close(ready)
				return
			}
		}
	}()
	return func() { close(done) }
}

// report reads the status hostinit wrote on the console.
func report(consoleLog string) (int, error) {
	f, err := os.Open(consoleLog)
	if err != nil {
		return 0, fmt.Errorf("the test host wrote no console log: %w", err)
	}
	defer f.Close()
	var setupErr string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if i := strings.Index(line, hostproto.ErrorMarker); i >= 0 {
			setupErr = line[i+len(hostproto.ErrorMarker):]
		}
		if i := strings.Index(line, hostproto.ExitMarker); i >= 0 {
			status, err := strconv.Atoi(strings.TrimSpace(line[i+len(hostproto.ExitMarker):]))
			if err != nil {
				return 0, fmt.Errorf("malformed status line %q", line)
			}
			if setupErr != "" {
				return 0, fmt.Errorf("the test host could not run the payload: %s", setupErr)
			}
			return status, nil
		}
	}
	return 0, ErrDied
}

// tail returns the end of the console log, for error reports.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var kept []byte
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if !bytes.Contains(line, []byte(hostproto.AliveMarker)) {
			kept = append(kept, line...)
		}
	}
	data = kept
	const max = 4000
	if len(data) > max {
		data = data[len(data)-max:]
	}
	return "--- test host console (tail) ---\n" + string(data)
}

// BuildStatic compiles a package of this module or its dependencies,
// with the build tags given, into a static binary in dir and returns its
// path; go's build cache makes repeats cheap.
func BuildStatic(dir, pkg string, tags ...string) (string, error) {
	root, err := debkernel.ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, "build", "-tags", strings.Join(tags, ","), "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("kvmhost: go build %s: %w\n%s", pkg, err, msg)
	}
	return out, nil
}
