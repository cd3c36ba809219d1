package pci

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
)

// MSIRouter delivers one function's MSI-X messages. The machine implements
// it with KVM_SET_GSI_ROUTING (Route) and an irqfd per vector (Trigger).
// Both are called with the MSI-X state locked, so a masked vector can
// never fire after the guest's mask write returned; they must not call
// back into the MSIX.
type MSIRouter interface {
	// Route points vector at the MSI message (addr, data). It is called
	// before the first Trigger of a vector and whenever the guest changes
	// the message of an unmasked vector.
	Route(vector int, addr uint64, data uint32) error
	// Trigger signals vector; in the machine an eventfd write.
	Trigger(vector int) error
}

// MSI-X capability layout (PCI Local Bus 3.0, 6.8.2).
const (
	CapIDMSIX        = 0x11
	MSIXEntrySize    = 16
	MSIXMaxVectors   = 2048
	msixControl      = 2 // offset of Message Control in the capability
	msixTableReg     = 4
	msixPBAReg       = 8
	msixCapRegsLen   = 10 // after the ID and next bytes
	msixEnable       = 1 << 15
	msixFunctionMask = 1 << 14
	msixEntryMasked  = 1 // Vector Control bit 0
	msixEntryCtrl    = 12
)

type msiMessage struct {
	addr  uint64
	data  uint32
	valid bool
}

// MSIX is a function's MSI-X state: the capability's control word, the
// vector table and the pending bit array. The table and PBA live in a BAR;
// the function forwards accesses to ReadTable/WriteTable/ReadPBA.
type MSIX struct {
	router MSIRouter
	log    *slog.Logger

	mu      sync.Mutex
	enabled bool
	masked  bool // function mask
	table   []byte
	pending []bool
	routed  []msiMessage // what the router was last told per vector
}

// NewMSIX returns MSI-X state for vectors vectors, all masked. log may
// be nil for slog.Default().
func NewMSIX(vectors int, router MSIRouter, log *slog.Logger) (*MSIX, error) {
	if vectors < 1 || vectors > MSIXMaxVectors {
		return nil, fmt.Errorf("%w: %d MSI-X vectors", ErrConfig, vectors)
	}
	if log == nil {
		log = slog.Default()
	}
	m := &MSIX{
		router:  router,
		log:     log,
		table:   make([]byte, vectors*MSIXEntrySize),
		pending: make([]bool, vectors),
		routed:  make([]msiMessage, vectors),
	}
	for v := 0; v < vectors; v++ {
		m.table[v*MSIXEntrySize+msixEntryCtrl] = msixEntryMasked
	}
	return m, nil
}

// Vectors returns the table size.
func (m *MSIX) Vectors() int { return len(m.pending) }

// TableSize returns the table's size in bytes.
func (m *MSIX) TableSize() uint64 { return uint64(len(m.table)) }

// PBASize returns the pending bit array's size in bytes (whole qwords).
func (m *MSIX) PBASize() uint64 { return uint64((len(m.pending) + 63) / 64 * 8) }

// Capability returns the MSI-X capability for a table at tableOffset and
// a PBA at pbaOffset in BAR bar. Offsets must be 8-byte aligned.
func (m *MSIX) Capability(bar int, tableOffset, pbaOffset uint32) (Capability, error) {
	if bar < 0 || bar >= NumBARs || tableOffset%8 != 0 || pbaOffset%8 != 0 {
		return Capability{}, fmt.Errorf("%w: MSI-X in BAR %d at %#x/%#x", ErrConfig, bar, tableOffset, pbaOffset)
	}
	regs := make([]byte, msixCapRegsLen)
	binary.LittleEndian.PutUint16(regs[0:], uint16(len(m.pending)-1))
	binary.LittleEndian.PutUint32(regs[2:], tableOffset|uint32(bar))
	binary.LittleEndian.PutUint32(regs[6:], pbaOffset|uint32(bar))
	writable := make([]byte, msixCapRegsLen)
	binary.LittleEndian.PutUint16(writable[0:], msixEnable|msixFunctionMask)
	return Capability{ID: CapIDMSIX, Regs: regs, Writable: writable, Handler: m}, nil
}

