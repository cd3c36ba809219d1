// Command guesthostile is the init of the hostile-guest test
// (tests/hostile): a root user space that attacks the VMM through every
// interface a guest has, reports what it did and finally breaks its own
// machine. It mounts proc, sys and devtmpfs, loads the modules
// /etc/modules.order lists, waits for the disks and runs the phases the
// command line names, in order. After each phase it reports
// "GVMMTEST phase=NAME accesses=N ms=T" (accesses: register accesses and
// requests it made), preceded by the guest kernel's warnings the phase
// caused, "GVMMTEST kmsg=PHASE:MESSAGE"; failures are "GVMMTEST error=...".
// First it reports what it found: "functions=attack=BDF keep=BDF
// balloon=BDF ram_end=ADDR".
//
// Command line keys:
//
//	gvmm.phases=a,b,...   phases in order (default: all, in the order below)
//	gvmm.attack=vda       the disk whose PCI function is unbound and attacked
//	gvmm.keep=vdb         the disk left alone, verified at the end
//	gvmm.seed.DEV=S       the pattern seed the host filled DEV with
//	gvmm.mib=N            MiB of each disk to verify (default 16)
//	gvmm.portstride=N     ports phase: stride above port 0x3ff (default 16)
//	gvmm.stormkib=N       KiB read per port and width in the storm (default 64)
//	gvmm.mmiostep=N       stride of the MMIO hole sweep in bytes (default 1 MiB)
//	gvmm.floods=N         rounds of the queue floods (default 40)
//	gvmm.break=HOW        how the last phase breaks the machine: triple-fault
//	                      (default; needs reboot=t) or poweroff
//
// Phases:
//
//	ports    I/O ports at widths 1, 2 and 4: read, write garbage; all
//	         ISA ports, every portstride-th above; every byte value to the
//	         ports of the VMM's devices. Not the irqchip and PIT ports KVM
//	         handles itself, COM1 (see uart), 0xcf8-0xcff (see config), nor
//	         the bits that reset or power off
//	uart     COM1's registers saved, garbage written to each, restored
//	storm    REP INS: up to 1 KiB of elements per exit from unclaimed and
//	         device ports
//	mmio     /dev/mem: one offset per mmiostep of the MMIO hole but the
//	         BARs, LAPIC, IOAPIC and the ECAM pages of existing functions,
//	         and per 16 MiB below it past RAM, read and written at widths 1-8
//	         ("mmio=skipped_ranges=N denied_pages=D faults=F")
//	config   the attacked disk and the balloon unbound from virtio-pci;
//	         garbage at every offset and width of their and the host
//	         bridge's configuration space, then their BARs and command
//	         register restored ("config=FUNCTION:restored"); the balloon's
//	         BAR laid over the disk's and its decoding toggled
//	         ("overlap=toggles=N"); garbage in CONFIG_ADDRESS
//	bar      garbage at every offset and width 1-8 of the registers of
//	         their BAR, and a sample of the rest: common configuration, ISR,
//	         device configuration, notify, MSI-X table and PBA
//	         ("bar=FUNCTION:status=S"); then configuration-change
//	         interrupts through MSI-X, held while masked and delivered when
//	         unmasked ("msix=FUNCTION:signals=N pending=P delivered=D")
//	queue    the attacked disk driven by hand with hostile rings and
//	         descriptors ("vq=CASE:OUTCOME", see queue.go)
//	share    the virtio-9p share (tag "hostile") driven by hand with
//	         hostile 9P messages ("p9=CASE:OUTCOME", see p9.go), then
//	         mounted with the kernel's driver ("p9mount=CONTENTS of f")
//	vsock    the vsock function (no driver loaded) driven by hand: lying
//	         credit, floods of requests, packets to closed ports,
//	         malformed chains and rx buffers ("vs=CASE:OUTCOME", see
//	         vsock.go)
//	net      the virtio-net function (no driver loaded) driven by hand:
//	         malformed tx and rx chains, and echo requests whose replies
//	         find no rx buffer ("net=CASE:OUTCOME", see net.go); needs
//	         gvmm.net=GUEST_IP,HOST_IP,HOST_MAC
//	rebind   the attacked disk and balloon rebound to virtio-pci; the disk
//	         must read its pattern again ("recovered=DEV:ok")
//	verify   the kept disk read with O_DIRECT ("verify=DEV:ok")
//	break    "breaking=HOW", then the machine is broken that way
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
)

