// Command guestmem is the init of the memory tests' guests (tests/balloon).
// It mounts proc, sys and devtmpfs, loads the modules /etc/modules.order
// lists (one name a line, files /lib/modules/NAME.ko, dependencies
// first), reports what it sees as "GVMMTEST key=value" lines on the
// console, prints "GVMMTEST ready=1" and then obeys commands read line by
// line from the console:
//
//	alloc N   map N MiB of anonymous memory and write to every page:
//	          "alloc=ok" or "alloc=failed:<error>"
//	free      unmap everything alloc mapped: "freed=1"
//	meminfo   "meminfo=total_kb=T free_kb=F available_kb=A"
//	ticks     start printing "tick=<n>" (from 1) every 500 ms
//	quit      power off
//
// Unknown commands are answered "error=unknown command ...". At start it
// reports "nproc=N", "memtotal_kb=N", "balloon=bound|unbound|absent" (the
// virtio-balloon PCI function and whether virtio_balloon drives it),
// "balloon_features=BITS" (the negotiated feature bits, bit 0 first, as
// the virtio core shows them), "timer=source=S clockevent=E
// monotonic_ns=N timer_irqs=A->B" (the clock source, CPU 0's clock event
// device, and the timer interrupts counted
// over a ~100 ms busy loop: if none arrive, no sleep in the guest ever
// ends) and "inputs=..." (the input devices' names). Whenever an input device
// reports the power key pressed (EV_KEY KEY_POWER 1, what the ACPI button
// driver sends when the power button is pressed), it prints
// "powerbutton=1", syncs and powers off.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	mib          = 1 << 20
	modulesOrder = "/etc/modules.order"
	tickEvery    = 500 * time.Millisecond
	balloonWait  = 10 * time.Second
	inputRescan  = 250 * time.Millisecond

	// The virtio-balloon PCI function: Red Hat's vendor ID, device 0x1040
	// + 5 (virtio 1.0) or the transitional 0x1002.
	virtioVendor          = "0x1af4"
	balloonModern         = "0x1045"
	balloonTransitional   = "0x1002"
	inputEventSize        = 24 // struct input_event on x86-64: timeval, u16 type, u16 code, s32 value
	evKey                 = 1
	keyPower              = 116
	keyPressed            = 1
	balloonDriverBindings = "/sys/bus/virtio/drivers/virtio_balloon"
)

var outMu sync.Mutex

func report(key string, v any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf("GVMMTEST %s=%v\n", key, v)
}

func main() {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			report("error", fmt.Sprintf("mount %s: %v", m.dst, err))
		}
	}
	noEcho(os.Stdin)
	if err := loadModules(modulesOrder); err != nil {
		report("error", err)
	}
	go watchPowerButton()
	report("nproc", runtime.NumCPU())
	mi, err := meminfo()
	if err != nil {
		report("error", err)
	}
	report("memtotal_kb", mi["MemTotal"])
	report("timer", timerCheck())
	report("balloon", balloonState(balloonWait))
	report("balloon_features", balloonFeatures())
	report("inputs", inputNames())
	report("ready", 1)
	commands(os.Stdin)
	powerOff()
}

// commands runs the console's commands until "quit" or the end of input.
func commands(in io.Reader) {
	var (
		mappings [][]byte
		ticking  bool
	)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		switch cmd := fields[0]; {
		case cmd == "alloc" && len(fields) == 2:
			n, err := strconv.Atoi(fields[1])
			if err != nil || n <= 0 {
				report("alloc", fmt.Sprintf("failed:bad size %q", fields[1]))
				continue
			}
			m, err := alloc(n)
			if err != nil {
				report("alloc", "failed:"+err.Error())
				continue
			}
			mappings = append(mappings, m)
			report("alloc", "ok")
		case cmd == "free":
			var merr error
			for _, m := range mappings {
				if err := unix.Munmap(m); err != nil && merr == nil {
					merr = err
				}
			}
			mappings = nil
			if merr != nil {
				report("error", fmt.Sprintf("munmap: %v", merr))
			}
			report("freed", 1)
		case cmd == "meminfo":
			mi, err := meminfo()
			if err != nil {
				report("error", err)
				continue
			}
			report("meminfo", fmt.Sprintf("total_kb=%d free_kb=%d available_kb=%d", mi["MemTotal"], mi["MemFree"], mi["MemAvailable"]))
		case cmd == "ticks":
			if !ticking {
				ticking = true
				go ticks()
			}
		case cmd == "quit":
			return
		default:
			report("error", fmt.Sprintf("unknown command %q", sc.Text()))
		}
	}
	if err := sc.Err(); err != nil {
		report("error", fmt.Sprintf("reading the console: %v", err))
	}
}

// alloc maps n MiB and writes to every page, so that each is backed.
func alloc(n int) ([]byte, error) {
	m, err := unix.Mmap(-1, 0, n*mib, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("mmap %d MiB: %w", n, err)
	}
	page := os.Getpagesize()
	for i := 0; i < len(m); i += page {
		m[i] = byte(i/page) | 1 // not zero: a written page
	}
	return m, nil
}

