package serial

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countingIRQ counts triggers.
type countingIRQ struct{ n atomic.Int64 }

func (c *countingIRQ) Trigger() error { c.n.Add(1); return nil }

func (c *countingIRQ) count() int { return int(c.n.Load()) }

// syncBuffer is a bytes.Buffer safe for the concurrent tests.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTest(t testing.TB) (*Serial, *countingIRQ, *syncBuffer) {
	t.Helper()
	irq := &countingIRQ{}
	out := &syncBuffer{}
	return New(irq, out, nil), irq, out
}

func rd(s *Serial, off uint64) byte {
	b := []byte{0}
	s.Read(off, b)
	return b[0]
}

func wr(s *Serial, off uint64, v byte) { s.Write(off, []byte{v}) }

func TestPowerOnState(t *testing.T) {
	tests := []struct {
		name string
		off  uint64
		want byte
	}{
		{"RBR empty", regData, 0},
		{"IER", regIER, 0},
		{"IIR no interrupt, FIFO off", regIIR, iirNone},
		{"LCR", regLCR, 0},
		{"MCR", regMCR, 0},
		{"LSR transmitter empty", regLSR, lsrTHRE | lsrTEMT},
		{"MSR modem ready", regMSR, msrCTS | msrDSR | msrDCD},
		{"SCR", regSCR, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, irq, _ := newTest(t)
			assert.Equal(t, tt.want, rd(s, tt.off))
			assert.Zero(t, irq.count())
		})
	}
}

func TestDivisorLatch(t *testing.T) {
	s, irq, out := newTest(t)
	wr(s, regIER, ierERBFI)
	wr(s, regLCR, lcrDLAB|0x03)
	assert.Equal(t, byte(defaultDivisor), rd(s, regData), "DLL power-on value must be nonzero")
	assert.Equal(t, byte(0), rd(s, regIER), "DLM power-on value")

	wr(s, regData, 0x0c)
	wr(s, regIER, 0x01)
	assert.Equal(t, byte(0x0c), rd(s, regData))
	assert.Equal(t, byte(0x01), rd(s, regIER))
	assert.Empty(t, out.String(), "a DLL write must not transmit")
	assert.Equal(t, byte(lcrDLAB|0x03), rd(s, regLCR))

	wr(s, regLCR, 0x03)
	assert.Equal(t, byte(ierERBFI), rd(s, regIER), "IER survives DLAB")
	wr(s, regData, 'x')
	assert.Equal(t, "x", out.String())
	wr(s, regLCR, lcrDLAB)
	assert.Equal(t, byte(0x0c), rd(s, regData), "DLL survives THR writes")
	assert.Equal(t, byte(0x01), rd(s, regIER), "DLM survives IER writes")
	assert.Zero(t, irq.count())
}

func TestScratchAndLCR(t *testing.T) {
	for _, v := range []byte{0x00, 0x5a, 0xa5, 0xff} {
		s, _, _ := newTest(t)
		wr(s, regSCR, v)
		assert.Equal(t, v, rd(s, regSCR))
		wr(s, regLCR, v&^lcrDLAB)
		assert.Equal(t, v&^lcrDLAB, rd(s, regLCR))
	}
}

func TestIERMasksReservedBits(t *testing.T) {
	s, _, _ := newTest(t)
	wr(s, regIER, 0xff)
	assert.Equal(t, byte(ierMask), rd(s, regIER))
	wr(s, regIER, 0)
	assert.Equal(t, byte(0), rd(s, regIER))
}

func TestTransmit(t *testing.T) {
	s, irq, out := newTest(t)
	for _, b := range []byte("hello\r\n") {
		wr(s, regData, b)
	}
	assert.Equal(t, "hello\r\n", out.String())
	assert.Equal(t, byte(lsrTHRE|lsrTEMT), rd(s, regLSR))
	assert.Zero(t, irq.count(), "no interrupt with ETBEI clear")
}

