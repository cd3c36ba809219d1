// Package pci emulates a PCI root complex for bus 0: configuration access
// through ports 0xCF8/0xCFC and through ECAM, a host bridge, type-0
// configuration headers for endpoints, memory BAR allocation and
// decoding, and MSI-X.
//
// Design: the root complex owns BAR decoding. Endpoints describe their
// BARs in their ConfigSpace; after every configuration write the root
// re-reads the BAR registers and the command register and routes MMIO
// accesses inside its windows to the endpoint's ReadBAR/WriteBAR by the
// BAR's current address. The machine inserts each window once on its
// MMIO bus and never remaps anything; an optional callback reports BAR
// moves so the machine can re-register ioeventfds.
package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Configuration space sizes.
const (
	ConfigSize       = 4096 // PCI Express extended configuration space
	legacyConfigSize = 256  // where capabilities must live
)

// Type-0 header register offsets.
const (
	RegVendorID          = 0x00
	RegDeviceID          = 0x02
	RegCommand           = 0x04
	RegStatus            = 0x06
	RegRevision          = 0x08
	RegClass             = 0x09 // prog-if, subclass, class: 3 bytes
	RegCacheLineSize     = 0x0c
	RegLatencyTimer      = 0x0d
	RegHeaderType        = 0x0e
	RegBAR0              = 0x10
	RegSubsystemVendorID = 0x2c
	RegSubsystemID       = 0x2e
	RegExpansionROM      = 0x30
	RegCapabilities      = 0x34
	RegInterruptLine     = 0x3c
	RegInterruptPin      = 0x3d
)

// Command register bits.
const (
	CommandMemory      = 1 << 1
	CommandBusMaster   = 1 << 2
	CommandParity      = 1 << 6
	CommandSERR        = 1 << 8
	CommandINTxDisable = 1 << 10
)

// StatusCapabilities is the status register bit announcing a
// capabilities list.
const StatusCapabilities = 1 << 4

// NumBARs is the number of BAR registers in a type-0 header.
const NumBARs = 6

// Memory BAR register type bits.
const (
	barMem64        = 0x4
	barPrefetchable = 0x8
	barFlagsMask    = 0xf
)

const capStart = 0x40 // first byte after the type-0 header

// BARKind is the type of a memory BAR.
type BARKind uint8

const (
	BARMem32 BARKind = iota // 32-bit memory BAR
	BARMem64                // 64-bit memory BAR, using the next register for the high half
)

// BAR describes one memory BAR. Size 0 means the register is unused.
type BAR struct {
	Size         uint64 // power of two, at least 16
	Kind         BARKind
	Prefetchable bool
}

// Header is the identity and resources of a type-0 function.
type Header struct {
	VendorID, DeviceID uint16
	Revision           uint8
	Class              uint32 // class<<16 | subclass<<8 | prog-if
	SubsystemVendorID  uint16
	SubsystemID        uint16
	InterruptPin       uint8 // 0 for none, 1-4 for INTA#-INTD#
	BARs               [NumBARs]BAR
}

// Capability is a capability-list entry. Regs are its registers after
// the ID and next-pointer bytes; Writable gives the guest-writable bits of
// each of those bytes (nil: read-only). Handler, if set, is told of reads
// and writes.
type Capability struct {
	ID       uint8
	Regs     []byte
	Writable []byte
	Handler  CapabilityHandler
}

// CapabilityHandler gives a capability side effects. Both methods get the
// capability's registers starting at its ID byte, and the accessed range
// relative to it; they run with the configuration space locked and must
// not call back into it.
type CapabilityHandler interface {
	// BeforeRead may refresh regs before a read of [off, off+n).
	BeforeRead(regs []byte, off, n int)
	// AfterWrite acts on a write of [off, off+n), already merged into regs.
	AfterWrite(regs []byte, off, n int)
}

type capability struct {
	off, len int
	handler  CapabilityHandler
}

// ConfigSpace is a type-0 function's configuration space: registers with
// per-bit write masks, so every access at any offset and width is decoded
// the same way and nothing the guest writes can leave a read-only bit
// changed. Reads past the implemented space return zeros.
type ConfigSpace struct {
	mu      sync.Mutex
	regs    [ConfigSize]byte
	wmask   [ConfigSize]byte
	bars    [NumBARs]BAR
	caps    []capability
	nextCap int
}

// ErrConfig reports an invalid header or capability.
var ErrConfig = errors.New("invalid PCI configuration")

