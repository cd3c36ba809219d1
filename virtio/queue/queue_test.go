package queue_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

const memSize = 1 << 20

func newQueue(t testing.TB, size uint16, eventIdx, indirect bool) (*virtiotest.Driver, *queue.Queue, *virtiotest.Interrupt) {
	t.Helper()
	mem := virtiotest.NewMemory(memSize)
	drv := virtiotest.NewDriver(mem, size, 0x1000)
	irq := virtiotest.NewInterrupt()
	q, err := queue.New(mem, drv.Config(eventIdx, indirect), irq)
	require.NoError(t, err)
	return drv, q, irq
}

func TestNewValidates(t *testing.T) {
	const pageEnd = memSize // the last page is [memSize-4096, memSize)
	base := queue.Config{Size: 16, DescTable: 0x1000, AvailRing: 0x2000, UsedRing: 0x3000}
	tests := []struct {
		name   string
		mutate func(*queue.Config)
		want   error
	}{
		{"valid", func(*queue.Config) {}, nil},
		{"zero size", func(c *queue.Config) { c.Size = 0 }, queue.ErrInvalidSize},
		{"not a power of two", func(c *queue.Config) { c.Size = 12 }, queue.ErrInvalidSize},
		{"above device maximum", func(c *queue.Config) { c.Size, c.MaxSize = 512, 256 }, queue.ErrInvalidSize},
		{"spec maximum", func(c *queue.Config) { c.Size = queue.MaxSize }, nil},
		{"desc misaligned", func(c *queue.Config) { c.DescTable = 0x1008 }, queue.ErrMisaligned},
		{"avail odd", func(c *queue.Config) { c.AvailRing = 0x2001 }, queue.ErrMisaligned},
		{"avail 2-aligned is valid", func(c *queue.Config) { c.AvailRing = 0x2002 }, nil},
		{"used misaligned", func(c *queue.Config) { c.UsedRing = 0x3002 }, queue.ErrMisaligned},
		{"desc past memory", func(c *queue.Config) { c.DescTable = pageEnd - 16*8 }, memory.ErrOutOfRange},
		{"avail past memory", func(c *queue.Config) { c.AvailRing = pageEnd - 8 }, memory.ErrOutOfRange},
		{"used ring on the last page overflows", func(c *queue.Config) {
			c.Size = 512 // 6+8*512 bytes do not fit in the last page
			c.UsedRing = pageEnd - 4096
		}, memory.ErrOutOfRange},
		{"used ring fits the last page exactly", func(c *queue.Config) {
			c.Size = 256
			c.UsedRing = pageEnd - 4096
		}, nil},
		{"address wraps", func(c *queue.Config) { c.UsedRing = ^memory.GuestAddress(0) &^ 3 }, memory.ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mutate(&cfg)
			_, err := queue.New(virtiotest.NewMemory(memSize), cfg, virtiotest.NewInterrupt())
			if tt.want == nil {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, tt.want)
			}
		})
	}
}

func TestPopChains(t *testing.T) {
	tests := []struct {
		name     string
		indirect bool
		bufs     []virtiotest.Buf
	}{
		{"one readable", false, []virtiotest.Buf{{Data: []byte("hello")}}},
		{"one writable", false, []virtiotest.Buf{{Len: 512, Write: true}}},
		{"read then write", false, []virtiotest.Buf{{Data: make([]byte, 16)}, {Len: 4096, Write: true}, {Len: 1, Write: true}}},
		{"full queue length", false, func() []virtiotest.Buf {
			b := make([]virtiotest.Buf, 16)
			for i := range b {
				b[i] = virtiotest.Buf{Data: []byte{byte(i)}}
			}
			return b
		}()},
		{"indirect", true, []virtiotest.Buf{{Data: make([]byte, 16)}, {Len: 512, Write: true}, {Len: 1, Write: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drv, q, _ := newQueue(t, 16, false, true)
			add := drv.AddChain
			if tt.indirect {
				add = drv.AddIndirect
			}
			head, addrs := add(tt.bufs)
			var c queue.Chain
			ok, err := q.Pop(&c)
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, head, c.Head)
			var got []queue.Buffer
			got = append(got, c.Readable...)
			got = append(got, c.Writable...)
			require.Len(t, got, len(tt.bufs))
			for i, b := range tt.bufs {
				n := b.Len
				if !b.Write {
					n = uint32(len(b.Data))
				}
				assert.Equal(t, queue.Buffer{Addr: addrs[i], Len: n}, got[i])
			}
			ok, err = q.Pop(&c)
			require.NoError(t, err)
			assert.False(t, ok, "ring should be empty")
		})
	}
}