// BeforeRead implements CapabilityHandler; the registers hold all state.
func (m *MSIX) BeforeRead([]byte, int, int) {}

// AfterWrite implements CapabilityHandler: applies Message Control.
func (m *MSIX) AfterWrite(regs []byte, off, n int) {
	if off >= msixControl+2 || off+n <= msixControl {
		return
	}
	ctrl := binary.LittleEndian.Uint16(regs[msixControl:])
	m.mu.Lock()
	defer m.mu.Unlock()
	m.enabled = ctrl&msixEnable != 0
	m.masked = ctrl&msixFunctionMask != 0
	for v := range m.pending {
		m.updateLogged(v)
	}
}

// Enabled reports whether the guest enabled MSI-X.
func (m *MSIX) Enabled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enabled
}

// entryWritable is the write mask of one table entry: the message
// address is dword aligned and only the mask bit of Vector Control is
// implemented.
var entryWritable = [MSIXEntrySize]byte{
	0xfc, 0xff, 0xff, 0xff, // address low
	0xff, 0xff, 0xff, 0xff, // address high
	0xff, 0xff, 0xff, 0xff, // data
	msixEntryMasked, 0, 0, 0, // vector control
}

// ReadTable reads the vector table at off; bytes past it read as zero.
func (m *MSIX) ReadTable(off uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(data)
	if off < uint64(len(m.table)) {
		copy(data, m.table[off:])
	}
}

// WriteTable writes the vector table at off and applies every entry the
// write touched: a newly unmasked vector is routed and its pending
// interrupt delivered.
func (m *MSIX) WriteTable(off uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= uint64(len(m.table)) {
		return
	}
	end := min(uint64(len(m.table)), off+uint64(len(data)))
	for i := off; i < end; i++ {
		w := entryWritable[i%MSIXEntrySize]
		m.table[i] = m.table[i]&^w | data[i-off]&w
	}
	for v := off / MSIXEntrySize; v <= (end-1)/MSIXEntrySize; v++ {
		m.updateLogged(int(v))
	}
}

// ReadPBA reads the pending bit array at off; writes to it are ignored
// because it is read-only.
func (m *MSIX) ReadPBA(off uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(data)
	for i := range data {
		byteOff := off + uint64(i)
		if byteOff >= m.PBASize() {
			return
		}
		for bit := 0; bit < 8; bit++ {
			if v := int(byteOff)*8 + bit; v < len(m.pending) && m.pending[v] {
				data[i] |= 1 << bit
			}
		}
	}
}

// Signal raises vector. A masked vector's interrupt is held in the PBA
// and delivered when the guest unmasks it; with MSI-X disabled the
// interrupt is dropped, as this model has no INTx.
func (m *MSIX) Signal(vector int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if vector < 0 || vector >= len(m.pending) {
		return fmt.Errorf("MSI-X vector %d out of range [0,%d)", vector, len(m.pending))
	}
	if !m.enabled {
		return nil
	}
	m.pending[vector] = true
	return m.update(vector)
}

// updateLogged is update for guest register writes, which have no caller
// to return an error to.
func (m *MSIX) updateLogged(v int) {
	if err := m.update(v); err != nil {
		m.log.Error("MSI-X delivery failed", "err", err)
	}
}

// update routes vector if it can deliver and its message changed, then
// delivers a pending interrupt. Called with mu held.
func (m *MSIX) update(v int) error {
	e := m.table[v*MSIXEntrySize : (v+1)*MSIXEntrySize]
	if !m.enabled || m.masked || e[msixEntryCtrl]&msixEntryMasked != 0 {
		return nil
	}
	msg := msiMessage{
		addr:  binary.LittleEndian.Uint64(e[0:]),
		data:  binary.LittleEndian.Uint32(e[8:]),
		valid: true,
	}
	if m.routed[v] != msg {
		if err := m.router.Route(v, msg.addr, msg.data); err != nil {
			m.routed[v] = msiMessage{}
			return fmt.Errorf("MSI-X vector %d: %w", v, err)
		}
		m.routed[v] = msg
	}
	if !m.pending[v] {
		return nil
	}
	m.pending[v] = false
	if err := m.router.Trigger(v); err != nil {
		return fmt.Errorf("MSI-X vector %d: %w", v, err)
	}
	return nil
}
