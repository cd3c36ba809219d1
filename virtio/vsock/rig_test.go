package vsock

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

// Guest memory of the rig: rings at ringBase, then fixed buffers for
// each rx descriptor, each tx slot (a header and a payload descriptor)
// and the event queue, so that buffers are reused rather than allocated
// per packet as the mock's own allocator would.
const (
	guestCID   = 3
	ramSize    = 16 << 20
	ringBase   = 0x100000
	rxArea     = 0x400000
	rxBufLen   = HeaderSize + 4096 // what Linux posts
	rxStride   = 0x2000
	txArea     = 0x800000
	txSlots    = QueueSize / 2
	txStride   = 0x5000
	maxTxData  = txStride - 64
	evArea     = 0xf00000
	waitFor    = 5 * time.Second
	quiet      = 100 * time.Millisecond
	guestAlloc = 256 << 10 // the guest's buf_alloc, as Linux's default
)

// rig is a device behind the real PCI transport, with the test playing
// the guest's driver.
type rig struct {
	d      *Device
	drv    *virtiotest.PCIDriver
	mem    *memory.Memory
	logs   *virtiotest.Log
	rxUsed []virtiotest.Used
	txSlot uint16
	txDone map[uint32]bool
}

func newRig(t *testing.T, opts Options) *rig {
	t.Helper()
	r := &rig{mem: virtiotest.NewMemory(ramSize), logs: &virtiotest.Log{}, txDone: map[uint32]bool{}}
	if opts.CID == 0 {
		opts.CID = guestCID
	}
	opts.Log = slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var err error
	r.d, err = New(opts)
	require.NoError(t, err)
	fn, err := virtio.NewPCI(r.d, virtio.PCIOptions{Mem: r.mem, MSI: virtiotest.NewMSI(), Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	r.drv, err = virtiotest.NewPCIDriver(fn, r.mem)
	require.NoError(t, err)
	require.NoError(t, r.drv.Start(virtio.FeatureVersion1, ringBase))
	t.Cleanup(func() {
		r.drv.SetStatus(0)
		require.NoError(t, fn.Close())
	})
	return r
}

// postRx makes rx descriptors [0, n) available, each its own buffer.
func (r *rig) postRx(n int) {
	for i := range uint16(n) {
		r.publishRx(i)
	}
	r.drv.Kick(RxQueue)
}

func (r *rig) publishRx(i uint16) {
	q := r.drv.Queues[RxQueue]
	q.WriteDesc(q.Desc, i, virtiotest.Desc{Addr: rxArea + uint64(i)*rxStride, Len: rxBufLen, Flags: queue.DescFlagWrite})
	q.Publish(i)
}

// recv waits for the device's next rx packet, gives its buffer back and
// returns the packet.
func (r *rig) recv(t *testing.T) (Header, []byte) {
	t.Helper()
	h, data, ok := r.tryRecv(waitFor)
	require.True(t, ok, "no rx packet from the device")
	return h, data
}

func (r *rig) tryRecv(wait time.Duration) (Header, []byte, bool) {
	q := r.drv.Queues[RxQueue]
	for deadline := time.Now().Add(wait); len(r.rxUsed) == 0; time.Sleep(time.Millisecond) {
		r.rxUsed = append(r.rxUsed, q.Used()...)
		if len(r.rxUsed) == 0 && time.Now().After(deadline) {
			return Header{}, nil, false
		}
	}
	u := r.rxUsed[0]
	r.rxUsed = r.rxUsed[1:]
	buf := q.Read(rxArea+memory.GuestAddress(u.ID)*rxStride, int(u.Len))
	h, err := ParseHeader(buf)
	if err != nil {
		panic(err) // the device wrote a used length below the header's
	}
	if int(h.Len) != len(buf)-HeaderSize {
		panic("used length and header len disagree")
	}
	r.publishRx(uint16(u.ID))
	r.drv.Kick(RxQueue)
	return h, buf[HeaderSize:], true
}

// expectQuiet checks the device sends nothing for a while.
func (r *rig) expectQuiet(t *testing.T) {
	t.Helper()
	h, _, ok := r.tryRecv(quiet)
	require.False(t, ok, "unexpected rx packet %+v", h)
}

// hdr is a header from the guest's port to the host's.
func hdr(op Op, guestPort, hostPort uint32) Header {
	return Header{SrcCID: guestCID, DstCID: HostCID, SrcPort: guestPort, DstPort: hostPort,
		Type: TypeStream, Op: op, BufAlloc: guestAlloc}
}

// sendAsync submits a tx packet with data as its payload and returns its
// chain's head.
func (r *rig) sendAsync(h Header, data []byte) uint16 {
	h.Len = uint32(len(data))
	raw := make([]byte, HeaderSize)
	h.Put(raw)
	return r.sendRaw([]virtiotest.Buf{{Data: raw}, {Data: data}})
}

// sendRaw submits a tx chain of at most two buffers in the next slot.
func (r *rig) sendRaw(bufs []virtiotest.Buf) uint16 {
	q := r.drv.Queues[TxQueue]
	slot := r.txSlot % txSlots
	r.txSlot++
	if len(bufs) > 1 && len(bufs[1].Data) == 0 && !bufs[1].Write {
		bufs = bufs[:1]
	}
	head := 2 * slot
	addr := uint64(txArea) + uint64(slot)*txStride
	for i, b := range bufs {
		n := uint32(len(b.Data))
		d := virtiotest.Desc{Addr: addr, Len: n}
		if b.Write {
			d.Len, d.Flags = b.Len, queue.DescFlagWrite
		} else if err := r.mem.WriteAt(b.Data, memory.GuestAddress(addr)); err != nil {
			panic(err)
		}
		if i+1 < len(bufs) {
			d.Flags |= queue.DescFlagNext
			d.Next = head + 1
		}
		q.WriteDesc(q.Desc, head+uint16(i), d)
		addr += 64
	}
	delete(r.txDone, uint32(head))
	q.Publish(head)
	r.drv.Kick(TxQueue)
	return head
}

// send submits a tx packet and waits for the device to complete it.
func (r *rig) send(t *testing.T, h Header, data []byte) {
	t.Helper()
	require.LessOrEqual(t, len(data), maxTxData)
	r.awaitTx(t, r.sendAsync(h, data))
}

func (r *rig) awaitTx(t *testing.T, head uint16) {
	t.Helper()
	require.True(t, r.txCompleted(head, waitFor), "tx chain %d not completed", head)
}

func (r *rig) txCompleted(head uint16, wait time.Duration) bool {
	q := r.drv.Queues[TxQueue]
	for deadline := time.Now().Add(wait); ; time.Sleep(time.Millisecond) {
		for _, u := range q.Used() {
			r.txDone[u.ID] = true
		}
		if r.txDone[uint32(head)] {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// connect opens a connection from guest port gp to host port hp, which
// must be accepted, and checks the RESPONSE.
func (r *rig) connect(t *testing.T, gp, hp uint32) {
	t.Helper()
	r.send(t, hdr(OpRequest, gp, hp), nil)
	h, _ := r.recv(t)
	require.Equal(t, OpResponse, h.Op, "%+v", h)
	require.Equal(t, Header{SrcCID: HostCID, DstCID: guestCID, SrcPort: hp, DstPort: gp, Type: TypeStream,
		Op: OpResponse, BufAlloc: BufAlloc}, h)
}
