package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gvmm-dev/gvmm/tests/bench/measure"
	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// guestSpec is what both VMMs boot: the same files, vCPUs and memory.
type guestSpec struct {
	kernel, initrd, cmdline string
	disk                    string // raw image as the first virtio-blk disk; "" for none
	share                   string // folder shared with mount tag "bench"; "" for none
	// vsockSocket adds a vsock device for guest CID vsockCID: gvmm's
	// host side is this unix socket, QEMU's the host kernel's vhost.
	vsockSocket string
	// tap adds a virtio-net device on this TAP, with MAC benchMAC; for
	// QEMU, on vhost-net if tapVhost.
	tap      string
	tapVhost bool
}

// vsockCID is the guests' CID in BenchmarkVsock.
const vsockCID = 3

// vmm is one of the two VMMs compared.
type vmm struct {
	name string
	argv func(g guestSpec) []string
}

var (
	gvmm = vmm{"gvmm", func(g guestSpec) []string {
		a := []string{kvmhost.Asset("gvmm"), "run", "--kernel", g.kernel, "--initrd", g.initrd,
			"--cmdline", g.cmdline, "--cpus", strconv.Itoa(guestCPUs), "--memory", strconv.Itoa(guestMiB)}
		if g.disk != "" {
			a = append(a, "--disk", g.disk)
		}
		if g.share != "" {
			a = append(a, "--share", g.share+",tag=bench")
		}
		if g.vsockSocket != "" {
			a = append(a, "--vsock", fmt.Sprintf("cid=%d,socket=%s", vsockCID, g.vsockSocket))
		}
		if g.tap != "" {
			a = append(a, "--net", "tap="+g.tap+",mac="+benchMAC)
		}
		// Extra flags, to compare settings (e.g. --seccomp=off).
		return append(a, strings.Fields(os.Getenv("GVMM_BENCH_GVMM_FLAGS"))...)
	}}
	// QEMU's microvm machine with its ACPI tables, its fastest setup for
	// a Linux guest: no PCI, no firmware but qboot, virtio over MMIO.
	qemu = vmm{"QEMU", func(g guestSpec) []string {
		machine := "microvm"
		if g.share != "" || g.tap != "" {
			// virtio-9p-pci, as gvmm's share is a PCI device: microvm's
			// PCIe host bridge.
			machine += ",pcie=on"
		}
		a := append(kvmhost.QEMU(), "-M", machine, "-accel", "kvm", "-cpu", "host",
			"-smp", strconv.Itoa(guestCPUs), "-m", strconv.Itoa(guestMiB),
			"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
			"-kernel", g.kernel, "-initrd", g.initrd, "-append", g.cmdline)
		if g.disk != "" {
			// QEMU's defaults (cache=writeback, aio=threads) match gvmm:
			// the host page cache, flushes through fdatasync.
			a = append(a, "-drive", "id=vda,file="+g.disk+",format=raw,if=none",
				"-device", "virtio-blk-device,drive=vda")
		}
		if g.share != "" {
			// -virtfs's local back end with security_model=none, as
			// gvmm serves a share: files as the VMM's user sees them.
			a = append(a, "-fsdev", "local,id=bench,path="+g.share+",security_model=none",
				"-device", "virtio-9p-pci,fsdev=bench,mount_tag=bench")
		}
		if g.vsockSocket != "" {
			a = append(a, "-device", fmt.Sprintf("vhost-vsock-device,guest-cid=%d", vsockCID))
		}
		if g.tap != "" {
			// virtio-net-pci, as gvmm's device is a PCI device; its
			// defaults offer the same offloads and mergeable buffers.
			vhost := map[bool]string{false: "off", true: "on"}[g.tapVhost]
			a = append(a, "-netdev", "tap,id=n0,ifname="+g.tap+",script=no,downscript=no,vhost="+vhost,
				"-device", "virtio-net-pci,netdev=n0,mac="+benchMAC)
		}
		return a
	}}
	vmms = []vmm{gvmm, qemu}
)

// running is one VMM process whose guest reports are collected live.
type running struct {
	vmm     vmm
	cmd     *exec.Cmd
	start   time.Time
	out     *guest.Recorder
	log     *guest.Recorder
	stdin   io.WriteCloser
	done    chan struct{} // closed at exit; then waitErr and exited are set
	waitErr error
	exited  time.Time
	cancel  context.CancelFunc
}

