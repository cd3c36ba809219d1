// Package virtiotest is a driver-side mock for device tests: it lays out
// descriptor tables and rings in a fake guest memory and plays the guest
// driver, so tests drive the real queue, transport and device code.
package virtiotest

import (
	"encoding/binary"
	"fmt"

	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/internal/ringmem"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// NewMemory returns a guest memory of one region of size bytes at address 0.
func NewMemory(size int) *memory.Memory {
	m, err := memory.New(memory.Region{Base: 0, Data: make([]byte, size)})
	if err != nil {
		panic(err) // size <= 0 is a bug in the test
	}
	return m
}

// Desc is a raw descriptor as the driver writes it.
type Desc struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

// Buf is one buffer of a chain the mock submits.
type Buf struct {
	Data  []byte // contents of a device-readable buffer
	Len   uint32 // length of a device-writable buffer
	Write bool
}

// Used is one used ring element.
type Used struct {
	ID  uint32
	Len uint32
}

// Driver plays the driver of one split virtqueue. Descriptors are handed
// out round-robin, so a test must not keep more than Size chains
// outstanding; buffers come from a bump allocator after the rings.
type Driver struct {
	Mem                *memory.Memory
	Size               uint16
	Desc, Avail, UsedR memory.GuestAddress

	availIdx uint16
	nextDesc uint16
	lastUsed uint16
	heap     memory.GuestAddress
}

// NewDriver lays a queue of size entries out at base the way Linux does:
// descriptor table, then the available ring, then the used ring on the
// next 64-byte boundary. The used ring is zeroed.
func NewDriver(mem *memory.Memory, size uint16, base memory.GuestAddress) *Driver {
	d := &Driver{Mem: mem, Size: size, Desc: base}
	d.Avail = base + memory.GuestAddress(queue.DescTableSize(size))
	d.UsedR = align(d.Avail+memory.GuestAddress(queue.AvailRingSize(size)), 64)
	// Leave a gap after the used ring: the device updates avail_event
	// through the aligned word that straddles the ring's end.
	d.heap = align(d.UsedR+memory.GuestAddress(queue.UsedRingSize(size))+64, 64)
	d.must(d.Mem.WriteAt(make([]byte, queue.UsedRingSize(size)+2), d.UsedR))
	return d
}

func align(a memory.GuestAddress, n uint64) memory.GuestAddress {
	return memory.GuestAddress((uint64(a) + n - 1) &^ (n - 1))
}

func (d *Driver) must(err error) {
	if err != nil {
		panic(fmt.Sprintf("virtiotest: %v", err)) // the test laid memory out wrong
	}
}

// Config returns the queue configuration a driver would program.
func (d *Driver) Config(eventIdx, indirect bool) queue.Config {
	return queue.Config{Size: d.Size, DescTable: d.Desc, AvailRing: d.Avail, UsedRing: d.UsedR,
		EventIdx: eventIdx, Indirect: indirect}
}

// Alloc reserves n bytes of guest memory, 16-byte aligned.
func (d *Driver) Alloc(n uint64) memory.GuestAddress {
	a := d.heap
	d.heap = align(d.heap+memory.GuestAddress(n), 16)
	return a
}

// WriteDesc writes entry i of the descriptor table at table.
func (d *Driver) WriteDesc(table memory.GuestAddress, i uint16, desc Desc) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], desc.Addr)
	binary.LittleEndian.PutUint32(b[8:], desc.Len)
	binary.LittleEndian.PutUint16(b[12:], desc.Flags)
	binary.LittleEndian.PutUint16(b[14:], desc.Next)
	d.must(d.Mem.WriteAt(b[:], table+memory.GuestAddress(16*uint64(i))))
}

// place allocates and fills the buffers and returns their descriptors,
// chained by index from first within one table.
func (d *Driver) place(bufs []Buf, first func(i int) uint16) ([]Desc, []memory.GuestAddress) {
	descs := make([]Desc, len(bufs))
	addrs := make([]memory.GuestAddress, len(bufs))
	for i, b := range bufs {
		n := b.Len
		if !b.Write {
			n = uint32(len(b.Data))
		}
		addrs[i] = d.Alloc(uint64(n))
		if !b.Write {
			d.must(d.Mem.WriteAt(b.Data, addrs[i]))
		}
		descs[i] = Desc{Addr: uint64(addrs[i]), Len: n}
		if b.Write {
			descs[i].Flags |= queue.DescFlagWrite
		}
		if i+1 < len(bufs) {
			descs[i].Flags |= queue.DescFlagNext
			descs[i].Next = first(i + 1)
		}
	}
	return descs, addrs
}