const (
	mib          = 1 << 20
	modulesOrder = "/etc/modules.order"
	diskWait     = 20 * time.Second
)

var allPhases = []string{"ports", "uart", "storm", "mmio", "config", "bar", "queue", "share", "vsock", "net", "rebind", "verify", "break"}

func main() {
	a := args(guest.Setup())
	// A fault in /dev/mem or a BAR mapping is reported, not fatal.
	debug.SetPanicOnFault(true)
	if err := loadModules(modulesOrder); err != nil {
		guest.Report("error", err)
	}
	h, err := newHostile(a)
	if err != nil {
		guest.Report("error", err)
		finish(a)
	}
	km, err := openKmsg()
	if err != nil {
		guest.Report("error", fmt.Sprintf("/dev/kmsg: %v", err))
	}
	km.report("boot")
	phases := allPhases
	if p := a["gvmm.phases"]; p != "" {
		phases = strings.Split(p, ",")
	}
	guest.Report("phase", "boot")
	for _, p := range phases {
		if p == "break" {
			finish(a)
		}
		start := time.Now()
		n, err := h.run(p)
		if err != nil {
			guest.Report("error", fmt.Sprintf("%s: %v", p, err))
		}
		km.report(p)
		guest.Report("phase", fmt.Sprintf("%s accesses=%d ms=%d", p, n, time.Since(start).Milliseconds()))
	}
	finish(args{"gvmm.break": "poweroff"})
}

// finish breaks the machine as asked: a triple fault through the
// kernel's reboot=t path (it loads an empty IDT and executes int3), or a
// clean power-off.
func finish(a args) {
	how := a["gvmm.break"]
	if how == "" {
		how = "triple-fault"
	}
	guest.Report("breaking", how)
	unix.Sync()
	time.Sleep(100 * time.Millisecond) // let the console drain
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if how == "triple-fault" {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	if err := unix.Reboot(cmd); err != nil {
		guest.Report("error", fmt.Sprintf("reboot: %v", err))
	}
	select {}
}

// hostile is the state the phases share.
type hostile struct {
	a      args
	attack string // disk name, e.g. vda
	keep   string
	// PCI functions (sysfs directories) of the attacked disk, the kept
	// disk and the balloon (empty without one), and the host bridge.
	attackFn, keepFn, balloonFn, bridgeFn string
	ramEnd                                uint64 // end of the RAM below 4 GiB
}

func newHostile(a args) (*hostile, error) {
	h := &hostile{a: a, attack: a.str("gvmm.attack", "vda"), keep: a.str("gvmm.keep", "vdb"),
		bridgeFn: "/sys/bus/pci/devices/0000:00:00.0"}
	if err := waitDisks([]string{h.attack, h.keep}, diskWait); err != nil {
		return nil, err
	}
	var err error
	if h.attackFn, err = diskFunction(h.attack); err != nil {
		return nil, err
	}
	if h.keepFn, err = diskFunction(h.keep); err != nil {
		return nil, err
	}
	h.balloonFn = findFunction("0x1af4", "0x1045")
	if h.ramEnd, err = ramEnd(); err != nil {
		return nil, err
	}
	guest.Report("functions", fmt.Sprintf("attack=%s keep=%s balloon=%s ram_end=%#x",
		filepath.Base(h.attackFn), filepath.Base(h.keepFn), filepath.Base(h.balloonFn), h.ramEnd))
	return h, nil
}

// run runs one phase and returns the accesses it made.
func (h *hostile) run(phase string) (int, error) {
	switch phase {
	case "ports":
		return withIOPL(func() (int, error) { return hammerPorts(h.a.num("gvmm.portstride", 16)) })
	case "uart":
		return withIOPL(hammerUART)
	case "storm":
		return withIOPL(func() (int, error) { return storm(h.a.num("gvmm.stormkib", 64) << 10) })
	case "mmio":
		return h.sweepMMIO(uint64(h.a.num("gvmm.mmiostep", 1<<20)))
	case "config":
		return h.hammerConfig()
	case "bar":
		return h.hammerBARs()
	case "queue":
		return h.attackQueue()
	case "share":
		return h.attackShare()
	case "vsock":
		return h.attackVsock()
	case "net":
		return h.attackNet()
	case "rebind":
		return h.rebind()
	case "verify":
		return 0, h.verify(h.keep, "verify")
	}
	return 0, errors.New("unknown phase")
}

// withIOPL runs fn on one OS thread with access to every I/O port: the
// I/O permission is per thread.
func withIOPL(fn func() (int, error)) (int, error) {
	type result struct {
		n   int
		err error
	}
	done := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with its permission
		if err := unix.Iopl(3); err != nil {
			done <- result{0, fmt.Errorf("iopl: %w", err)}
			return
		}
		n, err := fn()
		done <- result{n, err}
	}()
	r := <-done
	return r.n, r.err
}

