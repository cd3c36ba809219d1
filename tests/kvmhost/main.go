package kvmhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/tests/qemu"
)

// Option configures Main.
type Option func(*options)

type options struct {
	builds   map[string]build
	programs map[string]string
	modules  []string
	hostMods []string
	hostArgs []string
	cpus     int
	memMiB   int
	qemu     bool
}

// build is a package to compile, with its build tags.
type build struct {
	pkg  string
	tags []string
}

// WithBinary makes a static build of package pkg (an import path of this
// module or of its dependencies), with the build tags given, available
// to the tests as Asset(name).
func WithBinary(name, pkg string, tags ...string) Option {
	return func(o *options) { o.builds[name] = build{pkg, tags} }
}

// WithHostProgram makes the host program named name (looked up in PATH
// when not a path) available as Asset(name), with its shared libraries
// inside the test host. A program that cannot be found fails the tests.
func WithHostProgram(name string) Option {
	return func(o *options) { o.programs[filepath.Base(name)] = name }
}

// WithModules carries the named guest kernel modules (and their
// dependencies) into the test host.
func WithModules(names ...string) Option {
	return func(o *options) { o.modules = append(o.modules, names...) }
}

// WithQEMU makes the tests' QEMU (package qemu: Debian 13's, with its
// libraries and firmware) available to the tests: QEMU returns the start
// of its command line.
func WithQEMU() Option { return func(o *options) { o.qemu = true } }

// QEMU is the start of a command line that runs the tests' QEMU, for a
// package whose TestMain asked for it with WithQEMU.
func QEMU() []string { return qemu.Argv(os.Getenv(EnvQEMU)) }

// WithHostModules loads the named kernel modules (and their
// dependencies) in the test host itself, after those that give it KVM:
// e.g. vhost_vsock for a QEMU peer's vhost-vsock device.
func WithHostModules(names ...string) Option {
	return func(o *options) { o.hostMods = append(o.hostMods, names...) }
}

// WithHostKernelArgs adds arguments to the test host kernel's command
// line: e.g. tsc=reliable, which makes its clocksource the TSC (QEMU's
// software emulation passes the machine's own TSC through, but without
// the invariant-TSC bit the kernel would not trust it), so that its KVM
// runs the master clock as on a real KVM host.
func WithHostKernelArgs(args ...string) Option {
	return func(o *options) { o.hostArgs = append(o.hostArgs, args...) }
}

// WithCPUs sets the test host's vCPU count (default: see Config.CPUs).
func WithCPUs(n int) Option { return func(o *options) { o.cpus = n } }

// WithMemory sets the test host's memory in MiB.
func WithMemory(mib int) Option { return func(o *options) { o.memMiB = mib } }

// Asset returns the path of an asset declared with WithBinary.
func Asset(name string) string {
	return filepath.Join(os.Getenv(EnvAssets), name)
}

// Main is the TestMain of integration test packages: it runs the tests
// directly where /dev/kvm works and otherwise re-runs this very test
// binary inside the KVM test host with the same -test.* flags, streaming
// its output, and exits with its status. It never skips: where neither
// can run, it fails with the reason.
func Main(m *testing.M, opts ...Option) {
	os.Exit(mainStatus(m, opts))
}

func mainStatus(m *testing.M, opts []Option) int {
	o := options{builds: map[string]build{}, programs: map[string]string{}}
	for _, opt := range opts {
		opt(&o)
	}
	if os.Getenv(EnvInside) != "" {
		return m.Run()
	}
	mode := os.Getenv(EnvMode)
	direct := false
	switch mode {
	case "", "auto":
		direct = KVMWorks() == nil
	case "never":
		if err := KVMWorks(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %s=never but /dev/kvm does not work here: %v\n", EnvMode, err)
			return 1
		}
		direct = true
	case "always":
	default:
		fmt.Fprintf(os.Stderr, "FAIL: %s=%q: want auto, always or never\n", EnvMode, mode)
		return 2
	}
	assetDir, err := os.MkdirTemp("", "gvmm-assets-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	defer os.RemoveAll(assetDir)
	assets := map[string]string{}
	for name, b := range o.builds {
		// A binary renamed is built apart first: one package may be
		// built twice, with other tags, under another name.
		dir := assetDir
		if filepath.Base(b.pkg) != name {
			dir = filepath.Join(assetDir, ".build-"+name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
				return 1
			}
		}
		p, err := BuildStatic(dir, b.pkg, b.tags...)
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			return 1
		}
		if filepath.Base(p) != name {
			if err := os.Rename(p, filepath.Join(assetDir, name)); err != nil {
				fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
				return 1
			}
		}
		assets[name] = filepath.Join(assetDir, name)
	}
	for name, prog := range o.programs {
		p, err := exec.LookPath(prog)
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: the tests need %s: %v\n", prog, err)
			return 1
		}
		if err := os.Symlink(p, filepath.Join(assetDir, name)); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			return 1
		}
		assets[name] = p
	}
	if direct {
		if o.qemu {
			q, err := qemu.Get()
			if err != nil {
				fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
				return 1
			}
			os.Setenv(EnvQEMU, q.Root)
		}
		os.Setenv(EnvAssets, assetDir)
		return m.Run()
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "kvmhost: /dev/kvm unusable here or %s=always: running %s inside the KVM test host\n", EnvMode, filepath.Base(self))
	deadline := time.Now().Add(hostTimeout(os.Args[1:]))
	results := &testResults{w: os.Stdout}
	for attempt := 1; ; attempt++ {
		remaining := time.Until(deadline)
		status, err := Run(context.Background(), Config{
			Program:     self,
			Args:        append(append(forwardFlags(os.Args[1:]), innerTimeout(remaining)), results.skipPassed(os.Args[1:])...),
			Env:         passEnv(),
			Assets:      assets,
			Modules:     o.modules,
			QEMU:        o.qemu,
			HostModules: o.hostMods,
			KernelArgs:  o.hostArgs,
			CPUs:        o.cpus,
			MemMiB:      o.memMiB,
			Timeout:     remaining,
			Stdout:      results,
			Log:         os.Stderr,
		})
		// A frozen or dead host is the emulator's failure, not the
		// tests': those that had not passed run again on a fresh host.
		// A test that had failed fails the run, whatever happens next.
		if (errors.Is(err, ErrFroze) || errors.Is(err, ErrDied)) && !results.anyFailed() && attempt < frozenAttempts && time.Until(deadline) > minAttempt {
			fmt.Fprintf(os.Stderr, "kvmhost: %v\nkvmhost: RETRYING on a fresh test host (attempt %d of %d); the tests that passed are skipped\n", err, attempt+1, frozenAttempts)
			continue
		}
		return exitStatus(status, err)
	}
}