// TestTHREInterrupt walks the THR-empty interrupt through the sequences
// Linux uses: the startup test that ETBEI re-raises it, and the transmit
// loop that writes THR after acknowledging via IIR.
func TestTHREInterrupt(t *testing.T) {
	s, irq, out := newTest(t)

	wr(s, regIER, ierETBEI)
	assert.Equal(t, 1, irq.count(), "setting ETBEI with THR empty raises the interrupt")
	assert.Equal(t, byte(iirTHREmpty), rd(s, regIIR))
	assert.Equal(t, byte(iirNone), rd(s, regIIR), "reading IIR acknowledged THRE")

	wr(s, regIER, 0)
	wr(s, regIER, ierETBEI)
	assert.Equal(t, 2, irq.count())
	assert.Equal(t, byte(iirTHREmpty), rd(s, regIIR), "ETBEI re-enabled re-raises THRE")

	wr(s, regIER, ierETBEI|ierERBFI) // ETBEI already set: no new edge
	assert.Equal(t, 2, irq.count())
	assert.Equal(t, byte(iirNone), rd(s, regIIR))

	for i, b := range []byte("abc") {
		wr(s, regData, b)
		assert.Equal(t, 3+i, irq.count(), "every transmitted byte empties THR again")
	}
	assert.Equal(t, "abc", out.String())

	// Unacknowledged THRE stays pending; a THR write acknowledges and
	// re-raises it, so the guest still gets an edge per byte.
	assert.Equal(t, byte(iirTHREmpty), rd(s, regIIR))
	wr(s, regIER, 0)
	wr(s, regData, 'd')
	assert.Equal(t, 5, irq.count(), "no interrupt while ETBEI is clear")
	assert.Equal(t, byte(iirNone), rd(s, regIIR))
}

func TestReceive(t *testing.T) {
	s, irq, _ := newTest(t)
	assert.Equal(t, 1, s.Enqueue([]byte("ab")), "16450 mode holds one byte")
	assert.Zero(t, irq.count(), "ERBFI clear")
	assert.Equal(t, byte(lsrDR|lsrTHRE|lsrTEMT), rd(s, regLSR))

	wr(s, regIER, ierERBFI)
	assert.Equal(t, 1, irq.count(), "enabling ERBFI with data waiting raises the interrupt")
	assert.Equal(t, byte(iirRxData), rd(s, regIIR))
	assert.Equal(t, byte('a'), rd(s, regData))
	assert.Equal(t, byte(iirNone), rd(s, regIIR))
	assert.Equal(t, byte(lsrTHRE|lsrTEMT), rd(s, regLSR))

	assert.Equal(t, 1, s.Enqueue([]byte("b")))
	assert.Equal(t, 2, irq.count())
	assert.Equal(t, 0, s.Enqueue([]byte("c")), "full: input waits on the host side")
	assert.Equal(t, 2, irq.count())
	assert.Equal(t, byte('b'), rd(s, regData))
	assert.Equal(t, byte(0), rd(s, regData), "empty RBR reads zero")
}

func TestFIFO(t *testing.T) {
	tests := []struct {
		name      string
		fcr       byte
		enqueue   int
		wantTaken int
		wantIIR   byte
	}{
		{"trigger 1", fcrEnable, 1, 1, iirFIFOEnabled | iirRxData},
		{"below trigger 4 is a timeout", fcrEnable | 0x40, 3, 3, iirFIFOEnabled | iirCharTimeout},
		{"at trigger 4", fcrEnable | 0x40, 4, 4, iirFIFOEnabled | iirRxData},
		{"below trigger 8", fcrEnable | 0x80, 7, 7, iirFIFOEnabled | iirCharTimeout},
		{"at trigger 14", fcrEnable | 0xc0, 14, 14, iirFIFOEnabled | iirRxData},
		{"fill", fcrEnable | 0xc0, 200, rxFIFOSize, iirFIFOEnabled | iirRxData},
		{"trigger bits ignored without enable", 0xc0, 3, 1, iirRxData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, irq, _ := newTest(t)
			wr(s, regIIR, tt.fcr)
			wr(s, regIER, ierERBFI)
			in := bytes.Repeat([]byte{'z'}, tt.enqueue)
			assert.Equal(t, tt.wantTaken, s.Enqueue(in))
			assert.Equal(t, 1, irq.count())
			assert.Equal(t, tt.wantIIR, rd(s, regIIR))
			for range tt.wantTaken {
				assert.Equal(t, byte('z'), rd(s, regData))
			}
			assert.Zero(t, rd(s, regLSR)&lsrDR)
		})
	}
}