func TestPopDirectThenIndirect(t *testing.T) {
	drv, q, _ := newQueue(t, 8, false, true)
	hdr, status := drv.Alloc(16), drv.Alloc(1)
	table := drv.Alloc(32)
	drv.WriteDesc(table, 0, virtiotest.Desc{Addr: uint64(hdr), Len: 16, Flags: queue.DescFlagNext, Next: 1})
	drv.WriteDesc(table, 1, virtiotest.Desc{Addr: uint64(status), Len: 1, Flags: queue.DescFlagWrite})
	data := drv.Alloc(512)
	drv.WriteDesc(drv.Desc, 3, virtiotest.Desc{Addr: uint64(data), Len: 512, Flags: queue.DescFlagNext, Next: 5})
	// WRITE on the descriptor pointing at the table must be ignored.
	drv.WriteDesc(drv.Desc, 5, virtiotest.Desc{Addr: uint64(table), Len: 32, Flags: queue.DescFlagIndirect | queue.DescFlagWrite})
	drv.Publish(3)
	var c queue.Chain
	ok, err := q.Pop(&c)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, []queue.Buffer{{Addr: data, Len: 512}, {Addr: hdr, Len: 16}}, c.Readable)
	assert.Equal(t, []queue.Buffer{{Addr: status, Len: 1}}, c.Writable)
}

func TestPopRejectsMalformedChains(t *testing.T) {
	const size = 8
	buf := uint64(0x80000)
	tests := []struct {
		name     string
		indirect bool // negotiate VIRTIO_F_INDIRECT_DESC
		setup    func(d *virtiotest.Driver) uint16
		want     error
	}{
		{"head beyond size", true, func(*virtiotest.Driver) uint16 { return size }, queue.ErrDescIndex},
		{"next beyond size", true, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: buf, Len: 8, Flags: queue.DescFlagNext, Next: size})
			return 0
		}, queue.ErrDescIndex},
		{"self loop", true, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 2, virtiotest.Desc{Addr: buf, Len: 8, Flags: queue.DescFlagNext, Next: 2})
			return 2
		}, queue.ErrChainTooLong},
		{"two-element loop", true, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: buf, Len: 8, Flags: queue.DescFlagNext, Next: 1})
			d.WriteDesc(d.Desc, 1, virtiotest.Desc{Addr: buf, Len: 8, Flags: queue.DescFlagNext, Next: 0})
			return 0
		}, queue.ErrChainTooLong},
		{"loop inside indirect table", true, func(d *virtiotest.Driver) uint16 {
			table := d.Alloc(32)
			d.WriteDesc(table, 0, virtiotest.Desc{Addr: buf, Len: 8, Flags: queue.DescFlagNext, Next: 1})
			d.WriteDesc(table, 1, virtiotest.Desc{Addr: buf, Len: 8, Flags: queue.DescFlagNext, Next: 0})
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: uint64(table), Len: 32, Flags: queue.DescFlagIndirect})
			return 0
		}, queue.ErrChainTooLong},
		{"direct plus indirect longer than size", true, func(d *virtiotest.Driver) uint16 {
			table := d.Alloc(16 * size)
			for i := uint16(0); i < size; i++ {
				d.WriteDesc(table, i, virtiotest.Desc{Addr: buf, Len: 8, Flags: queue.DescFlagNext, Next: i + 1})
			}
			d.WriteDesc(table, size-1, virtiotest.Desc{Addr: buf, Len: 8})
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: buf, Len: 8, Flags: queue.DescFlagNext, Next: 1})
			d.WriteDesc(d.Desc, 1, virtiotest.Desc{Addr: uint64(table), Len: 16 * size, Flags: queue.DescFlagIndirect})
			return 0
		}, queue.ErrChainTooLong},
		{"indirect next beyond table", true, func(d *virtiotest.Driver) uint16 {
			table := d.Alloc(32)
			d.WriteDesc(table, 0, virtiotest.Desc{Addr: buf, Len: 8, Flags: queue.DescFlagNext, Next: 2})
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: uint64(table), Len: 32, Flags: queue.DescFlagIndirect})
			return 0
		}, queue.ErrDescIndex},
		{"nested indirect", true, func(d *virtiotest.Driver) uint16 {
			inner, outer := d.Alloc(16), d.Alloc(16)
			d.WriteDesc(inner, 0, virtiotest.Desc{Addr: buf, Len: 8})
			d.WriteDesc(outer, 0, virtiotest.Desc{Addr: uint64(inner), Len: 16, Flags: queue.DescFlagIndirect})
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: uint64(outer), Len: 16, Flags: queue.DescFlagIndirect})
			return 0
		}, queue.ErrNestedIndirect},
		{"indirect with next", true, func(d *virtiotest.Driver) uint16 {
			table := d.Alloc(16)
			d.WriteDesc(table, 0, virtiotest.Desc{Addr: buf, Len: 8})
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: uint64(table), Len: 16, Flags: queue.DescFlagIndirect | queue.DescFlagNext, Next: 1})
			return 0
		}, queue.ErrIndirectNext},
		{"indirect length not a multiple of 16", true, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: buf, Len: 24, Flags: queue.DescFlagIndirect})
			return 0
		}, queue.ErrIndirectSize},
		{"indirect length zero", true, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: buf, Len: 0, Flags: queue.DescFlagIndirect})
			return 0
		}, queue.ErrIndirectSize},
		{"indirect table above cap", true, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: buf, Len: 16 * (size + 1), Flags: queue.DescFlagIndirect})
			return 0
		}, queue.ErrIndirectSize},
		{"indirect table out of memory", true, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: memSize - 16, Len: 32, Flags: queue.DescFlagIndirect})
			return 0
		}, memory.ErrOutOfRange},
		{"indirect not negotiated", false, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: buf, Len: 16, Flags: queue.DescFlagIndirect})
			return 0
		}, queue.ErrIndirectNotNegotiated},
		{"readable after writable", true, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: buf, Len: 8, Flags: queue.DescFlagWrite | queue.DescFlagNext, Next: 1})
			d.WriteDesc(d.Desc, 1, virtiotest.Desc{Addr: buf, Len: 8})
			return 0
		}, queue.ErrReadableAfterWritable},
		{"buffer past end of memory", true, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: memSize - 4, Len: 8})
			return 0
		}, memory.ErrOutOfRange},
		{"addr+len overflows", true, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: ^uint64(0) - 2, Len: 8})
			return 0
		}, memory.ErrOutOfRange},
		{"buffer outside memory", true, func(d *virtiotest.Driver) uint16 {
			d.WriteDesc(d.Desc, 0, virtiotest.Desc{Addr: 1 << 40, Len: 1})
			return 0
		}, memory.ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drv, q, _ := newQueue(t, size, false, tt.indirect)
			drv.Publish(tt.setup(drv))
			var c queue.Chain
			_, err := q.Pop(&c)
			assert.ErrorIs(t, err, tt.want)
			var ce *queue.ChainError
			assert.ErrorAs(t, err, &ce)
		})
	}
}

