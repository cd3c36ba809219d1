// Package memory is the checked view of guest physical memory that
// devices, virtio queues and boot loaders use. Every guest-controlled
// address and length goes through it: an access that leaves guest RAM
// returns an error, never panics and never touches host memory outside
// the mapped regions.
package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// GuestAddress is a guest physical address.
type GuestAddress uint64

// ErrOutOfRange reports an access that is not wholly inside one region.
var ErrOutOfRange = errors.New("guest memory access out of range")

// AccessError describes a rejected access.
type AccessError struct {
	Addr GuestAddress
	Len  uint64
}

func (e *AccessError) Error() string {
	return fmt.Sprintf("guest memory: [%#x, +%#x) is outside guest RAM", uint64(e.Addr), e.Len)
}

func (e *AccessError) Unwrap() error { return ErrOutOfRange }

// Region is one contiguous block of guest RAM backed by host memory.
type Region struct {
	Base GuestAddress
	Data []byte
}

// End returns the first address past the region.
func (r Region) End() GuestAddress { return r.Base + GuestAddress(len(r.Data)) }

// Memory is a set of sorted, non-overlapping regions.
type Memory struct {
	regions []Region
}

// New validates the regions (non-empty, no overflow, no overlap) and
// returns a Memory over them. The byte slices are used, not copied.
func New(regions ...Region) (*Memory, error) {
	rs := append([]Region(nil), regions...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Base < rs[j].Base })
	for i, r := range rs {
		if len(r.Data) == 0 {
			return nil, fmt.Errorf("guest memory: region at %#x is empty", uint64(r.Base))
		}
		if r.End() < r.Base {
			return nil, fmt.Errorf("guest memory: region at %#x wraps the address space", uint64(r.Base))
		}
		if i > 0 && rs[i-1].End() > r.Base {
			return nil, fmt.Errorf("guest memory: regions at %#x and %#x overlap", uint64(rs[i-1].Base), uint64(r.Base))
		}
	}
	return &Memory{regions: rs}, nil
}

// Regions returns the regions in address order.
func (m *Memory) Regions() []Region { return append([]Region(nil), m.regions...) }

// Size returns the total bytes of guest RAM.
func (m *Memory) Size() uint64 {
	var n uint64
	for _, r := range m.regions {
		n += uint64(len(r.Data))
	}
	return n
}

// Slice returns the host bytes backing [addr, addr+n). The range must lie
// inside a single region. The slice aliases guest memory: the guest may
// change it concurrently, so callers copy before validating contents.
func (m *Memory) Slice(addr GuestAddress, n uint64) ([]byte, error) {
	i := sort.Search(len(m.regions), func(i int) bool { return m.regions[i].End() > addr })
	if i == len(m.regions) || addr < m.regions[i].Base {
		return nil, &AccessError{Addr: addr, Len: n}
	}
	r := m.regions[i]
	off := uint64(addr - r.Base)
	if n > uint64(len(r.Data))-off {
		return nil, &AccessError{Addr: addr, Len: n}
	}
	return r.Data[off : off+n : off+n], nil
}

// ReadAt copies len(p) bytes from guest address addr into p.
func (m *Memory) ReadAt(p []byte, addr GuestAddress) error {
	s, err := m.Slice(addr, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// WriteAt copies p into guest memory at addr.
func (m *Memory) WriteAt(p []byte, addr GuestAddress) error {
	s, err := m.Slice(addr, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}

// Uint16 reads a little-endian 16-bit value.
func (m *Memory) Uint16(addr GuestAddress) (uint16, error) {
	s, err := m.Slice(addr, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s), nil
}

// Uint32 reads a little-endian 32-bit value.
func (m *Memory) Uint32(addr GuestAddress) (uint32, error) {
	s, err := m.Slice(addr, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(s), nil
}

// Uint64 reads a little-endian 64-bit value.
func (m *Memory) Uint64(addr GuestAddress) (uint64, error) {
	s, err := m.Slice(addr, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(s), nil
}

// PutUint16 writes a little-endian 16-bit value.
func (m *Memory) PutUint16(addr GuestAddress, v uint16) error {
	s, err := m.Slice(addr, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(s, v)
	return nil
}

// PutUint32 writes a little-endian 32-bit value.
func (m *Memory) PutUint32(addr GuestAddress, v uint32) error {
	s, err := m.Slice(addr, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(s, v)
	return nil
}

// PutUint64 writes a little-endian 64-bit value.
func (m *Memory) PutUint64(addr GuestAddress, v uint64) error {
	s, err := m.Slice(addr, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(s, v)
	return nil
}