func ticks() {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for n := 1; ; n++ {
		<-t.C
		report("tick", n)
	}
}

func powerOff() {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		report("error", fmt.Sprintf("power off: %v", err))
	}
	select {}
}

// noEcho stops the console's line discipline echoing the commands back
// among the reports.
func noEcho(f *os.File) {
	t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		report("error", fmt.Sprintf("console termios: %v", err))
		return
	}
	t.Lflag &^= unix.ECHO | unix.ECHONL
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t); err != nil {
		report("error", fmt.Sprintf("console termios: %v", err))
	}
}

func loadModules(list string) error {
	data, err := os.ReadFile(list)
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(string(data)) {
		path := "/lib/modules/" + name + ".ko"
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("loading %s: %w", path, err)
		}
	}
	return nil
}

// meminfo returns /proc/meminfo's values in kB by name.
func meminfo() (map[string]uint64, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, line := range strings.Split(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if v, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64); err == nil {
			out[name] = v
		}
	}
	return out, nil
}

// balloonState says whether the machine has a virtio-balloon PCI function
// and whether the virtio_balloon driver took it, waiting up to wait.
func balloonState(wait time.Duration) string {
	if !hasBalloonPCI() {
		return "absent"
	}
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		if m, _ := filepath.Glob(balloonDriverBindings + "/virtio*"); len(m) > 0 {
			return "bound"
		}
		if time.Now().After(deadline) {
			return "unbound"
		}
	}
}

func hasBalloonPCI() bool {
	devs, _ := filepath.Glob("/sys/bus/pci/devices/*")
	for _, d := range devs {
		vendor, device := readTrim(d+"/vendor"), readTrim(d+"/device")
		if vendor == virtioVendor && (device == balloonModern || device == balloonTransitional) {
			return true
		}
	}
	return false
}

func balloonFeatures() string {
	m, _ := filepath.Glob(balloonDriverBindings + "/virtio*/features")
	if len(m) == 0 {
		return "none"
	}
	return readTrim(m[0])
}

// timerCheck spins for ~100 ms of CLOCK_MONOTONIC and counts the timer
// interrupts meanwhile.
func timerCheck() string {
	src := readTrim("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	var t0, t unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &t0)
	irq0 := timerIRQs()
	x := uint64(1)
	// Bounded, should the clock not advance either.
	for chunk := 0; chunk < 2000; chunk++ {
		for i := 0; i < 1_000_000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if _ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &t); t.Nano()-t0.Nano() >= 100e6 {
			break
		}
	}
	return fmt.Sprintf("source=%s clockevent=%s monotonic_ns=%d timer_irqs=%d->%d spin=%x", src,
		readTrim("/sys/devices/system/clockevents/clockevent0/current_device"), t.Nano()-t0.Nano(), irq0, timerIRQs(), x&0xf)
}

// timerIRQs sums the local APIC timers' (LOC) and the PIT's (IRQ 0)
// interrupts of /proc/interrupts.
func timerIRQs() int64 {
	data, err := os.ReadFile("/proc/interrupts")
	if err != nil {
		return -1
	}
	var sum int64
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != "LOC:" && f[0] != "0:") {
			continue
		}
		for _, v := range f[1:] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				break
			}
			sum += n
		}
	}
	return sum
}

func inputNames() string {
	names, _ := filepath.Glob("/sys/class/input/input*/name")
	var out []string
	for _, n := range names {
		out = append(out, readTrim(n))
	}
	return strings.Join(out, ",")
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// watchPowerButton reads every /dev/input/event* device, also those that
// appear later, and powers off when one reports the power key pressed.
func watchPowerButton() {
	pressed := make(chan struct{}, 1)
	watching := map[string]bool{}
	t := time.NewTicker(inputRescan)
	defer t.Stop()
	for {
		devs, _ := filepath.Glob("/dev/input/event*")
		for _, d := range devs {
			if !watching[d] {
				watching[d] = true
				go readEvents(d, pressed)
			}
		}
		select {
		case <-pressed:
			report("powerbutton", 1)
			powerOff()
		case <-t.C:
		}
	}
}

func readEvents(path string, pressed chan<- struct{}) {
	f, err := os.Open(path)
	if err != nil {
		report("error", fmt.Sprintf("input: %v", err))
		return
	}
	defer f.Close()
	ev := make([]byte, inputEventSize)
	for {
		if _, err := io.ReadFull(f, ev); err != nil {
			report("error", fmt.Sprintf("input %s: %v", path, err))
			return
		}
		typ := binary.LittleEndian.Uint16(ev[16:])
		code := binary.LittleEndian.Uint16(ev[18:])
		value := int32(binary.LittleEndian.Uint32(ev[20:]))
		if typ == evKey && code == keyPower && value == keyPressed {
			select {
			case pressed <- struct{}{}:
			default:
			}
		}
	}
}