func TestAvailIndexJump(t *testing.T) {
	tests := []struct {
		name  string
		idx   uint16
		ok    bool
		chain bool
	}{
		{"exactly size pending", 8, true, true},
		{"size+1 pending", 9, false, false},
		{"wrapped backwards", 0xffff, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drv, q, _ := newQueue(t, 8, false, false)
			for i := uint16(0); i < 8; i++ {
				drv.WriteDesc(drv.Desc, i, virtiotest.Desc{Addr: 0x80000, Len: 1})
			}
			drv.SetAvailIdx(tt.idx)
			var c queue.Chain
			got, err := q.Pop(&c)
			if tt.ok {
				require.NoError(t, err)
				assert.Equal(t, tt.chain, got)
				return
			}
			assert.ErrorIs(t, err, queue.ErrAvailOverrun)
			var ae *queue.AvailIndexError
			require.ErrorAs(t, err, &ae)
			assert.Equal(t, tt.idx, ae.AvailIdx)
		})
	}
}

func TestPushPublishesUsed(t *testing.T) {
	drv, q, _ := newQueue(t, 4, false, false)
	for i := 0; i < 6; i++ { // wraps the ring
		head, _ := drv.AddChain([]virtiotest.Buf{{Len: 8, Write: true}})
		var c queue.Chain
		ok, err := q.Pop(&c)
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, q.Push(c.Head, uint32(i)))
		assert.Equal(t, []virtiotest.Used{{ID: uint32(head), Len: uint32(i)}}, drv.Used())
	}
	assert.Equal(t, uint16(6), drv.UsedIdx())
	assert.Error(t, q.Push(4, 0), "head beyond the queue size")
}