func TestFCRClears(t *testing.T) {
	tests := []struct {
		name   string
		fcr    byte
		wantDR bool
	}{
		{"clear RX", fcrEnable | fcrClearRx, false},
		{"clear TX only", fcrEnable | fcrClearTx, true},
		{"disable FIFO", 0, false},
		{"rewrite enable", fcrEnable, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := newTest(t)
			wr(s, regIIR, fcrEnable)
			require.Equal(t, 5, s.Enqueue([]byte("hello")))
			<-s.Ready() // drain the token FCR left
			wr(s, regIIR, tt.fcr)
			assert.Equal(t, tt.wantDR, rd(s, regLSR)&lsrDR != 0)
			if !tt.wantDR {
				select {
				case <-s.Ready():
				default:
					t.Fatal("clearing the FIFO did not signal room")
				}
			}
		})
	}
}

func TestOverrun(t *testing.T) {
	s, irq, out := newTest(t)
	wr(s, regIIR, fcrEnable)
	wr(s, regMCR, mcrLoop)
	wr(s, regIER, ierELSI)
	for i := range rxFIFOSize {
		wr(s, regData, byte(i))
	}
	assert.Zero(t, irq.count())
	assert.Equal(t, byte(lsrDR|lsrTHRE|lsrTEMT), rd(s, regLSR))

	wr(s, regData, 0xee) // one too many
	assert.Equal(t, 1, irq.count(), "overrun raises a line status interrupt")
	assert.Equal(t, byte(iirFIFOEnabled|iirLineStatus), rd(s, regIIR))
	assert.Equal(t, byte(lsrDR|lsrOE|lsrTHRE|lsrTEMT), rd(s, regLSR))
	assert.Equal(t, byte(lsrDR|lsrTHRE|lsrTEMT), rd(s, regLSR), "reading LSR clears OE")
	assert.Equal(t, byte(iirFIFOEnabled|iirNone), rd(s, regIIR))
	for i := range rxFIFOSize {
		require.Equal(t, byte(i), rd(s, regData), "the overrunning byte is dropped, not the FIFO")
	}
	assert.Empty(t, out.String(), "loopback transmits nothing")
}

func TestLoopback(t *testing.T) {
	tests := []struct {
		name    string
		mcr     byte
		wantMSR byte // line bits only
	}{
		{"nothing asserted", mcrLoop, 0},
		{"RTS drives CTS", mcrLoop | mcrRTS, msrCTS},
		{"DTR drives DSR", mcrLoop | mcrDTR, msrDSR},
		{"OUT1 drives RI", mcrLoop | mcrOUT1, msrRI},
		{"OUT2 drives DCD", mcrLoop | mcrOUT2, msrDCD},
		// Linux's autoconfig loopback test writes LOOP|0x0A and wants 0x90.
		{"Linux probe", mcrLoop | mcrRTS | mcrOUT2, msrCTS | msrDCD},
		{"all", mcrMask, msrCTS | msrDSR | msrRI | msrDCD},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, out := newTest(t)
			wr(s, regMCR, tt.mcr)
			assert.Equal(t, tt.mcr, rd(s, regMCR))
			assert.Equal(t, tt.wantMSR, rd(s, regMSR)&0xf0)
			assert.Zero(t, s.Enqueue([]byte("x")), "the receiver is off the line in loopback")
			wr(s, regData, 'q')
			assert.Equal(t, byte('q'), rd(s, regData))
			assert.Empty(t, out.String())
		})
	}
}

