// Package queue implements the device side of a virtio 1.x split
// virtqueue. The rings live in guest memory and every field the guest
// controls is treated as hostile: a queue is validated once when the
// driver enables it, each available chain is walked under the invariants
// of the spec (2.7), and the device writes nothing but the used ring.
package queue

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/internal/ringmem"
)

// Descriptor flags (virtq_desc.flags).
const (
	DescFlagNext     = 1
	DescFlagWrite    = 2
	DescFlagIndirect = 4
)

// AvailFlagNoInterrupt is the driver's request, without
// VIRTIO_F_EVENT_IDX, not to be interrupted.
const AvailFlagNoInterrupt = 1

// MaxSize is the largest split queue the spec allows.
const MaxSize = 32768

// Ring alignments required by the spec (2.7, table "Virtqueue Part").
const (
	DescAlign  = 16
	AvailAlign = 2
	UsedAlign  = 4
)

const (
	descSize     = 16
	usedElemSize = 8
	ringHeader   = 4 // flags and idx of the avail and used rings
)

// DescTableSize returns the bytes of a descriptor table of size entries.
func DescTableSize(size uint16) uint64 { return descSize * uint64(size) }

// AvailRingSize returns the bytes of an available ring, used_event included.
func AvailRingSize(size uint16) uint64 { return ringHeader + 2*uint64(size) + 2 }

// UsedRingSize returns the bytes of a used ring, avail_event included.
func UsedRingSize(size uint16) uint64 { return ringHeader + usedElemSize*uint64(size) + 2 }

// Config is what the driver programmed for a queue plus the negotiated
// ring features.
type Config struct {
	Size      uint16
	MaxSize   uint16 // the device's limit; 0 means MaxSize
	DescTable memory.GuestAddress
	AvailRing memory.GuestAddress
	UsedRing  memory.GuestAddress
	EventIdx  bool // VIRTIO_F_EVENT_IDX negotiated
	Indirect  bool // VIRTIO_F_INDIRECT_DESC negotiated
}

// Errors returned by New.
var (
	ErrInvalidSize = errors.New("virtqueue size must be a non-zero power of two within the device maximum")
	ErrMisaligned  = errors.New("virtqueue ring misaligned")
)

// Errors wrapped in a ChainError by Pop. Each means the driver broke the
// ring protocol; the device should be marked NEEDS_RESET.
var (
	ErrDescIndex             = errors.New("descriptor index out of range")
	ErrChainTooLong          = errors.New("descriptor chain longer than the queue size")
	ErrNestedIndirect        = errors.New("indirect descriptor inside an indirect table")
	ErrIndirectNext          = errors.New("indirect descriptor with NEXT set")
	ErrIndirectSize          = errors.New("indirect table length not a non-zero multiple of 16 within the queue size")
	ErrIndirectNotNegotiated = errors.New("indirect descriptor without VIRTIO_F_INDIRECT_DESC")
	ErrReadableAfterWritable = errors.New("device-readable descriptor after a device-writable one")
)

// ErrAvailOverrun is wrapped by AvailIndexError.
var ErrAvailOverrun = errors.New("available index moved further than the queue size")

// AvailIndexError reports a driver that published more chains than the
// queue holds: avail.idx - nextAvail > size.
type AvailIndexError struct {
	AvailIdx, NextAvail, Size uint16
}

func (e *AvailIndexError) Error() string {
	return fmt.Sprintf("virtqueue: avail.idx %d is %d ahead of the device's %d, queue size %d",
		e.AvailIdx, e.AvailIdx-e.NextAvail, e.NextAvail, e.Size)
}

func (e *AvailIndexError) Unwrap() error { return ErrAvailOverrun }

// ChainError reports a malformed descriptor chain.
type ChainError struct {
	Head     uint16
	Index    uint16 // descriptor being examined
	Indirect bool   // Index is in an indirect table
	Err      error
}

func (e *ChainError) Error() string {
	where := "table"
	if e.Indirect {
		where = "indirect table"
	}
	return fmt.Sprintf("virtqueue: chain %d, descriptor %d of %s: %v", e.Head, e.Index, where, e.Err)
}

func (e *ChainError) Unwrap() error { return e.Err }

// Buffer is one descriptor's guest buffer. Pop has checked that it lies
// in guest memory.
type Buffer struct {
	Addr memory.GuestAddress
	Len  uint32
}

