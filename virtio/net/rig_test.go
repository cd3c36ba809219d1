package net

import (
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

const (
	ramSize  = 32 << 20
	ringBase = 0x100000
	rxRings  = 0x1000000
	waitFor  = 5 * time.Second
	quiet    = 150 * time.Millisecond
)

// rig is a device on one end of a datagram socket pair, which keeps
// frame boundaries as a TAP does, behind the real PCI transport, with
// the test playing both the guest's driver and the host's side of the
// TAP (peer).
type rig struct {
	d    *Device
	fn   *virtio.PCIDevice
	drv  *virtiotest.PCIDriver
	mem  *memory.Memory
	msi  *virtiotest.MSI // vector i is queue i's
	peer *os.File
	logs *virtiotest.Log

	mu       sync.Mutex
	offloads []int
}

func newRig(t testing.TB, features uint64, limits Limits) *rig {
	t.Helper()
	r := newDevice(t, virtiotest.NewMemory(ramSize), limits)
	require.True(t, r.drv.Negotiate(virtio.FeatureVersion1|features))
	r.drv.EnableMSIX(3)
	r.drv.WriteCommon(virtiotest.CommonConfigMSIXVector, 2, 2)
	// The rx queue's buffers come from a heap after its rings: far from
	// the tx queue's.
	r.drv.SetupQueue(RxQueue, 0, rxRings)
	r.drv.SetupQueue(TxQueue, 0, ringBase)
	r.drv.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK)
	require.Equal(t, uint8(15), r.drv.Status())
	return r
}

// newDevice makes a device and its transport on mem, not yet started by
// the driver.
func newDevice(t testing.TB, mem *memory.Memory, limits Limits) *rig {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	// Room for a few largest frames each way.
	for _, fd := range fds {
		require.NoError(t, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20))
	}
	r := &rig{mem: mem, msi: virtiotest.NewMSI(), logs: &virtiotest.Log{}, peer: os.NewFile(uintptr(fds[1]), "peer")}
	tap, err := newTestTap(os.NewFile(uintptr(fds[0]), "tap"), func(flags int) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.offloads = append(r.offloads, flags)
		return nil
	})
	require.NoError(t, err)
	r.d, err = New(Options{Tap: tap, MAC: [6]byte{0x52, 0x54, 0, 1, 2, 3}, Limits: limits,
		Log: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	require.NoError(t, err)
	r.fn, err = virtio.NewPCI(r.d, virtio.PCIOptions{Mem: r.mem, MSI: r.msi, Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	r.drv, err = virtiotest.NewPCIDriver(r.fn, r.mem)
	require.NoError(t, err)
	t.Cleanup(func() {
		r.drv.SetStatus(0)
		require.NoError(t, r.fn.Close())
		require.NoError(t, r.d.Close())
		r.peer.Close()
	})
	return r
}

// frame is a header and payload as the TAP would hand them over.
func frame(hdr [HeaderSize]byte, payload []byte) []byte {
	return append(hdr[:], payload...)
}

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7) + seed
	}
	return p
}

// inject sends a frame from the host's side.
func (r *rig) inject(t *testing.T, f []byte) {
	t.Helper()
	_, err := r.peer.Write(f)
	require.NoError(t, err)
}

// postRx makes n rx chains of size bytes each available.
func (r *rig) postRx(n int, size uint32) {
	q := r.drv.Queues[RxQueue]
	for range n {
		q.AddChain([]virtiotest.Buf{{Len: size, Write: true}})
	}
	r.drv.Kick(RxQueue)
}

// rxUsed waits for n used rx elements.
func (r *rig) rxUsed(t *testing.T, n int) []virtiotest.Used {
	t.Helper()
	var got []virtiotest.Used
	q := r.drv.Queues[RxQueue]
	for deadline := time.Now().Add(waitFor); len(got) < n; time.Sleep(time.Millisecond) {
		got = append(got, q.Used()...)
		require.True(t, time.Now().Before(deadline), "%d of %d rx chains used", len(got), n)
	}
	return got
}

// recvPeer reads one frame on the host's side.
func (r *rig) recvPeer(t *testing.T) []byte {
	t.Helper()
	require.NoError(t, r.peer.SetReadDeadline(time.Now().Add(waitFor)))
	b := make([]byte, MaxFrame+1)
	n, err := r.peer.Read(b)
	require.NoError(t, err)
	return b[:n]
}

// peerQuiet checks the host's side receives nothing for a while.
func (r *rig) peerQuiet(t *testing.T) {
	t.Helper()
	require.NoError(t, r.peer.SetReadDeadline(time.Now().Add(quiet)))
	b := make([]byte, MaxFrame+1)
	n, err := r.peer.Read(b)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "unexpected frame of %d bytes", n)
}

// send submits a tx chain and waits for the device to complete it.
func (r *rig) send(t *testing.T, bufs ...virtiotest.Buf) {
	t.Helper()
	q := r.drv.Queues[TxQueue]
	head, _ := q.AddChain(bufs)
	r.drv.Kick(TxQueue)
	for deadline := time.Now().Add(waitFor); ; time.Sleep(time.Millisecond) {
		for _, u := range q.Used() {
			if u.ID == uint32(head) {
				return
			}
		}
		require.True(t, time.Now().Before(deadline), "tx chain %d not completed", head)
	}
}

// peerPending reads how many bytes wait unread on the device's end: for
// a socket pair, what the peer sent sits in the receiver's queue, which
// SIOCOUTQ on the sender reports.
func (r *rig) peerPending(n *int) error {
	rc, err := r.peer.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { *n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		return err
	}
	return ierr
}
