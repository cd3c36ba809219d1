package serial

import (
	"bytes"
	"io"
	"testing"
)

// Fuzz op encoding, two bytes per op: the first selects the access, the
// second is the value written or the byte enqueued.
const (
	fuzzOpWrite   = 0x80 // write rather than read
	fuzzOpEnqueue = 0x10 // host input instead of a register access
	fuzzOffMask   = 0x0f // offsets 0-15: past the UART's 8 as well
	fuzzWidthSh   = 5    // bits 6:5 select the width
)

var fuzzWidths = [4]int{1, 2, 4, 8}

// FuzzUART drives the register interface with random access sequences and
// checks the invariants a hostile guest must not break.
func FuzzUART(f *testing.F) {
	f.Add([]byte{fuzzOpWrite | regIER, ierMask, fuzzOpWrite | regData, 'x', regIIR, 0})
	f.Add([]byte{fuzzOpWrite | regIIR, fcrEnable | 0xc0, fuzzOpEnqueue, 'a', regIIR, 0, regData, 0})
	f.Add([]byte{fuzzOpWrite | regMCR, mcrLoop | mcrRTS, fuzzOpWrite | regData, 'q', regMSR, 0, regLSR, 0})
	f.Add([]byte{fuzzOpWrite | regLCR, lcrDLAB, fuzzOpWrite | regData, 0, fuzzOpWrite | regIER, 0, fuzzOpWrite | regLCR, 3})
	f.Add([]byte{fuzzOpWrite | 2<<fuzzWidthSh | 9, 0xff, 3<<fuzzWidthSh | regLSR, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		s := New(&countingIRQ{}, io.Discard, nil)
		for i := 0; i+1 < len(ops); i += 2 {
			op, v := ops[i], ops[i+1]
			if op&fuzzOpEnqueue != 0 {
				s.Enqueue([]byte{v})
				continue
			}
			off := uint64(op & fuzzOffMask)
			data := bytes.Repeat([]byte{v}, fuzzWidths[op>>fuzzWidthSh&3])
			if op&fuzzOpWrite != 0 {
				s.Write(off, data)
				continue
			}
			s.Read(off, data)
			if (len(data) != 1 || off >= Size) && !bytes.Equal(data, bytes.Repeat([]byte{0xff}, len(data))) {
				t.Fatalf("undecoded read at %d width %d returned %x", off, len(data), data)
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.rx.len() > s.rxCapacity() {
			t.Fatalf("receive FIFO holds %d bytes, capacity %d", s.rx.len(), s.rxCapacity())
		}
		if s.lastPending != s.pending() {
			t.Fatalf("interrupt state %#x out of date, pending %#x", s.lastPending, s.pending())
		}
	})
}