func TestNeedEvent(t *testing.T) {
	tests := []struct {
		event, now, old uint16
		want            bool
	}{
		{0, 1, 0, true},
		{1, 1, 0, false},
		{4, 5, 3, true},
		{4, 4, 3, false},
		{2, 5, 3, false}, // event already passed before old
		{0xffff, 0, 0xfffe, true},
		{0xfffe, 2, 0xfffd, true},
		{5, 5, 5, false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, queue.NeedEvent(tt.event, tt.now, tt.old), "%+v", tt)
	}
}

func popPush(t *testing.T, drv *virtiotest.Driver, q *queue.Queue, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		drv.AddChain([]virtiotest.Buf{{Len: 8, Write: true}})
		var c queue.Chain
		ok, err := q.Pop(&c)
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, q.Push(c.Head, 8))
	}
}

func TestSignalUsed(t *testing.T) {
	tests := []struct {
		name       string
		eventIdx   bool
		availFlags uint16
		usedEvent  uint16
		pushes     int
		want       int
	}{
		{"no event idx interrupts", false, 0, 0, 1, 1},
		{"no event idx, NO_INTERRUPT", false, queue.AvailFlagNoInterrupt, 0, 1, 0},
		{"event idx crossed", true, 0, 0, 1, 1},
		{"event idx not reached", true, 0, 5, 3, 0},
		{"event idx reached in batch", true, 0, 2, 3, 1},
		{"event idx ignores NO_INTERRUPT", true, queue.AvailFlagNoInterrupt, 0, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drv, q, irq := newQueue(t, 8, tt.eventIdx, false)
			drv.SetAvailFlags(tt.availFlags)
			drv.SetUsedEvent(tt.usedEvent)
			popPush(t, drv, q, tt.pushes)
			require.NoError(t, q.SignalUsed())
			assert.Equal(t, tt.want, irq.Count())
			require.NoError(t, q.SignalUsed())
			assert.Equal(t, tt.want, irq.Count(), "nothing new pushed, no interrupt")
		})
	}
}

func TestEventIdxSuppressionOverTime(t *testing.T) {
	drv, q, irq := newQueue(t, 8, true, false)
	drv.SetUsedEvent(0)
	popPush(t, drv, q, 1)
	require.NoError(t, q.SignalUsed())
	assert.Equal(t, 1, irq.Count())
	// The driver has not re-armed used_event (still 0): no interrupt.
	popPush(t, drv, q, 2)
	require.NoError(t, q.SignalUsed())
	assert.Equal(t, 1, irq.Count())
	// Re-armed at the next entry: the following push crosses it.
	drv.SetUsedEvent(3)
	popPush(t, drv, q, 1)
	require.NoError(t, q.SignalUsed())
	assert.Equal(t, 2, irq.Count())
}

func TestPopSetsAvailEvent(t *testing.T) {
	drv, q, _ := newQueue(t, 8, true, false)
	popPush(t, drv, q, 3)
	var c queue.Chain
	ok, err := q.Pop(&c)
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Equal(t, uint16(3), drv.AvailEvent(), "device asks to be kicked for the next chain")
}

func TestMisalignedAvailRing(t *testing.T) {
	mem := virtiotest.NewMemory(memSize)
	const size = 4
	cfg := queue.Config{Size: size, DescTable: 0x1000, AvailRing: 0x2002, UsedRing: 0x3000, EventIdx: true}
	q, err := queue.New(mem, cfg, virtiotest.NewInterrupt())
	require.NoError(t, err)
	require.NoError(t, mem.PutUint64(0x1000, 0x80000))
	require.NoError(t, mem.PutUint32(0x1008, 64))
	require.NoError(t, mem.PutUint16(0x2002+4, 0)) // ring[0] = head 0
	require.NoError(t, mem.PutUint16(0x2002+2, 1)) // idx = 1
	require.NoError(t, mem.PutUint16(0x2002+4+2*size, 0))
	var c queue.Chain
	ok, err := q.Pop(&c)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, []queue.Buffer{{Addr: 0x80000, Len: 64}}, c.Readable)
	// The neighbouring bytes of the aligned words are left alone.
	require.NoError(t, mem.PutUint16(0x2000, 0xbeef))
	ok, err = q.Pop(&c)
	require.NoError(t, err)
	assert.False(t, ok)
	v, err := mem.Uint16(0x2000)
	require.NoError(t, err)
	assert.Equal(t, uint16(0xbeef), v)
	ev, err := mem.Uint16(0x3000 + 4 + 8*size)
	require.NoError(t, err)
	assert.Equal(t, uint16(1), ev)
}
