// Command guestmem is the init of the memory tests' guests (tests/balloon).
// It loads the modules /etc/modules.order lists (one name a line, files
// /lib/modules/NAME.ko, dependencies first), reports what it sees as
// "GVMMTEST key=value" lines on the console, prints "GVMMTEST ready=1"
// and then obeys commands read line by line from the console:
//
//	alloc N    map N MiB of anonymous memory and write its number (from
//	           1) at the start of every page, so that no two pages of it
//	           are alike but those of another guest's alloc N are:
//	           "alloc=ok" or "alloc=failed:<error>"
//	fragment   free all but one page in every 256 KiB of what alloc mapped:
//	           "fragmented=MiB"
//	free       unmap everything alloc mapped: "freed=1"
//	meminfo    "meminfo=total_kb=T free_kb=F available_kb=A"
//	ticks      start printing "tick=<n>" (from 1) every 500 ms
//	quit       power off
//
// Unknown commands are answered "error=unknown command ...". At start it
// reports "nproc=N", "balloon=bound|unbound|absent" (the virtio-balloon
// PCI function and whether virtio_balloon drives it), "balloon_features=BITS"
// (the negotiated feature bits, bit 0 first, as the virtio core shows
// them) and "inputs=..." (the input devices' names). Whenever an input
// device reports the power key pressed (what the ACPI button driver sends
// when the power button is pressed), it prints "powerbutton=1", syncs and
// powers off.
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
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
)

const (
	mib           = 1 << 20
	hugePage      = 2 * mib
	fragmentBlock = 256 << 10
	tickEvery     = 500 * time.Millisecond
	balloonWait   = 10 * time.Second
	inputRescan   = 250 * time.Millisecond

	// The virtio-balloon PCI function: Red Hat's vendor ID, device 0x1040
	// + 5 (virtio 1.0) or the transitional 0x1002.
	virtioVendor          = "0x1af4"
	balloonModern         = "0x1045"
	balloonTransitional   = "0x1002"
	balloonDriverBindings = "/sys/bus/virtio/drivers/virtio_balloon"

	inputEventSize = 24 // struct input_event on x86-64: timeval, u16 type, u16 code, s32 value
	evKey          = 1
	keyPower       = 116
	keyPressed     = 1
)

func main() {
	guest.Setup()
	noEcho(os.Stdin)
	if err := guest.LoadModules(); err != nil {
		guest.Report("error", err)
	}
	go watchPowerButton()
	guest.Report("nproc", runtime.NumCPU())
	guest.Report("balloon", balloonState(balloonWait))
	guest.Report("balloon_features", balloonFeatures())
	guest.Report("inputs", inputNames())
	guest.Report("ready", 1)
	commands(os.Stdin)
	powerOff()
}

// commands runs the console's commands until "quit" or the end of input.
func commands(in io.Reader) {
	var (
		regions []region
		ticking bool
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
				guest.Report("alloc", fmt.Sprintf("failed:bad size %q", fields[1]))
				continue
			}
			r, err := alloc(n)
			if err != nil {
				guest.Report("alloc", "failed:"+err.Error())
				continue
			}
			regions = append(regions, r)
			guest.Report("alloc", "ok")
		case cmd == "fragment":
			freed, err := fragment(regions)
			if err != nil {
				guest.Report("error", err)
			}
			guest.Report("fragmented", freed/mib)
		case cmd == "free":
			for _, r := range regions {
				if err := unix.Munmap(r.mapping); err != nil {
					guest.Report("error", fmt.Sprintf("munmap: %v", err))
				}
			}
			regions = nil
			guest.Report("freed", 1)
		case cmd == "meminfo":
			mi, err := meminfo()
			if err != nil {
				guest.Report("error", err)
				continue
			}
			guest.Report("meminfo", fmt.Sprintf("total_kb=%d free_kb=%d available_kb=%d", mi["MemTotal"], mi["MemFree"], mi["MemAvailable"]))
		case cmd == "ticks":
			if !ticking {
				ticking = true
				go ticks()
			}
		case cmd == "quit":
			return
		default:
			guest.Report("error", fmt.Sprintf("unknown command %q", sc.Text()))
		}
	}
	if err := sc.Err(); err != nil {
		guest.Report("error", fmt.Sprintf("reading the console: %v", err))
	}
}

