package kvmhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gvmm-dev/gvmm/kvm"
)

// Option configures Main.
type Option func(*options)

type options struct {
	builds   map[string]string
	programs map[string]string
	modules  []string
	cpus     int
	memMiB   int
}

// WithBinary makes a static build of package pkg (an import path of this
// module) available to the tests as Asset(name).
func WithBinary(name, pkg string) Option {
	return func(o *options) { o.builds[name] = pkg }
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

// WithCPUs sets the test host's vCPU count (default 1: see Config.CPUs).
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
	o := options{builds: map[string]string{}, programs: map[string]string{}}
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
	for name, pkg := range o.builds {
		p, err := BuildStatic(assetDir, pkg)
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
		os.Setenv(EnvAssets, assetDir)
		return m.Run()
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "kvmhost: /dev/kvm unusable here or %s=always: running %s inside the KVM test host\n", EnvMode, filepath.Base(self))
	status, err := Run(context.Background(), Config{
		Program: self,
		Args:    append(forwardFlags(os.Args[1:]), innerTimeout(hostTimeout(os.Args[1:]))),
		Env:     passEnv(),
		Assets:  assets,
		Modules: o.modules,
		CPUs:    o.cpus,
		MemMiB:  o.memMiB,
		Timeout: hostTimeout(os.Args[1:]),
		Stdout:  os.Stdout,
		Log:     os.Stderr,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	return status
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
