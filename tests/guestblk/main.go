// Command guestblk is the init of the disk tests' guests. It mounts
// proc, sys and devtmpfs, loads the modules /etc/modules.order lists (one
// name a line, files /lib/modules/NAME.ko, dependencies first), waits for
// the virtio disks, runs the steps the kernel command line names and
// reports results as "GVMMTEST key=value" lines on the console, then
// powers off. Every failure is reported as "GVMMTEST error=..."; the last
// line before powering off is "GVMMTEST done=1".
//
// Command line keys:
//
//	gvmm.steps=a,b@vdc,...  steps in order; STEP@DEV runs STEP on /dev/DEV
//	gvmm.disks=N            wait for N vd* disks (default 1)
//	gvmm.seed=S             pattern seed (default 1); gvmm.seed.DEV=S for one disk
//	gvmm.mib=N              MiB the write and verify steps cover (default 64)
//	gvmm.rounds=N           durable: rounds (default 30)
//	gvmm.chunkkib=N         durable: KiB per round (default 1024)
//	gvmm.pausems=N          durable: pause after each round (default 200)
//	gvmm.sleep=N            sleep, wait: seconds (default 30)
//	gvmm.token=T            mount-ext4: written into guest.txt
//	gvmm.zero=OFF:LEN       zeroout: the range in MiB
//	gvmm.discard=OFF:LEN    discard: the range in MiB
//
// Steps (default disk in brackets):
//
//	info            every vd* disk: "disk=vda size=SECTORS ro=0|1 serial=ID pci=VENDOR:DEVICE"
//	write-direct    [vda] mib MiB of the pattern with O_DIRECT, fsync: "written=DEV:BYTES"
//	write-buffered  [vdb] the same with buffered writes and fsync
//	read-verify     [vda] compare the first mib MiB with the pattern:
//	                "verify=DEV:ok" or "verify=DEV:mismatch at N"
//	durable         [vda] per round r (from 1): pattern bytes [(r-1)·chunk, r·chunk)
//	                at that offset, fdatasync, "flushed=r"
//	write-ro        [vda] open for writing and write a block:
//	                "rowrite=DEV:refused:CALL:ERRNO" or "rowrite=DEV:succeeded"
//	mount-ext4      [vda] mount at /mnt, "hostfile=<host.txt>", write guest.txt, umount:
//	                "guestfile=written"
//	clock           the guest's clock source, how far CLOCK_MONOTONIC and the
//	                local timer interrupts advance over a busy loop:
//	                "clock=source=S monotonic_ns=N timer_irqs=BEFORE->AFTER"
//	limits          [vda] the queue limits the driver took from the device:
//	                "limits=DEV:zeroes=BYTES:discard=BYTES:segments=N"
//	zeroout         [vda] BLKZEROOUT over gvmm.zero (write-zeroes requests):
//	                "zeroed=DEV:OFF:LEN"
//	discard         [vda] BLKDISCARD over gvmm.discard: "discarded=DEV:OFF:LEN"
//	timed-read      [vda] read mib MiB with O_DIRECT: "readms=DEV:MILLISECONDS"
//	sleep           "sleeping=N", then sleep N seconds
//	wait            "waiting=1", then wait for a console input line, at most
//	                gvmm.sleep seconds: "waited=input" or "waited=timeout"
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"

	"github.com/gvmm-dev/gvmm/tests/guestblk/pattern"
)

const (
	mib           = 1 << 20
	diskWait      = 20 * time.Second
	guestFileText = "written by the gvmm guest: "
)

func main() {
	a := args(guest.Setup())
	if err := guest.LoadModules(); err != nil {
		guest.Report("error", err)
	}
	if err := waitDisks(a.num("gvmm.disks", 1), diskWait); err != nil {
		guest.Report("error", err)
	}
	for _, s := range strings.Split(a["gvmm.steps"], ",") {
		if s == "" {
			continue
		}
		name, dev, _ := strings.Cut(s, "@")
		if err := runStep(a, name, dev); err != nil {
			guest.Report("error", fmt.Sprintf("%s: %v", s, err))
		}
	}
	guest.Report("done", 1)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		guest.Report("error", fmt.Sprintf("power off: %v", err))
	}
	select {}
}

