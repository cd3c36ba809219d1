// Command guestmetrics is the init of tests/metrics' guest. It loads the
// modules /etc/modules.order lists (virtio-blk, virtio-net, vsock,
// balloon), gives its Ethernet interface the address gvmm.ip (CIDR),
// serves an echo on vsock and TCP port vsockwire.PortEcho, reports
// "GVMMTEST ready=1",
// then keeps the disk /dev/vda busy: every few milliseconds a 64 KiB
// O_DIRECT write and read, and a flush and a console line
// "GVMMTEST rounds=N" every tenth round, so the host sees its disk
// counters and exits move. Failures are reported as
// "GVMMTEST error=...".
package main

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/guestlink"
	"github.com/gvmm-dev/gvmm/tests/internal/vsockwire"
)

const (
	disk      = "/dev/vda"
	chunk     = 64 << 10
	span      = 64 // chunks the writes cycle over
	roundTime = 20 * time.Millisecond
)

func main() {
	args := guest.Setup()
	if err := guest.LoadModules(); err != nil {
		guest.Report("error", err)
	}
	if err := waitFor(disk, 10*time.Second); err != nil {
		guest.Report("error", err)
	}
	if l, err := listen(vsockwire.PortEcho, 10*time.Second); err != nil {
		guest.Report("error", err)
	} else {
		go func() { guest.Report("error", vsockwire.Serve(l, vsockwire.Echo)) }()
	}
	if _, err := guestlink.Up(args["gvmm.ip"]); err != nil {
		guest.Report("error", err)
	} else if l, err := net.Listen("tcp4", fmt.Sprintf(":%d", vsockwire.PortEcho)); err != nil {
		guest.Report("error", err)
	} else {
		go func() { guest.Report("error", vsockwire.Serve(l, vsockwire.Echo)) }()
	}
	guest.Report("ready", 1)
	if err := diskLoop(); err != nil {
		guest.Report("error", err)
	}
	select {}
}

// waitFor waits for a device node: the drivers probe asynchronously.
func waitFor(path string, limit time.Duration) error {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
	}
	return fmt.Errorf("no %s after %s", path, limit)
}

// listen retries until the vsock transport has bound.
func listen(port uint32, limit time.Duration) (*vsock.Listener, error) {
	var err error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var l *vsock.Listener
		if l, err = vsock.Listen(port, nil); err == nil {
			return l, nil
		}
	}
	return nil, fmt.Errorf("vsock listen on port %d: %w", port, err)
}

// diskLoop writes and reads the disk until an error.
func diskLoop() error {
	fd, err := unix.Open(disk, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s O_DIRECT: %w", disk, err)
	}
	defer unix.Close(fd)
	// O_DIRECT needs an aligned buffer: an anonymous mapping is.
	buf, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	for i := 0; ; i++ {
		off := int64(i%span) * chunk
		buf[0] = byte(i)
		if n, err := unix.Pwrite(fd, buf, off); err != nil || n != chunk {
			return fmt.Errorf("pwrite at %d: %d, %v", off, n, err)
		}
		if n, err := unix.Pread(fd, buf, off); err != nil || n != chunk {
			return fmt.Errorf("pread at %d: %d, %v", off, n, err)
		}
		if buf[0] != byte(i) {
			return fmt.Errorf("read back %d at %d, wrote %d", buf[0], off, byte(i))
		}
		if i%10 == 9 {
			if err := unix.Fdatasync(fd); err != nil {
				return fmt.Errorf("fdatasync: %w", err)
			}
			guest.Report("rounds", i+1)
		}
		time.Sleep(roundTime)
	}
}
