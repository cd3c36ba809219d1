package virtio_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

const (
	fuzzMemSize  = 16 << 10
	fuzzOpSize   = 8
	fuzzMaxOps   = 128
	fuzzBARPages = 6 // common, ISR, device config, notify, MSI-X table, PBA
)

// fuzzDevice consumes every chain its queues offer and records a buffer
// that is not inside guest memory, which the transport must never hand
// over.
type fuzzDevice struct {
	mem     *memory.Memory
	queues  atomic.Pointer[[]*queue.Queue]
	outside atomic.Pointer[string]
	calls   atomic.Int32 // Process calls that returned
}

func (d *fuzzDevice) Type() virtio.DeviceType    { return virtio.DeviceBlock }
func (d *fuzzDevice) Features() uint64           { return deviceFeature }
func (d *fuzzDevice) QueueMaxSizes() []uint16    { return []uint16{8, 4} }
func (d *fuzzDevice) WriteConfig(uint64, []byte) {}
func (d *fuzzDevice) ReadConfig(off uint64, data []byte) {
	virtio.ReadConfigBytes([]byte{1, 2, 3, 4}, off, data)
}
func (d *fuzzDevice) Reset() { d.queues.Store(nil) }
func (d *fuzzDevice) Activate(a virtio.Activation) error {
	d.queues.Store(&a.Queues)
	return nil
}

func (d *fuzzDevice) Process(ctx context.Context, idx int) error {
	defer d.calls.Add(1)
	qs := d.queues.Load()
	if qs == nil || (*qs)[idx] == nil {
		return fmt.Errorf("queue %d processed but not active", idx)
	}
	q := (*qs)[idx]
	var c queue.Chain
	for ctx.Err() == nil {
		ok, err := q.Pop(&c)
		if err != nil || !ok {
			return err
		}
		for _, b := range append(c.Readable, c.Writable...) {
			if _, err := d.mem.Slice(b.Addr, uint64(b.Len)); err != nil {
				msg := fmt.Sprintf("buffer %#x+%d: %v", b.Addr, b.Len, err)
				d.outside.Store(&msg)
			}
		}
		if err := q.Push(c.Head, 0); err != nil {
			return err
		}
	}
	return q.SignalUsed()
}

// fuzzOp encodes one access: a kind, a width and BAR page, an offset and
// a value.
func fuzzOp(kind, widthLog2, page byte, off uint16, v uint32) []byte {
	b := []byte{kind, widthLog2 | page<<4, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint16(b[2:], off)
	binary.LittleEndian.PutUint32(b[4:], v)
	return b
}

// FuzzTransport plays a hostile driver against the virtio PCI transport:
// each 8-byte op is a BAR or configuration-space access, a queue
// notification or a write to guest memory, and the rings and descriptors
// live in guest memory that is fuzz input too. Nothing may panic, no
// buffer outside guest memory may reach the device, and a reset must stop
// the workers and read back as status 0. Under -race the seeds also check
// the transport's locking against its queue workers.
func FuzzTransport(f *testing.F) {
	const (
		writeBAR, readBAR, cfgSpace, notify, guestWrite = 0, 1, 2, 3, 4
		w1, w2, w4                                      = 0, 1, 2
		common, notifyPage                              = 0, 3
	)
	var setup []byte
	for _, op := range [][]byte{
		fuzzOp(writeBAR, w1, common, 0x14, uint32(statusAck|statusDriver)),
		fuzzOp(writeBAR, w4, common, 0x08, 1),
		fuzzOp(writeBAR, w4, common, 0x0c, 1), // VERSION_1
		fuzzOp(writeBAR, w1, common, 0x14, uint32(statusAck|statusDriver|statusFeatures)),
		fuzzOp(writeBAR, w2, common, 0x16, 0),
		fuzzOp(writeBAR, w2, common, 0x18, 8),
		fuzzOp(writeBAR, w4, common, 0x20, 0x1000),
		fuzzOp(writeBAR, w4, common, 0x28, 0x2000),
		fuzzOp(writeBAR, w4, common, 0x30, 0x3000),
		fuzzOp(writeBAR, w2, common, 0x1c, 1),
		fuzzOp(guestWrite, w2, 0, 0x2002, 3), // avail.idx: three chains
		fuzzOp(writeBAR, w1, common, 0x14, uint32(statusRunning)),
		fuzzOp(notify, w2, notifyPage, 0, 0),
	} {
		setup = append(setup, op...)
	}
	desc := make([]byte, fuzzMemSize)
	for i := range 8 {
		binary.LittleEndian.PutUint64(desc[0x1000+16*i:], uint64(0x3800+64*i))
		binary.LittleEndian.PutUint32(desc[0x1000+16*i+8:], 64)
	}
	f.Add(setup, desc)
	f.Add(setup, []byte{})
	f.Add(append(setup, fuzzOp(writeBAR, w1, common, 0x14, 0)...), desc)

	f.Fuzz(func(t *testing.T, ops, image []byte) {
		data := make([]byte, fuzzMemSize)
		copy(data, image)
		m, err := memory.New(memory.Region{Base: 0, Data: data})
		if err != nil {
			t.Fatal(err)
		}
		dev := &fuzzDevice{mem: m}
		fn, err := virtio.NewPCI(dev, virtio.PCIOptions{Mem: m, MSI: virtiotest.NewMSI(), Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; len(ops) >= fuzzOpSize && n < fuzzMaxOps; ops, n = ops[fuzzOpSize:], n+1 {
			buf := make([]byte, 1<<(ops[1]&3))
			copy(buf, ops[4:8])
			page := uint64(ops[1]>>4) % fuzzBARPages * 0x1000
			off := uint64(binary.LittleEndian.Uint16(ops[2:]))
			switch ops[0] % 5 {
			case writeBAR:
				fn.WriteBAR(virtio.PCIBar, page+off%0x1000, buf)
			case readBAR:
				fn.ReadBAR(virtio.PCIBar, page+off%0x1000, buf)
			case cfgSpace:
				if ops[1]&4 != 0 {
					fn.ConfigSpace().Write(off%0x1000, buf)
				} else {
					fn.ConfigSpace().Read(off%0x1000, buf)
				}
			case notify:
				fn.Notify(int(off % 4))
			case guestWrite:
				// Not under running workers: the race detector cannot
				// tell a guest's writes from a data race.
				if dev.queues.Load() == nil {
					_ = m.WriteAt(buf, memory.GuestAddress(off%fuzzMemSize))
				}
			}
		}
		// Let a running worker get at the rings before the reset.
		for deadline := time.Now().Add(5 * time.Millisecond); dev.queues.Load() != nil && dev.calls.Load() == 0 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Microsecond)
		}
		fn.WriteBAR(virtio.PCIBar, 0x14, []byte{0}) // the driver resets: workers stop
		status := make([]byte, 1)
		fn.ReadBAR(virtio.PCIBar, 0x14, status)
		if status[0] != 0 {
			t.Fatalf("status %#x after reset", status[0])
		}
		if err := fn.Close(); err != nil {
			t.Fatal(err)
		}
		if msg := dev.outside.Load(); msg != nil {
			t.Fatalf("the device was handed a buffer outside guest memory: %s", *msg)
		}
	})
}