// Chain is a popped descriptor chain: device-readable buffers first, then
// device-writable ones, each list in chain order.
type Chain struct {
	Head     uint16
	Readable []Buffer
	Writable []Buffer
}

// Queue is the device side of one split virtqueue. It is not safe for
// concurrent use: one worker goroutine owns it.
type Queue struct {
	mem      *memory.Memory
	irq      devices.Interrupt
	size     uint16
	eventIdx bool
	indirect bool

	desc     []byte // descriptor table
	avail    []byte // available ring, widened by ringmem.Window
	availOff int
	used     []byte // used ring, widened by ringmem.Window
	usedOff  int

	nextAvail  uint16 // next avail ring entry to consume
	nextUsed   uint16 // value of used.idx
	signalUsed uint16 // used.idx when SignalUsed last decided
}

// New validates a queue the driver has just enabled: the size, each ring's
// alignment and each ring's whole range in guest memory. irq raises the
// queue's used-buffer notification.
func New(mem *memory.Memory, cfg Config, irq devices.Interrupt) (*Queue, error) {
	maxSize := cfg.MaxSize
	if maxSize == 0 || maxSize > MaxSize {
		maxSize = MaxSize
	}
	if cfg.Size == 0 || cfg.Size&(cfg.Size-1) != 0 || cfg.Size > maxSize {
		return nil, fmt.Errorf("virtqueue: size %d, maximum %d: %w", cfg.Size, maxSize, ErrInvalidSize)
	}
	if cfg.DescTable%DescAlign != 0 || cfg.AvailRing%AvailAlign != 0 || cfg.UsedRing%UsedAlign != 0 {
		return nil, fmt.Errorf("virtqueue: desc %#x, avail %#x, used %#x: %w",
			uint64(cfg.DescTable), uint64(cfg.AvailRing), uint64(cfg.UsedRing), ErrMisaligned)
	}
	q := &Queue{mem: mem, irq: irq, size: cfg.Size, eventIdx: cfg.EventIdx, indirect: cfg.Indirect}
	var err error
	if q.desc, err = mem.Slice(cfg.DescTable, DescTableSize(cfg.Size)); err != nil {
		return nil, fmt.Errorf("virtqueue: descriptor table: %w", err)
	}
	if q.avail, q.availOff, err = ringmem.Window(mem, cfg.AvailRing, AvailRingSize(cfg.Size)); err != nil {
		return nil, fmt.Errorf("virtqueue: available ring: %w", err)
	}
	if q.used, q.usedOff, err = ringmem.Window(mem, cfg.UsedRing, UsedRingSize(cfg.Size)); err != nil {
		return nil, fmt.Errorf("virtqueue: used ring: %w", err)
	}
	return q, nil
}

// Size returns the queue size the driver chose.
func (q *Queue) Size() uint16 { return q.size }

// Offsets of the shared 16-bit fields within their rings.
const (
	ringFlags = 0
	ringIdx   = 2
)

func (q *Queue) usedEventOff() int  { return q.availOff + ringHeader + 2*int(q.size) }
func (q *Queue) availEventOff() int { return q.usedOff + ringHeader + usedElemSize*int(q.size) }

// availIdx loads avail.idx, rejecting a driver that claims more pending
// chains than the ring holds.
func (q *Queue) availIdx() (uint16, error) {
	idx := ringmem.Load16(q.avail, q.availOff+ringIdx)
	if idx-q.nextAvail > q.size {
		return 0, &AvailIndexError{AvailIdx: idx, NextAvail: q.nextAvail, Size: q.size}
	}
	return idx, nil
}

// Pop takes the next available chain into c, reusing c's slices. It
// returns false when the ring is empty. Any error means the driver broke
// the protocol; the queue must not be used further.
func (q *Queue) Pop(c *Chain) (bool, error) {
	idx, err := q.availIdx()
	if err != nil {
		return false, err
	}
	if idx == q.nextAvail && q.eventIdx {
		// Ask to be notified of the next chain, then look once more: the
		// driver may have published one before it could see avail_event.
		ringmem.Store16(q.used, q.availEventOff(), q.nextAvail)
		if idx, err = q.availIdx(); err != nil {
			return false, err
		}
	}
	if idx == q.nextAvail {
		return false, nil
	}
	slot := int(q.nextAvail & (q.size - 1))
	head := binary.LittleEndian.Uint16(q.avail[q.availOff+ringHeader+2*slot:])
	q.nextAvail++
	return true, q.walk(head, c)
}