func runStep(a args, name, dev string) error {
	defaults := map[string]string{"write-buffered": "vdb"}
	if dev == "" {
		dev = defaults[name]
		if dev == "" {
			dev = "vda"
		}
	}
	path := "/dev/" + dev
	seed := a.unum(a.key("gvmm.seed."+dev, "gvmm.seed"), 1)
	size := int64(a.num("gvmm.mib", 64)) * mib
	switch name {
	case "info":
		return info()
	case "write-direct":
		if err := writeDirect(path, seed, size); err != nil {
			return err
		}
		guest.Report("written", fmt.Sprintf("%s:%d", dev, size))
	case "write-buffered":
		if err := writeBuffered(path, seed, size); err != nil {
			return err
		}
		guest.Report("written", fmt.Sprintf("%s:%d", dev, size))
	case "read-verify":
		at, err := verify(path, seed, size)
		if err != nil {
			return err
		}
		if at < 0 {
			guest.Report("verify", dev+":ok")
		} else {
			guest.Report("verify", fmt.Sprintf("%s:mismatch at %d", dev, at))
		}
	case "durable":
		return durable(path, seed, a.num("gvmm.rounds", 30), int64(a.num("gvmm.chunkkib", 1024))<<10,
			time.Duration(a.num("gvmm.pausems", 200))*time.Millisecond)
	case "write-ro":
		guest.Report("rowrite", dev+":"+writeRO(path))
	case "mount-ext4":
		return mountExt4(path, a["gvmm.token"])
	case "clock":
		guest.Report("clock", clock())
	case "limits":
		q := "/sys/block/" + dev + "/queue/"
		guest.Report("limits", fmt.Sprintf("%s:zeroes=%s:discard=%s:segments=%s", dev,
			readTrim(q+"write_zeroes_max_bytes"), readTrim(q+"discard_max_bytes"), readTrim(q+"max_discard_segments")))
	case "zeroout", "discard":
		key, req, report := "gvmm.zero", uintptr(unix.BLKZEROOUT), "zeroed"
		if name == "discard" {
			key, req, report = "gvmm.discard", unix.BLKDISCARD, "discarded"
		}
		off, n, err := a.mibRange(key)
		if err != nil {
			return err
		}
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		defer unix.Close(fd)
		if err := blkRange(fd, req, off*mib, n*mib); err != nil {
			return err
		}
		guest.Report(report, fmt.Sprintf("%s:%d:%d", dev, off, n))
	case "timed-read":
		start := time.Now()
		if err := readDirect(path, size); err != nil {
			return err
		}
		guest.Report("readms", fmt.Sprintf("%s:%d", dev, time.Since(start).Milliseconds()))
	case "sleep":
		n := a.num("gvmm.sleep", 30)
		guest.Report("sleeping", n)
		time.Sleep(time.Duration(n) * time.Second)
	case "wait":
		guest.Report("waiting", 1)
		guest.Report("waited", waitInput(time.Duration(a.num("gvmm.sleep", 30))*time.Second))
	default:
		return errors.New("unknown step")
	}
	return nil
}

// args are the kernel command line's key=value pairs.
type args map[string]string

// key returns the first of keys that is set, else the last.
func (a args) key(keys ...string) string {
	for _, k := range keys {
		if _, ok := a[k]; ok {
			return k
		}
	}
	return keys[len(keys)-1]
}

func (a args) num(key string, def int) int {
	v, ok := a[key]
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		guest.Report("error", fmt.Sprintf("%s=%q: want a non-negative number", key, v))
		return def
	}
	return n
}