// args are the kernel command line's key=value pairs.
type args map[string]string

func (a args) str(key, def string) string {
	if v, ok := a[key]; ok {
		return v
	}
	return def
}

func (a args) num(key string, def int) int {
	v, ok := a[key]
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 0, 64)
	if err != nil || n < 0 {
		guest.Report("error", fmt.Sprintf("%s=%q: want a non-negative number", key, v))
		return def
	}
	return int(n)
}

func (a args) seed(dev string) uint64 {
	n, err := strconv.ParseUint(a.str("gvmm.seed."+dev, "1"), 0, 64)
	if err != nil {
		guest.Report("error", fmt.Sprintf("gvmm.seed.%s: %v", dev, err))
	}
	return n
}

func loadModules(list string) error {
	data, err := os.ReadFile(list)
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(string(data)) {
		if err := guest.LoadModule("/lib/modules/" + name + ".ko"); err != nil {
			return err
		}
	}
	return nil
}

// waitDisks polls until the named disks' device nodes exist.
func waitDisks(names []string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		missing := ""
		for _, n := range names {
			if _, err := os.Stat("/dev/" + n); err != nil {
				missing = n
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no /dev/%s after %s", missing, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// diskFunction returns the sysfs directory of the PCI function under a
// virtio disk.
func diskFunction(disk string) (string, error) {
	p, err := filepath.EvalSymlinks("/sys/block/" + disk + "/device")
	if err != nil {
		return "", err
	}
	// .../0000:00:01.0/virtio0: the PCI function is the virtio device's parent.
	fn := filepath.Dir(p)
	if _, err := os.Stat(fn + "/config"); err != nil {
		return "", fmt.Errorf("%s: no PCI function above %s", disk, p)
	}
	return fn, nil
}

// findFunction returns the first PCI function with the given IDs, or "".
func findFunction(vendor, device string) string {
	dirs, _ := filepath.Glob("/sys/bus/pci/devices/*")
	for _, d := range dirs {
		if readTrim(d+"/vendor") == vendor && readTrim(d+"/device") == device {
			return d
		}
	}
	return ""
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ramEnd reads the end of the highest "System RAM" below 4 GiB from
// /proc/iomem.
func ramEnd() (uint64, error) {
	data, err := os.ReadFile("/proc/iomem")
	if err != nil {
		return 0, err
	}
	var end uint64
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, " ") || !strings.HasSuffix(line, ": System RAM") {
			continue
		}
		r, _, _ := strings.Cut(line, " ")
		_, hi, _ := strings.Cut(r, "-")
		v, err := strconv.ParseUint(hi, 16, 64)
		if err == nil && v < 1<<32 {
			end = max(end, v+1)
		}
	}
	if end == 0 {
		return 0, errors.New("no System RAM in /proc/iomem")
	}
	return end, nil
}
