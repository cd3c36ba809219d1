// Command guestbench is the init of the benchmark guests, the same image
// under gvmm and under QEMU. Its first act marks the start of user space
// twice: a write of the boot timer's magic value to its port (gvmm logs
// the time; QEMU ignores the port) and the line "GVMMTEST init=1" on the
// serial console, which the benchmark times for both VMMs alike.
//
// Command line keys:
//
//	gvmm.bench=wait  wait for a line on the console, then power off (default)
//	gvmm.bench=off   power off at once
//	gvmm.bench=blk   measure /dev/vda, report, then wait as gvmm.bench=wait
//	gvmm.mib=N       blk: MiB written and read sequentially (default 128)
//	gvmm.randops=N   blk: 4 KiB random reads (default 3000)
//	gvmm.bench=9p    read and write the share tagged "bench", report, then wait
//
// 9p mounts the share (9p, trans=virtio, msize 512000, no cache) at
// /mnt, reports "GVMMTEST ready=1" and waits for a line on the console;
// then it reads /mnt/big.bin sequentially in 1 MiB reads and reports
// "p9read_mbps=" and "p9read_bytes=", and writes as many bytes to
// /mnt/out.bin in 1 MiB writes, each byte its offset times 13, syncs it
// and reports "p9write_mbps=" and "p9write_bytes=".
//
// blk opens the disk, reports "GVMMTEST ready=1" and waits for a line on
// the console; then it reports "write_mbps=", "read_mbps=",
// "randread_iops=" (measured with O_DIRECT, so that the guest's page
// cache stays out of it) and "requests=READS+WRITES" the disk received.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/devices/boottimer"
	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/pio"
)

func main() {
	// ioperm's permission is the thread's: the port write must run on
	// the thread that took it, not on the one the goroutine resumes on
	// after the syscall (a general protection fault killed init).
	runtime.LockOSThread()
	if err := unix.Ioperm(boottimer.Port, boottimer.Size, 1); err == nil {
		pio.Outb(boottimer.Port, boottimer.Magic)
	}
	runtime.UnlockOSThread()
	guest.Report("init", 1)
	args := guest.Setup()
	in := bufio.NewReader(os.Stdin)
	switch args["gvmm.bench"] {
	case "off":
	case "blk":
		if err := blk(in, num(args, "gvmm.mib", 128), num(args, "gvmm.randops", 3000)); err != nil {
			guest.Report("error", err)
		}
		guest.Report("waiting", 1)
		in.ReadString('\n')
	case "9p":
		if err := benchShare(in); err != nil {
			guest.Report("error", err)
		}
		fallthrough
	default:
		guest.Report("waiting", 1)
		in.ReadString('\n')
	}
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		guest.Report("error", fmt.Sprintf("power off: %v", err))
	}
	select {}
}

func num(args map[string]string, key string, def int) int {
	if n, err := strconv.Atoi(args[key]); err == nil && n > 0 {
		return n
	}
	return def
}

const (
	mib       = 1 << 20
	seqBlock  = mib
	randBlock = 4096
)

func blk(in *bufio.Reader, mibs, randOps int) error {
	if err := guest.LoadModules(); err != nil {
		return err
	}
	f, err := openDisk("/dev/vda", 20*time.Second)
	if err != nil {
		return err
	}
	defer f.Close()
	guest.Report("ready", 1)
	if _, err := in.ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the go-ahead: %w", err)
	}
	size := int64(mibs) * mib
	// An anonymous mapping is page-aligned, as O_DIRECT requires.
	buf, err := unix.Mmap(-1, 0, seqBlock, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	for off := int64(0); off < size; off += seqBlock {
		if _, err := f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("write at %d: %w", off, err)
		}
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("fdatasync: %w", err)
	}
	guest.Report("write_mbps", rate(size, time.Since(start)))
	start = time.Now()
	for off := int64(0); off < size; off += seqBlock {
		if _, err := f.ReadAt(buf, off); err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
	}
	guest.Report("read_mbps", rate(size, time.Since(start)))
	// A fixed seed: both VMMs read the same blocks in the same order.
	r := rand.New(rand.NewPCG(1, 2))
	small := buf[:randBlock]
	start = time.Now()
	for range randOps {
		off := r.Int64N(size/randBlock) * randBlock
		if _, err := f.ReadAt(small, off); err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
	}
	guest.Report("randread_iops", fmt.Sprintf("%.0f", float64(randOps)/time.Since(start).Seconds()))
	// Requests the block layer sent to the device (its splitting depends
	// on the limits the device advertises): fields 1 and 5 of the stat.
	if st, err := os.ReadFile("/sys/block/vda/stat"); err == nil {
		if f := strings.Fields(string(st)); len(f) > 4 {
			guest.Report("requests", f[0]+"+"+f[4])
		}
	}
	return nil
}

func rate(n int64, d time.Duration) string {
	return fmt.Sprintf("%.2f", float64(n)/mib/d.Seconds())
}

// openDisk waits for the disk's node (the driver probes it
// asynchronously) and opens it for direct I/O.
func openDisk(path string, limit time.Duration) (*os.File, error) {
	deadline := time.Now().Add(limit)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0)
		if err == nil || !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return f, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// benchShare reads the benchmark's file over 9p, as the blk mode reads
// the disk: after the go-ahead, sequentially, 1 MiB at a time; then it
// writes as much.
func benchShare(in *bufio.Reader) error {
	if err := guest.LoadModules(); err != nil {
		return err
	}
	if err := os.MkdirAll("/mnt", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("bench", "/mnt", "9p", 0, "trans=virtio,version=9p2000.L,msize=512000,cache=none"); err != nil {
		return fmt.Errorf("mount the share: %w", err)
	}
	f, err := os.Open("/mnt/big.bin")
	if err != nil {
		return err
	}
	defer f.Close()
	guest.Report("ready", 1)
	if _, err := in.ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the go-ahead: %w", err)
	}
	buf := make([]byte, seqBlock)
	var total int64
	start := time.Now()
	for {
		n, err := f.Read(buf)
		total += int64(n)
		if errors.Is(err, io.EOF) || n == 0 && err == nil {
			break
		}
		if err != nil {
			return fmt.Errorf("read at %d: %w", total, err)
		}
	}
	guest.Report("p9read_mbps", rate(total, time.Since(start)))
	guest.Report("p9read_bytes", total)
	return writeShare(buf, total)
}

// writeShare writes total bytes to /mnt/out.bin, buf at a time, and
// syncs it.
func writeShare(buf []byte, total int64) error {
	for i := range buf {
		buf[i] = byte(i * 13) // len(buf) is a multiple of 256: the file's bytes are too
	}
	out, err := os.Create("/mnt/out.bin")
	if err != nil {
		return err
	}
	defer out.Close()
	var written int64
	start := time.Now()
	for written < total {
		n, err := out.Write(buf[:min(int64(len(buf)), total-written)])
		written += int64(n)
		if err != nil {
			return fmt.Errorf("write at %d: %w", written, err)
		}
	}
	if err := out.Sync(); err != nil {
		return err
	}
	guest.Report("p9write_mbps", rate(written, time.Since(start)))
	guest.Report("p9write_bytes", written)
	return nil
}