// mibRange reads key's OFF:LEN.
func (a args) mibRange(key string) (off, n uint64, err error) {
	o, l, ok := strings.Cut(a[key], ":")
	if off, err = strconv.ParseUint(o, 10, 64); ok && err == nil {
		n, err = strconv.ParseUint(l, 10, 64)
	}
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("%s=%q: want OFF:LEN in MiB", key, a[key])
	}
	return off, n, nil
}

func (a args) unum(key string, def uint64) uint64 {
	v, ok := a[key]
	if !ok {
		return def
	}
	n, err := strconv.ParseUint(v, 0, 64)
	if err != nil {
		guest.Report("error", fmt.Sprintf("%s=%q: want a number", key, v))
		return def
	}
	return n
}

func disks() []string {
	m, _ := filepath.Glob("/sys/block/vd*")
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	sort.Strings(m)
	return m
}

// waitDisks polls until n disks and their device nodes exist.
func waitDisks(n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		d := disks()
		ready := len(d) >= n
		for _, name := range d {
			if _, err := os.Stat("/dev/" + name); err != nil {
				ready = false
			}
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %d disks: after %s only %q", n, limit, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func info() error {
	d := disks()
	if len(d) == 0 {
		return errors.New("no vd* disks")
	}
	for _, name := range d {
		dir := "/sys/block/" + name
		serial, err := os.ReadFile(dir + "/serial")
		s := strings.TrimSpace(string(serial))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s = "error:" + err.Error()
		}
		guest.Report("disk", fmt.Sprintf("%s size=%s ro=%s serial=%s pci=%s",
			name, readTrim(dir+"/size"), readTrim(dir+"/ro"), s, pciID(dir+"/device")))
	}
	return nil
}

// pciID finds the PCI function above a virtio device (which has vendor
// and device files of its own: the virtio IDs) and returns its IDs.
func pciID(virtioDev string) string {
	p, err := filepath.EvalSymlinks(virtioDev)
	if err != nil {
		return "error:" + err.Error()
	}
	for dir := filepath.Dir(p); dir != "/sys/devices" && dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		v, errV := os.ReadFile(dir + "/vendor")
		d, errD := os.ReadFile(dir + "/device")
		if errV == nil && errD == nil {
			return strings.TrimSpace(string(v)) + ":" + strings.TrimSpace(string(d))
		}
	}
	return "none-above-" + p
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "error:" + err.Error()
	}
	return strings.TrimSpace(string(b))
}

// alignedBuffer returns n page-aligned bytes, as O_DIRECT needs, and
// their release.
func alignedBuffer(n int) ([]byte, func(), error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap: %w", err)
	}
	return b, func() { _ = unix.Munmap(b) }, nil
}

func writeDirect(path string, seed uint64, size int64) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s O_DIRECT: %w", path, err)
	}
	defer unix.Close(fd)
	buf, free, err := alignedBuffer(mib)
	if err != nil {
		return err
	}
	defer free()
	for off := int64(0); off < size; off += mib {
		pattern.Fill(buf, seed, off)
		if err := pwriteAll(fd, buf, off); err != nil {
			return err
		}
	}
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	return nil
}

func readDirect(path string, size int64) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s O_DIRECT: %w", path, err)
	}
	defer unix.Close(fd)
	buf, free, err := alignedBuffer(mib)
	if err != nil {
		return err
	}
	defer free()
	for off := int64(0); off < size; off += mib {
		n, err := unix.Pread(fd, buf, off)
		if err != nil {
			return fmt.Errorf("pread at %d: %w", off, err)
		}
		if n != mib {
			return fmt.Errorf("pread at %d: %d bytes", off, n)
		}
	}
	return nil
}

func pwriteAll(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		n, err := unix.Pwrite(fd, buf, off)
		if err != nil {
			return fmt.Errorf("pwrite at %d: %w", off, err)
		}
		if n == 0 {
			return fmt.Errorf("pwrite at %d: no progress", off)
		}
		buf, off = buf[n:], off+int64(n)
	}
	return nil
}

