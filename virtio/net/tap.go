package net

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// HeaderSize is the virtio_net_hdr_v1 the device and the TAP exchange
// before every frame: flags, gso_type, hdr_len, gso_size, csum_start,
// csum_offset and num_buffers. With VIRTIO_F_VERSION_1 it is always 12
// bytes, so the TAP is set to the same size and the header passes
// through without translation.
const HeaderSize = 12

// TUN offload flags of TUNSETOFFLOAD (linux/if_tun.h); x/sys/unix does
// not define them.
const (
	tunFCSUM = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
)

// tapFlags is how every TAP is opened: Ethernet frames, no packet
// information prefix, a virtio-net header on each frame.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR

// ErrNotTap is returned for a file descriptor that is not a TAP opened
// with IFF_VNET_HDR and without a packet information prefix.
var ErrNotTap = errors.New("not a TAP file descriptor with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR")

// Tap is one queue of a TAP interface: a file whose reads and writes are
// whole Ethernet frames, each behind a HeaderSize virtio-net header.
type Tap struct {
	f       *os.File
	rc      syscall.RawConn
	name    string
	created bool
	// offload applies TUNSETOFFLOAD; device tests without a TAP replace it.
	offload func(flags int) error
	// readv's state, which only the rx goroutine uses, and writev's,
	// which only the tx queue's worker uses.
	rx, tx tapIO
}

// tapIO is one direction's system call state, kept so that a frame's
// readv or writev allocates nothing: the iovecs, the result, and the
// function the runtime poller calls, made once.
type tapIO struct {
	iov  iovecs
	n    int
	err  error
	idle func()
	call func(fd uintptr) bool
}

// initIO makes the poller's functions; every constructor calls it.
func (t *Tap) initIO() {
	t.rx.call, t.tx.call = t.readOnce, t.writeOnce
}

// OpenTap attaches to the TAP interface name, creating it if it does not
// exist. A TAP this call creates is brought up, and is not persistent:
// the kernel removes it when the file closes. An existing one is used as
// it is. Creating or attaching needs CAP_NET_ADMIN unless name is a
// persistent TAP owned by the caller.
func OpenTap(name string) (*Tap, error) {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap %q: want a name of 1 to %d bytes", name, unix.IFNAMSIZ-1)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	_, err = net.InterfaceByName(name)
	existed := err == nil
	// The descriptor goes on the runtime poller (os.NewFile of a
	// non-blocking one) only once attached: before TUNSETIFF the TAP
	// polls as an error, which the poller would keep.
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %s: /dev/net/tun: %w", name, err)
	}
	ifr.SetUint16(tapFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	t, err := newTap(f, ifr.Name())
	if err != nil {
		return nil, err
	}
	if !existed {
		t.created = true
		if err := linkUp(t.name); err != nil {
			t.Close()
			return nil, fmt.Errorf("tap %s: bringing it up: %w", name, err)
		}
	}
	return t, nil
}

// linkUp sets IFF_UP on the interface name.
func linkUp(name string) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// TapFromFile takes over f, an open TAP queue such as an orchestrator or
// a CNI plugin hands over, after checking its flags: it must have been
// opened with IFF_VNET_HDR, which cannot be added later. f is closed
// whether or not this succeeds.
func TapFromFile(f *os.File) (*Tap, error) {
	defer f.Close()
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tap fd: %w", err)
	}
	// A duplicate made non-blocking before os.NewFile sees it goes on the
	// runtime poller; f itself may be blocking and stays as it is.
	fd := -1
	var serr error
	if err := raw.Control(func(old uintptr) {
		if fd, serr = unix.FcntlInt(old, unix.F_DUPFD_CLOEXEC, 0); serr == nil {
			serr = unix.SetNonblock(fd, true)
		}
	}); err != nil {
		return nil, fmt.Errorf("tap fd: %w", err)
	}
	if serr != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("tap fd: %w", serr)
	}
	nf := os.NewFile(uintptr(fd), f.Name())
	ifr, err := unix.NewIfreq("")
	if err != nil {
		nf.Close()
		return nil, err
	}
	if err := ioctlIfreq(nf, unix.TUNGETIFF, ifr); err != nil {
		nf.Close()
		return nil, fmt.Errorf("tap fd: TUNGETIFF: %w: %w", ErrNotTap, err)
	}
	if flags := ifr.Uint16(); flags&tapFlags != tapFlags || flags&unix.IFF_TUN != 0 {
		nf.Close()
		return nil, fmt.Errorf("tap %s: flags %#x: %w", ifr.Name(), flags, ErrNotTap)
	}
	return newTap(nf, ifr.Name())
}