func TestModemStatusDeltas(t *testing.T) {
	s, irq, _ := newTest(t)
	wr(s, regIER, ierEDSSI)
	wr(s, regMCR, mcrLoop|mcrRTS|mcrDTR|mcrOUT1|mcrOUT2)
	// Entering loopback with every output set: CTS, DSR, DCD stay
	// asserted, RI rises (a rising RI is not a trailing edge).
	assert.Zero(t, irq.count())
	assert.Equal(t, byte(msrCTS|msrDSR|msrRI|msrDCD), rd(s, regMSR))

	wr(s, regMCR, mcrLoop)
	assert.Equal(t, 1, irq.count())
	assert.Equal(t, byte(iirModemStatus), rd(s, regIIR))
	assert.Equal(t, byte(msrDCTS|msrDDSR|msrTERI|msrDDCD), rd(s, regMSR))
	assert.Equal(t, byte(0), rd(s, regMSR), "reading MSR clears the deltas")
	assert.Equal(t, byte(iirNone), rd(s, regIIR))

	wr(s, regMCR, mcrLoop|mcrRTS)
	assert.Equal(t, 2, irq.count())
	assert.Equal(t, byte(msrDCTS|msrCTS), rd(s, regMSR))

	wr(s, regMCR, 0) // back on the line: modem ready again
	assert.Equal(t, 3, irq.count())
	assert.Equal(t, byte(msrDDSR|msrDDCD|msrCTS|msrDSR|msrDCD), rd(s, regMSR))
}

func TestIIRPriority(t *testing.T) {
	// setup leaves every condition pending: overrun, data, THRE, modem.
	setup := func(s *Serial) {
		wr(s, regIIR, fcrEnable)
		wr(s, regMCR, mcrLoop)
		for range rxFIFOSize + 1 {
			wr(s, regData, 'x')
		}
		wr(s, regMCR, mcrLoop|mcrRTS) // DCTS
	}
	tests := []struct {
		name string
		ier  byte
		want byte
	}{
		{"line status first", ierMask, iirLineStatus},
		{"then data", ierERBFI | ierETBEI | ierEDSSI, iirRxData},
		{"then THR empty", ierETBEI | ierEDSSI, iirTHREmpty},
		{"then modem status", ierEDSSI, iirModemStatus},
		{"nothing enabled", 0, iirNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := newTest(t)
			setup(s)
			wr(s, regIER, tt.ier)
			assert.Equal(t, iirFIFOEnabled|tt.want, rd(s, regIIR))
		})
	}
}

// TestLinuxAutoconfig replays the register probes by which Linux's 8250
// driver decides the port is a 16550A.
func TestLinuxAutoconfig(t *testing.T) {
	s, _, _ := newTest(t)
	wr(s, regIER, 0)
	assert.Equal(t, byte(0), rd(s, regIER)&0x0f)
	wr(s, regIER, 0x0f)
	assert.Equal(t, byte(0x0f), rd(s, regIER)&0x0f)
	wr(s, regIER, 0)

	wr(s, regIIR, fcrEnable)
	assert.Equal(t, byte(3), rd(s, regIIR)>>6, "IIR[7:6]=3 identifies a 16550A")

	// No EFR: with LCR=0xBF offset 2 is still IIR, which is never zero.
	wr(s, regLCR, 0xbf)
	assert.NotZero(t, rd(s, regIIR))
	wr(s, regLCR, 0)
	// Not a 16750: FCR bit 5 does not turn on IIR bit 5.
	wr(s, regIIR, fcrEnable|0x20)
	assert.Equal(t, byte(iirFIFOEnabled|iirNone), rd(s, regIIR))
}

func TestAccessWidthsAndOffsets(t *testing.T) {
	for off := uint64(0); off < 16; off++ {
		for _, width := range []int{1, 2, 4, 8} {
			s, _, _ := newTest(t)
			data := bytes.Repeat([]byte{0x5a}, width)
			assert.NotPanics(t, func() {
				s.Write(off, data)
				s.Read(off, data)
			}, "offset %d width %d", off, width)
			if width != 1 || off >= Size {
				assert.Equal(t, bytes.Repeat([]byte{0xff}, width), data, "offset %d width %d", off, width)
			}
		}
	}
	s, _, out := newTest(t)
	s.Write(regSCR, []byte{1, 2})
	s.Write(regData, []byte{'a', 'b', 'c', 'd'})
	assert.Equal(t, byte(0), rd(s, regSCR), "a wide write is ignored")
	assert.Empty(t, out.String())
}