func writeBuffered(path string, seed uint64, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(f, pattern.Reader(seed, 0, size)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// verify returns the offset of the first byte that differs from the
// pattern, or -1.
func verify(path string, seed uint64, size int64) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, mib)
	for off := int64(0); off < size; off += mib {
		n := int(min(mib, size-off))
		if _, err := io.ReadFull(f, buf[:n]); err != nil {
			return 0, fmt.Errorf("read at %d: %w", off, err)
		}
		if at := pattern.Mismatch(buf[:n], seed, off); at >= 0 {
			return off + at, nil
		}
	}
	return -1, nil
}

func durable(path string, seed uint64, rounds int, chunk int64, pause time.Duration) error {
	if chunk <= 0 {
		return errors.New("gvmm.chunkkib must be positive")
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, chunk)
	for r := 1; r <= rounds; r++ {
		off := int64(r-1) * chunk
		pattern.Fill(buf, seed, off)
		if err := pwriteAll(fd, buf, off); err != nil {
			return err
		}
		if err := unix.Fdatasync(fd); err != nil {
			return fmt.Errorf("fdatasync after round %d: %w", r, err)
		}
		guest.Report("flushed", r)
		time.Sleep(pause)
	}
	return nil
}

// writeRO tries to change a disk that should be read-only.
func writeRO(path string) string {
	refused := func(call string, err error) string {
		var errno unix.Errno
		if errors.As(err, &errno) {
			return "refused:" + call + ":" + unix.ErrnoName(errno)
		}
		return "refused:" + call + ":" + err.Error()
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return refused("open", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	pattern.Fill(buf, 0xbad, 0)
	if _, err := unix.Pwrite(fd, buf, 0); err != nil {
		return refused("write", err)
	}
	if err := unix.Fsync(fd); err != nil {
		return refused("fsync", err)
	}
	return "succeeded"
}

func mountExt4(dev, token string) error {
	const mnt = "/mnt"
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount %s: %w", dev, err)
	}
	host, err := os.ReadFile(mnt + "/host.txt")
	if err != nil {
		_ = unix.Unmount(mnt, 0)
		return err
	}
	guest.Report("hostfile", strings.TrimSpace(string(host)))
	f, err := os.Create(mnt + "/guest.txt")
	if err == nil {
		_, err = f.WriteString(guestFileText + token + "\n")
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	unix.Sync()
	if uerr := unix.Unmount(mnt, 0); err == nil && uerr != nil {
		err = fmt.Errorf("umount: %w", uerr)
	}
	if err != nil {
		return err
	}
	guest.Report("guestfile", "written")
	return nil
}

// waitInput waits for a line on the console, or gives up after limit.
func waitInput(limit time.Duration) string {
	got := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(got)
	}()
	select {
	case <-got:
		return "input"
	case <-time.After(limit):
		return "timeout"
	}
}

// clock reports whether guest time and timer interrupts advance over
// about 100 ms of busy looping, without relying on timers itself: a guest
// whose timer interrupts never arrive hangs in every sleep.
func clock() string {
	src := readTrim("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	var t0, t unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &t0)
	irq0 := timerIRQs()
	x := uint64(1)
	for chunk := 0; chunk < 2000; chunk++ {
		for i := 0; i < 1_000_000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if _ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &t); t.Nano()-t0.Nano() >= 100e6 {
			break
		}
	}
	irq1 := timerIRQs()
	return fmt.Sprintf("source=%s monotonic_ns=%d timer_irqs=%d->%d spin=%x",
		src, t.Nano()-t0.Nano(), irq0, irq1, x&0xf)
}

// timerIRQs sums the timer interrupts of /proc/interrupts: the local APIC
// timers' (LOC) and the PIT's (IRQ 0), whichever the kernel uses.
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