// NewConfigSpace lays out a type-0 header.
func NewConfigSpace(h Header) (*ConfigSpace, error) {
	c := &ConfigSpace{nextCap: capStart}
	le := binary.LittleEndian
	le.PutUint16(c.regs[RegVendorID:], h.VendorID)
	le.PutUint16(c.regs[RegDeviceID:], h.DeviceID)
	c.regs[RegRevision] = h.Revision
	c.regs[RegClass] = byte(h.Class)
	c.regs[RegClass+1] = byte(h.Class >> 8)
	c.regs[RegClass+2] = byte(h.Class >> 16)
	le.PutUint16(c.regs[RegSubsystemVendorID:], h.SubsystemVendorID)
	le.PutUint16(c.regs[RegSubsystemID:], h.SubsystemID)
	c.regs[RegInterruptPin] = h.InterruptPin
	if h.InterruptPin > 4 {
		return nil, fmt.Errorf("%w: interrupt pin %d", ErrConfig, h.InterruptPin)
	}
	le.PutUint16(c.wmask[RegCommand:], CommandMemory|CommandBusMaster|CommandParity|CommandSERR|CommandINTxDisable)
	c.wmask[RegCacheLineSize] = 0xff
	c.wmask[RegLatencyTimer] = 0xff
	c.wmask[RegInterruptLine] = 0xff
	for i := 0; i < NumBARs; i++ {
		b := h.BARs[i]
		if b.Size == 0 {
			continue
		}
		if b.Size < 16 || b.Size&(b.Size-1) != 0 {
			return nil, fmt.Errorf("%w: BAR %d size %#x is not a power of two of at least 16", ErrConfig, i, b.Size)
		}
		mask := ^(b.Size - 1)
		reg := RegBAR0 + 4*i
		flags := uint32(0)
		if b.Prefetchable {
			flags |= barPrefetchable
		}
		switch b.Kind {
		case BARMem32:
			if b.Size > 1<<31 {
				return nil, fmt.Errorf("%w: 32-bit BAR %d of %#x bytes", ErrConfig, i, b.Size)
			}
		case BARMem64:
			if i == NumBARs-1 || h.BARs[i+1].Size != 0 {
				return nil, fmt.Errorf("%w: 64-bit BAR %d needs register %d free", ErrConfig, i, i+1)
			}
			flags |= barMem64
			le.PutUint32(c.wmask[reg+4:], uint32(mask>>32))
		default:
			return nil, fmt.Errorf("%w: BAR %d kind %d", ErrConfig, i, b.Kind)
		}
		le.PutUint32(c.regs[reg:], flags)
		le.PutUint32(c.wmask[reg:], uint32(mask)&^barFlagsMask)
		c.bars[i] = b
		if b.Kind == BARMem64 {
			i++
		}
	}
	return c, nil
}

// AddCapability appends a capability to the list and returns its offset.
func (c *ConfigSpace) AddCapability(cp Capability) (int, error) {
	if cp.Writable != nil && len(cp.Writable) != len(cp.Regs) {
		return 0, fmt.Errorf("%w: capability %#x write mask length", ErrConfig, cp.ID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 2 + len(cp.Regs)
	off := c.nextCap
	if off+n > legacyConfigSize {
		return 0, fmt.Errorf("%w: capability %#x does not fit in configuration space", ErrConfig, cp.ID)
	}
	c.regs[off] = cp.ID
	copy(c.regs[off+2:], cp.Regs)
	copy(c.wmask[off+2:], cp.Writable)
	if len(c.caps) == 0 {
		c.regs[RegCapabilities] = byte(off)
		binary.LittleEndian.PutUint16(c.regs[RegStatus:], StatusCapabilities)
	} else {
		c.regs[c.caps[len(c.caps)-1].off+1] = byte(off)
	}
	c.caps = append(c.caps, capability{off: off, len: n, handler: cp.Handler})
	c.nextCap = (off + n + 3) &^ 3
	return off, nil
}

// clamp returns the part of [off, off+n) inside the configuration space.
func clamp(off uint64, n int) (start, end int) {
	if off >= ConfigSize {
		return 0, 0
	}
	end64 := off + uint64(n)
	if end64 > ConfigSize {
		end64 = ConfigSize
	}
	return int(off), int(end64)
}

// forCaps calls fn for each capability with a handler that overlaps
// [start, end), with the overlap relative to the capability.
func (c *ConfigSpace) forCaps(start, end int, fn func(h CapabilityHandler, regs []byte, off, n int)) {
	for _, cp := range c.caps {
		s, e := max(start, cp.off), min(end, cp.off+cp.len)
		if cp.handler == nil || s >= e {
			continue
		}
		fn(cp.handler, c.regs[cp.off:cp.off+cp.len], s-cp.off, e-s)
	}
}

// Read reads len(data) bytes at off; bytes past the space read as zero.
func (c *ConfigSpace) Read(off uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	start, end := clamp(off, len(data))
	c.forCaps(start, end, CapabilityHandler.BeforeRead)
	clear(data)
	copy(data, c.regs[start:end])
}

// Write writes data at off through the write masks; bytes past the space
// are dropped.
func (c *ConfigSpace) Write(off uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	start, end := clamp(off, len(data))
	for i := start; i < end; i++ {
		c.regs[i] = c.regs[i]&^c.wmask[i] | data[i-start]&c.wmask[i]
	}
	c.forCaps(start, end, CapabilityHandler.AfterWrite)
}

// BARs returns the BAR descriptions, indexed by register.
func (c *ConfigSpace) BARs() [NumBARs]BAR { return c.bars }

// BARAddress returns the address currently programmed in BAR i.
func (c *ConfigSpace) BARAddress(i int) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.barAddress(i)
}

func (c *ConfigSpace) barAddress(i int) uint64 {
	reg := RegBAR0 + 4*i
	addr := uint64(binary.LittleEndian.Uint32(c.regs[reg:]) &^ barFlagsMask)
	if c.bars[i].Kind == BARMem64 {
		addr |= uint64(binary.LittleEndian.Uint32(c.regs[reg+4:])) << 32
	}
	return addr
}

// setBARAddress places BAR i at addr, as firmware would.
func (c *ConfigSpace) setBARAddress(i int, addr uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	reg := RegBAR0 + 4*i
	le := binary.LittleEndian
	le.PutUint32(c.regs[reg:], le.Uint32(c.regs[reg:])&barFlagsMask|uint32(addr)&^barFlagsMask)
	if c.bars[i].Kind == BARMem64 {
		le.PutUint32(c.regs[reg+4:], uint32(addr>>32))
	}
}

// Command returns the command register.
func (c *ConfigSpace) Command() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return binary.LittleEndian.Uint16(c.regs[RegCommand:])
}