func newTap(f *os.File, name string) (*Tap, error) {
	t := &Tap{f: f, name: name}
	t.initIO()
	var err error
	if t.rc, err = f.SyscallConn(); err != nil {
		f.Close()
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	t.offload = t.setOffload
	var ierr error
	if err := t.rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetPointerInt(int(fd), unix.TUNSETVNETHDRSZ, HeaderSize)
	}); err != nil || ierr != nil {
		f.Close()
		return nil, fmt.Errorf("tap %s: TUNSETVNETHDRSZ: %w", name, errors.Join(err, ierr))
	}
	// No offloads until a driver negotiates them: a frame the guest
	// could not take must be finished by the host's stack.
	if err := t.offload(0); err != nil {
		f.Close()
		return nil, err
	}
	return t, nil
}

// newTestTap wraps a datagram socket, which keeps frame boundaries as a
// TAP does, for device tests; offload records instead of calling ioctl.
func newTestTap(f *os.File, offload func(int) error) (*Tap, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	t := &Tap{f: f, rc: rc, name: "test", offload: offload}
	t.initIO()
	return t, nil
}

func ioctlIfreq(f *os.File, req uint, ifr *unix.Ifreq) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlIfreq(int(fd), req, ifr) }); err != nil {
		return err
	}
	return ierr
}

func (t *Tap) setOffload(flags int) error {
	var ierr error
	if err := t.rc.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, flags) }); err != nil {
		return fmt.Errorf("tap %s: TUNSETOFFLOAD: %w", t.name, err)
	}
	if ierr != nil {
		return fmt.Errorf("tap %s: TUNSETOFFLOAD %#x: %w", t.name, flags, ierr)
	}
	return nil
}

// Created reports whether OpenTap created the interface.
func (t *Tap) Created() bool { return t.created }

// Name is the interface's name.
func (t *Tap) Name() string { return t.name }

// Close closes the queue; a TAP OpenTap created goes away with it.
func (t *Tap) Close() error { return t.f.Close() }

// readv reads one frame into iovs, waiting on the runtime poller, not
// spinning, until one arrives or the read deadline passes. idle runs,
// once, when the TAP has no frame queued, before the wait: it costs no
// read of its own, as a non-blocking attempt before a blocking one would.
func (t *Tap) readv(iovs [][]byte, idle func()) (int, error) {
	t.rx.iov.set(iovs)
	t.rx.idle = idle
	if err := t.rc.Read(t.rx.call); err != nil {
		return 0, err
	}
	return t.rx.n, t.rx.err
}

func (t *Tap) readOnce(fd uintptr) bool {
	r := &t.rx
	r.n, r.err = r.iov.readv(fd)
	if r.err != unix.EAGAIN {
		return true
	}
	if r.idle != nil {
		r.idle()
		r.idle = nil
	}
	return false
}

// writev writes one frame from iovs without waiting: a TAP whose queue
// is full drops the frame, as a NIC's full ring does.
func (t *Tap) writev(iovs [][]byte) (int, error) {
	t.tx.iov.set(iovs)
	if err := t.rc.Write(t.tx.call); err != nil {
		return 0, err
	}
	return t.tx.n, t.tx.err
}

func (t *Tap) writeOnce(fd uintptr) bool {
	t.tx.n, t.tx.err = t.tx.iov.writev(fd)
	return true
}

// interruptReads makes a waiting readv, and every later one, fail with
// os.ErrDeadlineExceeded until resumeReads.
func (t *Tap) interruptReads() error { return t.f.SetReadDeadline(time.Unix(1, 0)) }

func (t *Tap) resumeReads() error { return t.f.SetReadDeadline(time.Time{}) }
