package pci

import (
	"encoding/binary"
	"testing"
)

// fuzzMaxOps bounds an input's work so minimizing stays quick.
const fuzzMaxOps = 256

// FuzzConfigWrite feeds a root complex a sequence of guest accesses: each
// 8-byte record is an operation, a width, an offset and a value. Nothing
// may panic, identity registers must stay as they were, BARs must stay
// aligned to their size and only BARs inside the windows may be decoded.
func FuzzConfigWrite(f *testing.F) {
	f.Fuzz(func(t *testing.T, ops []byte) {
		router := &fakeRouter{}
		m, err := NewMSIX(4, router, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := m.Capability(0, 0, 0x800)
		if err != nil {
			t.Fatal(err)
		}
		d := newTestDevice(t, [NumBARs]BAR{{Size: 0x1000}, {Size: 0x4000, Kind: BARMem64}}, c)
		r := newRoot(t, nil)
		if _, err := r.Add(d); err != nil {
			t.Fatal(err)
		}
		win := r.MMIOWindows()[0].Device
		for n := 0; len(ops) >= 8 && n < fuzzMaxOps; ops, n = ops[8:], n+1 {
			width := 1 << (ops[1] % 4)
			off := uint64(binary.LittleEndian.Uint16(ops[2:]))
			buf := make([]byte, width)
			copy(buf, ops[4:8])
			switch ops[0] % 6 {
			case 0:
				r.ECAM().Write(1<<15|off&0xfff, buf)
			case 1:
				r.ECAM().Read(off<<4, buf)
			case 2:
				r.PortIO().Write(off%8, buf)
			case 3:
				r.PortIO().Read(off%8, buf)
			case 4:
				win.Write(off<<2, buf)
				win.Read(off<<2, buf)
			case 5:
				_ = m.Signal(int(off % 5))
			}
		}
		if got := rd(d.cs, RegVendorID, 4); got != 0x10421af4 {
			t.Fatalf("IDs changed to %#x", got)
		}
		for i, b := range d.cs.BARs() {
			if b.Size != 0 && d.cs.BARAddress(i)&(b.Size-1) != 0 {
				t.Fatalf("BAR %d at %#x is not aligned to %#x", i, d.cs.BARAddress(i), b.Size)
			}
		}
		for _, rt := range r.routes {
			if !testWindows[0].contains(rt.Base, rt.Size) && !testWindows[1].contains(rt.Base, rt.Size) {
				t.Fatalf("BAR decoded outside the windows at %#x", rt.Base)
			}
		}
	})
}