func start(b *testing.B, v vmm, g guestSpec) *running {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), vmTimeout)
	argv := v.argv(g)
	r := &running{vmm: v, out: &guest.Recorder{}, log: &guest.Recorder{}, done: make(chan struct{}), cancel: cancel}
	r.cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	if v.name == gvmm.name {
		// Extra environment, to compare settings (e.g. GOMAXPROCS=2).
		r.cmd.Env = append(os.Environ(), strings.Fields(os.Getenv("GVMM_BENCH_GVMM_ENV"))...)
	}
	r.cmd.Stdout = r.out
	r.cmd.Stderr = r.log
	var err error
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	r.start = time.Now()
	if err := r.cmd.Start(); err != nil {
		cancel()
		b.Fatalf("%s: %v", v.name, err)
	}
	go func() {
		r.waitErr = r.cmd.Wait()
		r.exited = time.Now()
		close(r.done)
	}()
	b.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// waitReport waits for the guest to report key; it fails at once when
// the VMM ends first, or the guest reports an error.
func (r *running) waitReport(b *testing.B, key string) time.Time {
	b.Helper()
	at, err := r.reported(key)
	if err != nil {
		b.Fatal(err)
	}
	return at
}

// reported is waitReport returning what went wrong.
func (r *running) reported(key string) (time.Time, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if at, ok := r.out.FirstAt(key); ok {
			return at, nil
		}
		if r.out.Has("error") {
			return time.Time{}, fmt.Errorf("%s: guest error %q\n%s", r.vmm.name, r.out.Values("error"), r.output())
		}
		select {
		case <-r.done:
			return time.Time{}, fmt.Errorf("%s ended (%v) before the guest reported %s\n%s", r.vmm.name, r.waitErr, key, r.output())
		case <-tick.C:
		}
	}
}

// memory reads the VMM's resident memory from its smaps.
func (r *running) memory(b *testing.B) measure.Memory {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", r.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	mem, err := measure.ReadSmaps(f, guestMiB*mib)
	if err != nil {
		b.Fatal(err)
	}
	return mem
}

// wait waits for the VMM to end and requires a clean exit.
func (r *running) wait(b *testing.B) {
	b.Helper()
	if err := r.result(); err != nil {
		b.Fatal(err)
	}
}

// result waits for the VMM to end and says what went wrong, if anything.
func (r *running) result() error {
	<-r.done
	switch {
	case r.waitErr != nil:
		return fmt.Errorf("%s: %w\n%s", r.vmm.name, r.waitErr, r.output())
	case r.out.Has("error"):
		return fmt.Errorf("%s: guest error %q\n%s", r.vmm.name, r.out.Values("error"), r.output())
	case !r.out.Has("init"):
		return fmt.Errorf("%s: the guest never reached init\n%s", r.vmm.name, r.output())
	}
	return nil
}

func (r *running) output() string {
	return "--- console:\n" + tail(r.out.String()) + "\n--- stderr:\n" + tail(r.log.String())
}

// tail keeps the end of a long output, and the start of a Go program's
// crash in it, whose cause its goroutine dump pushes out of the end.
func tail(s string) string {
	const keep, cause = 4000, 1000
	if len(s) <= keep {
		return s
	}
	end := "..." + s[len(s)-keep:]
	for _, m := range []string{"fatal error:", "panic:", "unexpected signal"} {
		if i := strings.Index(s, m); i >= 0 && i < len(s)-keep {
			return s[i:min(i+cause, len(s)-keep)] + "\n" + end
		}
	}
	return end
}

// report is the float value the guest reported for key.
func (r *running) report(b *testing.B, key string) float64 {
	b.Helper()
	v := r.out.Values(key)
	if len(v) != 1 {
		b.Fatalf("%s: guest reported %s %d times\n%s", r.vmm.name, key, len(v), r.output())
	}
	f, err := strconv.ParseFloat(v[0], 64)
	if err != nil {
		b.Fatalf("%s: %s=%q: %v", r.vmm.name, key, v[0], err)
	}
	return f
}

// bootTimer is when gvmm logged the guest's write to its boot timer
// port, from the "time=" of that log line.
func (r *running) bootTimer() (time.Time, error) {
	sc := bufio.NewScanner(strings.NewReader(r.log.String()))
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `msg="boot timer: guest user space reached"`) {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "time="); ok {
				return time.Parse(time.RFC3339Nano, v)
			}
		}
	}
	return time.Time{}, errors.New("gvmm logged no boot timer line")
}

// cpu reads the VMM's CPU time so far.
func (r *running) cpu(b *testing.B) measure.CPU {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	c, err := measure.ParseStat(string(stat))
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func hexPort(s string) string {
	port, rw, _ := strings.Cut(s, ",")
	n, _ := strconv.Atoi(port)
	dir := "in"
	if rw == "1" {
		dir = "out"
	}
	return fmt.Sprintf("port %#x %s", n, dir)
}
