// Command guestsnapshot is the init of tests/snapshot's guest: state that
// lives only in its memory and registers, for a snapshot to carry over.
// It loads the modules /etc/modules.order lists, reports
// "GVMMTEST ready=1", then counts: every countEvery it reports
// "GVMMTEST count=N" and its wall clock "GVMMTEST clock=UNIX_MS" and, with a disk (unless gvmm.disk=0 is on the
// command line), writes N to the first bytes of /dev/vda with O_DIRECT
// and fdatasync, and reads the block at layout.CommandOffset: once it
// holds layout.PowerOffCommand the guest reports "GVMMTEST bye=N" and powers off.
// With gvmm.vsock=1 it also serves vsockwire's sink on vsock, to show
// that vsock works in a restored guest. Failures are reported as
// "GVMMTEST error=...".
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/guestsnapshot/layout"
	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
)

const (
	disk       = "/dev/vda"
	block      = layout.Block
	countEvery = 100 * time.Millisecond
)

func main() {
	args := guest.Setup()
	if err := guest.LoadModules(); err != nil {
		guest.Report("error", err)
	}
	var d *vda
	if args["gvmm.disk"] != "0" {
		var err error
		if d, err = openDisk(); err != nil {
			guest.Report("error", err)
		}
	}
	if args["gvmm.vsock"] == "1" {
		if l, err := listenVsock(vsockwire.PortSink); err != nil {
			guest.Report("error", err)
		} else {
			go func() { guest.Report("error", vsockwire.Serve(l, vsockwire.Sink)) }()
		}
	}
	guest.Report("ready", 1)
	for n := uint64(1); ; n++ {
		guest.Report("count", n)
		guest.Report("clock", time.Now().UnixMilli())
		if d != nil {
			off, err := d.step(n)
			if err != nil {
				guest.Report("error", err)
				d = nil
			} else if off {
				guest.Report("bye", n)
				unix.Sync()
				if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
					guest.Report("error", err)
				}
			}
		}
		time.Sleep(countEvery)
	}
}

// listenVsock retries until the vsock transport has bound: its driver
// probes asynchronously.
func listenVsock(port uint32) (*vsock.Listener, error) {
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var l *vsock.Listener
		if l, err = vsock.Listen(port, nil); err == nil {
			return l, nil
		}
	}
	return nil, fmt.Errorf("vsock listen on port %d: %w", port, err)
}

type vda struct {
	fd  int
	buf []byte // O_DIRECT needs an aligned buffer: a mapping is
}

func openDisk() (*vda, error) {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(disk); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no %s", disk)
		}
	}
	fd, err := unix.Open(disk, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", disk, err)
	}
	buf, err := unix.Mmap(-1, 0, block, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return &vda{fd: fd, buf: buf}, nil
}

// step writes n at the start of the disk and reports whether the host
// asked for a power-off.
func (d *vda) step(n uint64) (bool, error) {
	clear(d.buf)
	binary.LittleEndian.PutUint64(d.buf, n)
	if k, err := unix.Pwrite(d.fd, d.buf, layout.CountOffset); err != nil || k != block {
		return false, fmt.Errorf("pwrite: %d, %v", k, err)
	}
	if err := unix.Fdatasync(d.fd); err != nil {
		return false, fmt.Errorf("fdatasync: %w", err)
	}
	if k, err := unix.Pread(d.fd, d.buf, layout.CommandOffset); err != nil || k != block {
		return false, fmt.Errorf("pread: %d, %v", k, err)
	}
	return string(d.buf[:len(layout.PowerOffCommand)]) == layout.PowerOffCommand, nil
}