type desc struct {
	addr  uint64
	len   uint32
	flags uint16
	next  uint16
}

// readDesc copies entry i of table once, so the guest cannot change a
// field between its check and its use.
func readDesc(table []byte, i uint16) desc {
	b := table[descSize*int(i) : descSize*int(i)+descSize]
	return desc{
		addr:  binary.LittleEndian.Uint64(b[0:]),
		len:   binary.LittleEndian.Uint32(b[8:]),
		flags: binary.LittleEndian.Uint16(b[12:]),
		next:  binary.LittleEndian.Uint16(b[14:]),
	}
}

// walk follows the chain at head. Counting buffer descriptors against the
// queue size bounds the walk: a loop in the main table or in an indirect
// table runs past the count, and only one indirect table can be entered.
func (q *Queue) walk(head uint16, c *Chain) error {
	c.Head = head
	c.Readable = c.Readable[:0]
	c.Writable = c.Writable[:0]
	table, tableLen := q.desc, q.size
	inIndirect := false
	i := head
	fail := func(err error) error {
		return &ChainError{Head: head, Index: i, Indirect: inIndirect, Err: err}
	}
	for count := 0; ; {
		if i >= tableLen {
			return fail(ErrDescIndex)
		}
		d := readDesc(table, i)
		if d.flags&DescFlagIndirect != 0 {
			switch {
			case !q.indirect:
				return fail(ErrIndirectNotNegotiated)
			case inIndirect:
				return fail(ErrNestedIndirect)
			case d.flags&DescFlagNext != 0:
				return fail(ErrIndirectNext)
			case d.len == 0 || d.len%descSize != 0 || d.len/descSize > uint32(q.size):
				return fail(ErrIndirectSize)
			}
			t, err := q.mem.Slice(memory.GuestAddress(d.addr), uint64(d.len))
			if err != nil {
				return fail(err)
			}
			table, tableLen, inIndirect, i = t, uint16(d.len/descSize), true, 0
			continue
		}
		if count++; count > int(q.size) {
			return fail(ErrChainTooLong)
		}
		if _, err := q.mem.Slice(memory.GuestAddress(d.addr), uint64(d.len)); err != nil {
			return fail(err)
		}
		b := Buffer{Addr: memory.GuestAddress(d.addr), Len: d.len}
		if d.flags&DescFlagWrite != 0 {
			c.Writable = append(c.Writable, b)
		} else {
			if len(c.Writable) > 0 {
				return fail(ErrReadableAfterWritable)
			}
			c.Readable = append(c.Readable, b)
		}
		if d.flags&DescFlagNext == 0 {
			return nil
		}
		i = d.next
	}
}

// Push returns the chain at head to the driver, written being the number
// of bytes the device wrote into its writable buffers. The element is
// written before used.idx is published, and the atomic store orders them.
func (q *Queue) Push(head uint16, written uint32) error {
	if head >= q.size {
		return fmt.Errorf("virtqueue: push of head %d beyond queue size %d", head, q.size)
	}
	e := q.used[q.usedOff+ringHeader+usedElemSize*int(q.nextUsed&(q.size-1)):]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	q.nextUsed++
	ringmem.Store16(q.used, q.usedOff+ringIdx, q.nextUsed)
	return nil
}

// SignalUsed raises the queue's interrupt if the driver wants one for the
// chains pushed since the last call: with VIRTIO_F_EVENT_IDX when used.idx
// has passed used_event, otherwise unless the driver set NO_INTERRUPT.
func (q *Queue) SignalUsed() error {
	old, now := q.signalUsed, q.nextUsed
	if old == now {
		return nil
	}
	q.signalUsed = now
	if q.eventIdx {
		if !NeedEvent(ringmem.Load16(q.avail, q.usedEventOff()), now, old) {
			return nil
		}
	} else if ringmem.Load16(q.avail, q.availOff+ringFlags)&AvailFlagNoInterrupt != 0 {
		return nil
	}
	return q.irq.Trigger()
}

// NeedEvent is the spec's vring_need_event: whether moving an index from
// old to now crosses event.
func NeedEvent(event, now, old uint16) bool {
	return now-event-1 < now-old
}