func (d *Driver) takeDesc() uint16 {
	i := d.nextDesc % d.Size
	d.nextDesc++
	return i
}

// AddChain places bufs as a chain of direct descriptors, publishes it and
// returns its head and the guest address of each buffer.
func (d *Driver) AddChain(bufs []Buf) (uint16, []memory.GuestAddress) {
	idx := make([]uint16, len(bufs))
	for i := range idx {
		idx[i] = d.takeDesc()
	}
	descs, addrs := d.place(bufs, func(i int) uint16 { return idx[i] })
	for i, desc := range descs {
		d.WriteDesc(d.Desc, idx[i], desc)
	}
	d.Publish(idx[0])
	return idx[0], addrs
}

// AddIndirect places bufs in an indirect table referenced by one direct
// descriptor, publishes it and returns its head and buffer addresses.
func (d *Driver) AddIndirect(bufs []Buf) (uint16, []memory.GuestAddress) {
	table := d.Alloc(16 * uint64(len(bufs)))
	descs, addrs := d.place(bufs, func(i int) uint16 { return uint16(i) })
	for i, desc := range descs {
		d.WriteDesc(table, uint16(i), desc)
	}
	head := d.takeDesc()
	d.WriteDesc(d.Desc, head, Desc{Addr: uint64(table), Len: uint32(16 * len(bufs)), Flags: queue.DescFlagIndirect})
	d.Publish(head)
	return head, addrs
}

// Publish puts head in the next available ring slot and then advances
// avail.idx with an atomic store, as a driver's release barrier would.
func (d *Driver) Publish(head uint16) {
	slot := memory.GuestAddress(4 + 2*uint64(d.availIdx%d.Size))
	d.must(d.Mem.PutUint16(d.Avail+slot, head))
	d.availIdx++
	d.SetAvailIdx(d.availIdx)
}

// SetAvailIdx stores avail.idx directly, e.g. to fake a broken driver.
func (d *Driver) SetAvailIdx(v uint16) { d.store16(d.Avail+2, v) }

// SetAvailFlags stores avail.flags.
func (d *Driver) SetAvailFlags(v uint16) { d.store16(d.Avail, v) }

// SetUsedEvent stores used_event (VIRTIO_F_EVENT_IDX).
func (d *Driver) SetUsedEvent(v uint16) {
	d.store16(d.Avail+memory.GuestAddress(4+2*uint64(d.Size)), v)
}

// AvailEvent loads avail_event (VIRTIO_F_EVENT_IDX).
func (d *Driver) AvailEvent() uint16 {
	return d.load16(d.UsedR + memory.GuestAddress(4+8*uint64(d.Size)))
}

// UsedIdx loads used.idx.
func (d *Driver) UsedIdx() uint16 { return d.load16(d.UsedR + 2) }

// Used returns the used elements the device published since the last call.
func (d *Driver) Used() []Used {
	var out []Used
	for idx := d.UsedIdx(); d.lastUsed != idx; d.lastUsed++ {
		e := d.UsedR + memory.GuestAddress(4+8*uint64(d.lastUsed%d.Size))
		id, err := d.Mem.Uint32(e)
		d.must(err)
		n, err := d.Mem.Uint32(e + 4)
		d.must(err)
		out = append(out, Used{ID: id, Len: n})
	}
	return out
}

// Read copies n bytes of guest memory at addr.
func (d *Driver) Read(addr memory.GuestAddress, n int) []byte {
	b := make([]byte, n)
	d.must(d.Mem.ReadAt(b, addr))
	return b
}

func (d *Driver) window(addr memory.GuestAddress) ([]byte, int) {
	b, off, err := ringmem.Window(d.Mem, addr, 2)
	d.must(err)
	return b, off
}

func (d *Driver) store16(addr memory.GuestAddress, v uint16) {
	b, off := d.window(addr)
	ringmem.Store16(b, off, v)
}

func (d *Driver) load16(addr memory.GuestAddress) uint16 {
	b, off := d.window(addr)
	return ringmem.Load16(b, off)
}
