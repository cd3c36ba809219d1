package pci

import (
	"fmt"

	"github.com/gvmm-dev/gvmm/devices"
)

// RootState is the root complex's state, for snapshots: CONFIG_ADDRESS
// and the configuration space of each function, host bridge first, in
// slot order.
type RootState struct {
	ConfigAddress uint32
	Functions     [][]byte
}

// State returns the root complex's state.
func (r *Root) State() RootState {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := RootState{ConfigAddress: r.configAddr}
	for _, sl := range r.slots {
		if sl.dev != nil {
			s.Functions = append(s.Functions, sl.dev.ConfigSpace().regsCopy())
		}
	}
	return s
}

// Restore loads s into a root complex holding the same functions, added
// in the same order, and maps the BARs the restored registers decode
// (calling RootConfig.BARMapped). Only bits the guest could write are
// taken from s; the rest of each configuration space stays as built, so
// a hostile s cannot change a function's identity, capabilities or BAR
// sizes. Capability handlers are not called: devices restore their own
// state (MSIX.Restore).
func (r *Root) Restore(s RootState) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var used []int
	for i, sl := range r.slots {
		if sl.dev != nil {
			used = append(used, i)
		}
	}
	if len(s.Functions) != len(used) {
		return fmt.Errorf("pci: %w: %d functions saved, %d present", devices.ErrBadState, len(s.Functions), len(used))
	}
	for i, regs := range s.Functions {
		if len(regs) != ConfigSize {
			return fmt.Errorf("pci: %w: function %d has %d bytes of configuration space", devices.ErrBadState, i, len(regs))
		}
	}
	r.configAddr = s.ConfigAddress & configAddressMask
	for i, n := range used {
		r.slots[n].dev.ConfigSpace().restoreRegs(s.Functions[i])
		r.refresh(n)
	}
	return nil
}

func (c *ConfigSpace) regsCopy() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.regs[:]...)
}

// restoreRegs takes the writable bits of regs, which is ConfigSize long.
func (c *ConfigSpace) restoreRegs(regs []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.regs {
		c.regs[i] = c.regs[i]&^c.wmask[i] | regs[i]&c.wmask[i]
	}
}

// MSIXState is an MSI-X table's state, for snapshots.
type MSIXState struct {
	Enabled, Masked bool
	Table           []byte // MSIXEntrySize bytes per vector
	Pending         []bool // the pending bit array
}

// State returns the table's state.
func (m *MSIX) State() MSIXState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return MSIXState{Enabled: m.enabled, Masked: m.masked,
		Table: append([]byte(nil), m.table...), Pending: append([]bool(nil), m.pending...)}
}

// Restore loads s into a table of the same size, routes its unmasked
// vectors through the router and delivers the pending ones it can. Only
// bits the guest could write are taken from the table entries.
func (m *MSIX) Restore(s MSIXState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(s.Table) != len(m.table) || len(s.Pending) != len(m.pending) {
		return fmt.Errorf("pci: %w: MSI-X table of %d bytes and %d pending bits, want %d and %d",
			devices.ErrBadState, len(s.Table), len(s.Pending), len(m.table), len(m.pending))
	}
	m.enabled, m.masked = s.Enabled, s.Masked
	for i := range m.table {
		w := entryWritable[i%MSIXEntrySize]
		m.table[i] = m.table[i]&^w | s.Table[i]&w
	}
	copy(m.pending, s.Pending)
	clear(m.routed)
	for v := range m.pending {
		if err := m.update(v); err != nil {
			return err
		}
	}
	return nil
}