// region is what one alloc mapped and the 2 MiB-aligned n MiB of it
// that it uses.
type region struct{ mapping, used []byte }

// alloc maps n MiB and writes to every page, so that each is backed. The
// pages used are aligned to 2 MiB, so that transparent huge pages back
// all of them: they are quick to fault in, and physically contiguous,
// which fragment relies on.
func alloc(n int) (region, error) {
	m, err := unix.Mmap(-1, 0, n*mib+hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return region{}, fmt.Errorf("mmap %d MiB: %w", n, err)
	}
	head := int(-uintptr(unsafe.Pointer(&m[0])) & (hugePage - 1))
	r := region{mapping: m, used: m[head : head+n*mib]}
	page := os.Getpagesize()
	for i := 0; i < len(r.used); i += page {
		binary.LittleEndian.PutUint64(r.used[i:], uint64(i/page+1))
	}
	return r, nil
}

// fragment frees all but the first page of every 256 KiB of the regions
// and returns the bytes freed. Split huge pages leave those 256 KiB
// physically contiguous, so the guest's free memory grows by pieces of
// 128 KiB and less: free page reporting (2 MiB blocks and up) never sees
// them, while the balloon driver's page allocations, smallest free block
// first, take them before anything else.
func fragment(regions []region) (int, error) {
	for _, r := range regions {
		// Else khugepaged would collapse the pieces into huge pages again.
		if err := unix.Madvise(r.used, unix.MADV_NOHUGEPAGE); err != nil {
			return 0, fmt.Errorf("madvise(MADV_NOHUGEPAGE): %w", err)
		}
	}
	if err := splitHugePages(); err != nil {
		return 0, err
	}
	page := os.Getpagesize()
	freed := 0
	for _, r := range regions {
		for off := 0; off+fragmentBlock <= len(r.used); off += fragmentBlock {
			if err := unix.Madvise(r.used[off+page:off+fragmentBlock], unix.MADV_DONTNEED); err != nil {
				return freed, fmt.Errorf("madvise(MADV_DONTNEED): %w", err)
			}
			freed += fragmentBlock - page
		}
	}
	return freed, nil
}

// splitHugePages has the kernel split every transparent huge page into
// small pages, still mapped.
func splitHugePages() error {
	const debugfs = "/sys/kernel/debug"
	if err := unix.Mount("debugfs", debugfs, "debugfs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount %s: %w", debugfs, err)
	}
	if err := os.WriteFile(debugfs+"/split_huge_pages", []byte("1"), 0); err != nil {
		return fmt.Errorf("splitting huge pages: %w", err)
	}
	return nil
}

func ticks() {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for n := 1; ; n++ {
		<-t.C
		guest.Report("tick", n)
	}
}

func powerOff() {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		guest.Report("error", fmt.Sprintf("power off: %v", err))
	}
	select {}
}

// noEcho stops the console's line discipline echoing the commands back
// among the reports.
func noEcho(f *os.File) {
	t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		guest.Report("error", fmt.Sprintf("console termios: %v", err))
		return
	}
	t.Lflag &^= unix.ECHO | unix.ECHONL
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t); err != nil {
		guest.Report("error", fmt.Sprintf("console termios: %v", err))
	}
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
			guest.Report("powerbutton", 1)
			powerOff()
		case <-t.C:
		}
	}
}

func readEvents(path string, pressed chan<- struct{}) {
	f, err := os.Open(path)
	if err != nil {
		guest.Report("error", fmt.Sprintf("input: %v", err))
		return
	}
	defer f.Close()
	ev := make([]byte, inputEventSize)
	for {
		if _, err := io.ReadFull(f, ev); err != nil {
			guest.Report("error", fmt.Sprintf("input %s: %v", path, err))
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