const (
	// frozenAttempts bounds the test hosts one test binary boots when
	// they freeze; minAttempt is the least time worth another one.
	frozenAttempts = 8
	minAttempt     = 2 * time.Minute
)

func exitStatus(status int, err error) int {
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	return status
}

// testResults passes a test binary's output on and notes the top-level
// tests that passed and whether any test failed, from go test -v's
// "--- PASS: " and "--- FAIL: " lines (indented for subtests).
type testResults struct {
	w       io.Writer
	mu      sync.Mutex
	partial []byte
	passed  []string
	failed  bool
}

func (r *testResults) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.partial = append(r.partial, p...)
	for {
		i := bytes.IndexByte(r.partial, '\n')
		if i < 0 {
			break
		}
		line := string(r.partial[:i])
		r.partial = r.partial[i+1:]
		if rest, ok := strings.CutPrefix(line, "--- PASS: "); ok {
			r.passed = append(r.passed, strings.Fields(rest)[0])
		}
		// A subtest's failure counts at once: its parent may not end.
		r.failed = r.failed || strings.HasPrefix(strings.TrimSpace(line), "--- FAIL: ")
	}
	r.mu.Unlock()
	return r.w.Write(p)
}

func (r *testResults) anyFailed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// skipPassed returns the -test.skip flag that leaves out the tests that
// passed, merged with the one in args, if any; none when none passed.
func (r *testResults) skipPassed(args []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.passed) == 0 {
		return nil
	}
	names := make([]string, len(r.passed))
	for i, n := range r.passed {
		names[i] = regexp.QuoteMeta(n)
	}
	skip := "^(" + strings.Join(names, "|") + ")$"
	for _, a := range args {
		if v, ok := strings.CutPrefix(strings.TrimLeft(a, "-"), "test.skip="); ok && v != "" {
			skip = v + "|" + skip
		}
	}
	return []string{"-test.skip=" + skip}
}

// KVMWorks reports why /dev/kvm cannot run a stock kernel here, or nil.
// Besides opening it and creating a VM, it asks for a hardware
// virtualization backend (kvm_intel or kvm_amd): some machines offer a
// /dev/kvm backed by kvm_pvm, which runs small real-mode guests but not
// an unmodified distribution kernel.
func KVMWorks() error {
	if !hardwareBackend() {
		return errors.New("/dev/kvm has no hardware virtualization backend (neither kvm_intel nor kvm_amd is loaded)")
	}
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		return err
	}
	return vm.Close()
}

func hardwareBackend() bool {
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if _, err := os.Stat("/sys/module/" + m); err == nil {
			return true
		}
	}
	return false
}

// forwardFlags keeps the -test.* flags but those naming files on this
// machine, which do not exist inside the test host, and the timeout,
// which is given anew.
func forwardFlags(args []string) []string {
	var out []string
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "test.testlogfile", "test.gocoverdir", "test.timeout", "test.coverprofile", "test.outputdir",
			"test.cpuprofile", "test.memprofile", "test.blockprofile", "test.mutexprofile", "test.trace":
			continue
		}
		out = append(out, a)
	}
	return out
}

// passEnv forwards the project's own settings into the host.
func passEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GVMM_") && !strings.HasPrefix(kv, EnvMode+"=") &&
			!strings.HasPrefix(kv, "GVMM_CACHE_DIR=") && !strings.HasPrefix(kv, "GVMM_KERNEL_DIR=") {
			env = append(env, kv)
		}
	}
	return env
}

// hostTimeout bounds the test host by the tests' own -test.timeout, less
// a minute, so that a stuck host is cut and reported (with its console)
// before go test kills this process without a word. The tests inside get
// a minute less again, to report their own stacks first.
func hostTimeout(args []string) time.Duration {
	d := 10 * time.Minute
	for _, a := range args {
		if v, ok := strings.CutPrefix(strings.TrimLeft(a, "-"), "test.timeout="); ok {
			if t, err := time.ParseDuration(v); err == nil && t > 0 {
				d = t
			}
		}
	}
	return max(d-time.Minute, time.Minute)
}

// innerTimeout is the -test.timeout the tests get inside the host.
func innerTimeout(host time.Duration) string {
	return "-test.timeout=" + max(host-time.Minute, 30*time.Second).String()
}
