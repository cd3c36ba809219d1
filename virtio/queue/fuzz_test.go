package queue_test

import (
	"encoding/binary"
	"testing"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

const fuzzMemSize = 16 << 10

// fuzzHeader is the layout of a fuzz input: the queue configuration, then
// the guest memory image.
const fuzzHeader = 9

// FuzzPop runs a virtqueue over guest memory that is entirely fuzz
// input: random descriptor tables, rings and indices. Pop must never
// panic, never return a buffer outside guest memory, never return a chain
// longer than the queue, and the device must not loop.
func FuzzPop(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < fuzzHeader {
			return
		}
		image := make([]byte, fuzzMemSize)
		copy(image, data[fuzzHeader:])
		mem, err := memory.New(memory.Region{Base: 0, Data: image})
		if err != nil {
			t.Fatal(err)
		}
		cfg := queue.Config{
			Size:      binary.LittleEndian.Uint16(data[0:]),
			EventIdx:  data[2]&1 != 0,
			Indirect:  data[2]&2 != 0,
			DescTable: memory.GuestAddress(binary.LittleEndian.Uint16(data[3:])),
			AvailRing: memory.GuestAddress(binary.LittleEndian.Uint16(data[5:])),
			UsedRing:  memory.GuestAddress(binary.LittleEndian.Uint16(data[7:])),
		}
		q, err := queue.New(mem, cfg, virtiotest.NewInterrupt())
		if err != nil {
			return
		}
		var c queue.Chain
		for range 2*int(cfg.Size) + 2 {
			ok, err := q.Pop(&c)
			if err != nil || !ok {
				return
			}
			n := len(c.Readable) + len(c.Writable)
			if n > int(cfg.Size) {
				t.Fatalf("chain of %d buffers in a queue of %d", n, cfg.Size)
			}
			var written uint32
			for _, b := range append(c.Readable, c.Writable...) {
				if _, err := mem.Slice(b.Addr, uint64(b.Len)); err != nil {
					t.Fatalf("buffer outside guest memory: %v", err)
				}
				written += b.Len
			}
			if err := q.Push(c.Head, written); err != nil {
				t.Fatal(err)
			}
			if err := q.SignalUsed(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
