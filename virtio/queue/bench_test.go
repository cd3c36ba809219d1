package queue_test

import (
	"testing"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

// benchQueueSize is the size Linux gives a virtio-blk queue.
const benchQueueSize = 256

// BenchmarkPopPush measures one request's round trip through a queue:
// the driver writes a chain and publishes it, and the device drains the
// ring the way virtio-blk's Process does (Pop until empty, Push and
// SignalUsed each chain), so the final, empty Pop is counted too. The
// driver's own ring writes are part of ns/op; they are a few stores.
// The steady state must not allocate: Pop reuses the Chain's slices.
func BenchmarkPopPush(b *testing.B) {
	var (
		hdr    = virtiotest.Buf{Data: make([]byte, 16)} // virtio_blk_req header
		data   = virtiotest.Buf{Len: 4096, Write: true} // one page read
		status = virtiotest.Buf{Len: 1, Write: true}
	)
	tests := []struct {
		name     string
		bufs     []virtiotest.Buf
		eventIdx bool // VIRTIO_F_EVENT_IDX, as Linux negotiates
		indirect bool // the chain in an indirect table, as Linux's virtio-blk sends it
	}{
		{"chain=1", []virtiotest.Buf{data}, false, false},
		{"chain=3", []virtiotest.Buf{hdr, data, status}, false, false},
		{"chain=3,event_idx", []virtiotest.Buf{hdr, data, status}, true, false},
		{"chain=3,event_idx,indirect", []virtiotest.Buf{hdr, data, status}, true, true},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			mem := virtiotest.NewMemory(memSize)
			drv := virtiotest.NewDriver(mem, benchQueueSize, 0x1000)
			irq := virtiotest.NewInterrupt()
			q, err := queue.New(mem, drv.Config(tt.eventIdx, tt.indirect), irq)
			if err != nil {
				b.Fatal(err)
			}
			// The driver's buffers and descriptors, laid out once; each
			// iteration rewrites the descriptors as a driver does.
			n := uint16(len(tt.bufs))
			descs := make([]virtiotest.Desc, n)
			var written uint32
			for i, buf := range tt.bufs {
				d := virtiotest.Desc{Len: uint32(len(buf.Data))}
				if buf.Write {
					d.Len, d.Flags = buf.Len, queue.DescFlagWrite
					written += buf.Len
				}
				d.Addr = uint64(drv.Alloc(uint64(d.Len)))
				descs[i] = d
			}
			var table memory.GuestAddress
			if tt.indirect {
				table = drv.Alloc(16 * uint64(n))
			}

			var c queue.Chain
			requests := 0
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				requests++
				// Driver: a chain in free descriptors, then avail.idx.
				var head uint16
				if tt.indirect {
					head = uint16(i) % benchQueueSize
					for j, d := range descs {
						drv.WriteDesc(table, uint16(j), chained(d, uint16(j), n, 0))
					}
					drv.WriteDesc(drv.Desc, head, virtiotest.Desc{Addr: uint64(table), Len: 16 * uint32(n), Flags: queue.DescFlagIndirect})
				} else {
					head = uint16(i) % (benchQueueSize / n) * n
					for j, d := range descs {
						drv.WriteDesc(drv.Desc, head+uint16(j), chained(d, uint16(j), n, head))
					}
				}
				drv.Publish(head)

				// Device: virtio-blk's loop.
				popped := 0
				for {
					ok, err := q.Pop(&c)
					if err != nil {
						b.Fatal(err)
					}
					if !ok {
						break
					}
					if c.Head != head || len(c.Readable)+len(c.Writable) != int(n) {
						b.Fatalf("popped head %d with %d+%d buffers, want head %d with %d",
							c.Head, len(c.Readable), len(c.Writable), head, n)
					}
					if err := q.Push(c.Head, written); err != nil {
						b.Fatal(err)
					}
					if err := q.SignalUsed(); err != nil {
						b.Fatal(err)
					}
					popped++
				}
				if popped != 1 {
					b.Fatalf("popped %d chains, want 1", popped)
				}

				// Driver: take the completion and, with EVENT_IDX, ask to
				// be interrupted for the next one, as Linux's
				// virtqueue_get_buf does with callbacks enabled.
				if tt.eventIdx {
					drv.SetUsedEvent(drv.UsedIdx())
				}
			}
			if got := irq.Count(); got != requests {
				b.Fatalf("%d interrupts for %d requests", got, requests)
			}
		})
	}
}

// chained links descriptor j of an n-long chain to the next slot after
// base, in the table it is written to.
func chained(d virtiotest.Desc, j, n, base uint16) virtiotest.Desc {
	if j+1 < n {
		d.Flags |= queue.DescFlagNext
		d.Next = base + j + 1
	}
	return d
}