type failingWriter struct{ calls atomic.Int64 }

func (w *failingWriter) Write([]byte) (int, error) {
	w.calls.Add(1)
	return 0, errors.New("console gone")
}

// countingHandler counts log records.
type countingHandler struct {
	slog.Handler
	n *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(context.Context, slog.Record) error { h.n.Add(1); return nil }

func TestOutputErrorLoggedOnce(t *testing.T) {
	var logged atomic.Int64
	w := &failingWriter{}
	irq := &countingIRQ{}
	s := New(irq, w, slog.New(countingHandler{slog.DiscardHandler, &logged}))
	wr(s, regIER, ierETBEI)
	for range 3 {
		wr(s, regData, 'x')
	}
	assert.Equal(t, int64(3), w.calls.Load(), "output keeps being attempted")
	assert.Equal(t, int64(1), logged.Load())
	assert.Equal(t, byte(lsrTHRE|lsrTEMT), rd(s, regLSR), "the guest never sees the failure")
	assert.Equal(t, 4, irq.count())
}

type failingIRQ struct{}

func (failingIRQ) Trigger() error { return errors.New("irqfd closed") }

func TestTriggerErrorLoggedOnce(t *testing.T) {
	var logged atomic.Int64
	s := New(failingIRQ{}, io.Discard, slog.New(countingHandler{slog.DiscardHandler, &logged}))
	wr(s, regIER, ierETBEI)
	wr(s, regData, 'x')
	assert.Equal(t, int64(1), logged.Load())
}

// guestReader drains the UART like a polling guest until it has n bytes.
func guestReader(s *Serial, n int) []byte {
	var got []byte
	for len(got) < n {
		if rd(s, regLSR)&lsrDR != 0 {
			got = append(got, rd(s, regData))
		} else {
			time.Sleep(10 * time.Microsecond)
		}
	}
	return got
}

func TestPump(t *testing.T) {
	s, _, _ := newTest(t)
	wr(s, regIIR, fcrEnable)
	in := bytes.Repeat([]byte("0123456789"), 100) // far more than the FIFO
	done := make(chan error, 1)
	go func() { done <- s.Pump(context.Background(), bytes.NewReader(in)) }()
	assert.Equal(t, in, guestReader(s, len(in)))
	assert.NoError(t, <-done, "EOF ends the pump cleanly")
}

func TestPumpBackPressureAndCancel(t *testing.T) {
	s, _, _ := newTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Pump(ctx, bytes.NewReader([]byte("abc"))) }()
	// The guest never reads: the pump must wait, holding the rest.
	select {
	case err := <-done:
		t.Fatalf("pump returned %v while input was pending", err)
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
	assert.Equal(t, byte('a'), rd(s, regData), "16450 mode took one byte")
	assert.Zero(t, rd(s, regLSR)&lsrDR)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestPumpReadError(t *testing.T) {
	s, _, _ := newTest(t)
	assert.ErrorIs(t, s.Pump(context.Background(), errReader{}), io.ErrClosedPipe)
}

// TestConcurrent exercises the locking under -race: two vCPUs and the
// input pump on one UART.
func TestConcurrent(t *testing.T) {
	s, _, out := newTest(t)
	wr(s, regIIR, fcrEnable)
	wr(s, regIER, ierMask)
	in := bytes.Repeat([]byte("input"), 200)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		assert.NoError(t, s.Pump(context.Background(), bytes.NewReader(in)))
	}()
	go func() {
		defer wg.Done()
		assert.Equal(t, in, guestReader(s, len(in)))
	}()
	go func() {
		defer wg.Done()
		for range 1000 {
			wr(s, regData, 'o')
			rd(s, regIIR)
			rd(s, regMSR)
		}
	}()
	wg.Wait()
	assert.Equal(t, string(bytes.Repeat([]byte("o"), 1000)), out.String())
}

func BenchmarkUARTOutput(b *testing.B) {
	s := New(&countingIRQ{}, io.Discard, nil)
	wr(s, regIER, ierETBEI)
	data := []byte{'x'}
	for b.Loop() {
		s.Write(regData, data)
	}
}
