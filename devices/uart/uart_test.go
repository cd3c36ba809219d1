package uart

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type countIRQ struct{ n atomic.Int32 }

func (c *countIRQ) Trigger() error { c.n.Add(1); return nil }

func newUART(out *bytes.Buffer) (*UART, *countIRQ) {
	irq := &countIRQ{}
	return New(irq, out, slog.New(slog.DiscardHandler)), irq
}

func rd(u *UART, off uint64) byte {
	b := []byte{0}
	u.Read(off, b)
	return b[0]
}

func wr(u *UART, off uint64, v byte) { u.Write(off, []byte{v}) }

func TestTransmit(t *testing.T) {
	var out bytes.Buffer
	u, irq := newUART(&out)
	for _, c := range []byte("hello\n") {
		assert.NotZero(t, rd(u, regLSR)&lsrTHRE, "THR is always empty")
		wr(u, regData, c)
	}
	assert.Equal(t, "hello\n", out.String())
	assert.Zero(t, irq.n.Load(), "no interrupt without ETBEI")
}

func TestDivisorLatch(t *testing.T) {
	var out bytes.Buffer
	u, _ := newUART(&out)
	wr(u, regLCR, lcrDLAB|0x03)
	wr(u, regData, 0x0c)
	wr(u, regIER, 0x01)
	assert.Equal(t, byte(0x0c), rd(u, regData))
	assert.Equal(t, byte(0x01), rd(u, regIER))
	wr(u, regLCR, 0x03)
	assert.Equal(t, byte(0), rd(u, regIER), "IER untouched by DLM writes")
	assert.Empty(t, out.String(), "DLL writes are not transmitted")
	assert.Equal(t, uint16(0x010c), u.divisor)
}

func TestScratchAndFIFOIdentification(t *testing.T) {
	u, _ := newUART(&bytes.Buffer{})
	wr(u, regSCR, 0xa5)
	assert.Equal(t, byte(0xa5), rd(u, regSCR))
	assert.Equal(t, byte(iirNone), rd(u, regIIR))
	wr(u, regIIR, fcrEnable)
	assert.Equal(t, byte(iirNone|iirFIFOs), rd(u, regIIR), "16550A reports enabled FIFOs")
}

func TestTHREmptyInterrupt(t *testing.T) {
	u, irq := newUART(&bytes.Buffer{})
	wr(u, regIER, ierTHREmpty)
	assert.Equal(t, int32(1), irq.n.Load(), "enabling ETBEI with THR empty interrupts")
	assert.Equal(t, byte(iirTHREmpty), rd(u, regIIR))
	assert.Equal(t, byte(iirNone), rd(u, regIIR), "reading IIR acknowledged it")
	wr(u, regData, 'x')
	assert.Equal(t, int32(2), irq.n.Load(), "each transmitted byte interrupts")
	assert.Equal(t, byte(iirTHREmpty), rd(u, regIIR))
}

func TestReceiveAndPriorities(t *testing.T) {
	u, irq := newUART(&bytes.Buffer{})
	wr(u, regMCR, mcrOUT2)
	wr(u, regIER, ierRxData|ierTHREmpty|ierLineStatus)
	require.NoError(t, u.Receive(context.Background(), []byte("ab")))
	assert.Equal(t, byte(iirRxData), rd(u, regIIR), "received data outranks THR empty")
	assert.NotZero(t, rd(u, regLSR)&lsrDR)
	assert.Equal(t, byte('a'), rd(u, regData))
	assert.Equal(t, byte('b'), rd(u, regData))
	assert.Zero(t, rd(u, regLSR)&lsrDR)
	assert.Equal(t, byte(iirTHREmpty), rd(u, regIIR))
	assert.Equal(t, byte(0), rd(u, regData), "empty FIFO reads zero")
	assert.GreaterOrEqual(t, irq.n.Load(), int32(2))
}

func TestReceiveWaitsForADriver(t *testing.T) {
	u, _ := newUART(&bytes.Buffer{})
	done := make(chan error, 1)
	go func() { done <- u.Receive(context.Background(), []byte("early")) }()
	select {
	case <-done:
		t.Fatal("input was taken before the guest enabled receive interrupts")
	case <-time.After(50 * time.Millisecond):
	}
	wr(u, regIER, 0x0f) // Linux's probe checks that IER exists...
	select {
	case <-done:
		t.Fatal("input was taken while the guest probed the port")
	case <-time.After(50 * time.Millisecond):
	}
	wr(u, regIER, 0)
	wr(u, regIIR, fcrEnable|fcrClearRx) // ...and opening the port clears the FIFO
	wr(u, regMCR, mcrOUT2|mcrRTS|mcrDTR)
	wr(u, regIER, ierRxData)
	require.NoError(t, <-done)
	assert.Equal(t, byte('e'), rd(u, regData))
}

func TestReceiveBackPressure(t *testing.T) {
	u, _ := newUART(&bytes.Buffer{})
	wr(u, regMCR, mcrOUT2)
	wr(u, regIER, ierRxData)
	input := bytes.Repeat([]byte{'z'}, fifoSize+10)
	done := make(chan error, 1)
	go func() { done <- u.Receive(context.Background(), input) }()
	select {
	case <-done:
		t.Fatal("Receive returned with the FIFO full")
	case <-time.After(50 * time.Millisecond):
	}
	for i := 0; i < fifoSize+10; i++ {
		deadline := time.Now().Add(time.Second)
		for rd(u, regLSR)&lsrDR == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		require.Equal(t, byte('z'), rd(u, regData), "byte %d", i)
	}
	require.NoError(t, <-done)
	assert.Zero(t, rd(u, regLSR)&lsrOE, "host input is never lost to an overrun")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := u.Receive(ctx, bytes.Repeat([]byte{'y'}, fifoSize+1))
	assert.True(t, errors.Is(err, context.Canceled))
}

func TestLoopback(t *testing.T) {
	var out bytes.Buffer
	u, _ := newUART(&out)
	wr(u, regMCR, mcrLoop|mcrRTS|mcrOUT2)
	msr := rd(u, regMSR)
	assert.Equal(t, byte(msrCTS|msrDCD), msr&0xf0, "status lines follow MCR")
	assert.Equal(t, byte(msrDDSR), msr&msrDelta, "DSR dropped")
	wr(u, regData, 0x55)
	assert.Empty(t, out.String(), "loopback does not transmit")
	assert.Equal(t, byte(0x55), rd(u, regData))
	for i := 0; i <= fifoSize; i++ {
		wr(u, regData, byte(i))
	}
	assert.NotZero(t, rd(u, regLSR)&lsrOE, "overrun")
	assert.Zero(t, rd(u, regLSR)&lsrOE, "cleared by reading LSR")
	wr(u, regMCR, 0)
	assert.Equal(t, byte(msrCTS|msrDSR|msrDCD), rd(u, regMSR)&0xf0)
}

func TestEveryOffsetAndWidth(t *testing.T) {
	u, _ := newUART(&bytes.Buffer{})
	for off := uint64(0); off < 16; off++ {
		for _, w := range []int{1, 2, 4, 8} {
			d := make([]byte, w)
			u.Read(off, d)
			if w != 1 || off >= Size {
				assert.Equal(t, bytes.Repeat([]byte{0xff}, w), d, "offset %d width %d", off, w)
			}
			u.Write(off, bytes.Repeat([]byte{0xff}, w))
		}
	}
}

func FuzzRegisters(f *testing.F) {
	f.Add([]byte{3, 0x80, 0, 1, 3, 3, 1, 2, 0, 'a'})
	f.Add([]byte{4, 0x10, 0, 0x41, 5, 0, 2, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		u, _ := newUART(&bytes.Buffer{})
		for i := 0; i+1 < len(ops); i += 2 {
			off := uint64(ops[i] & 0x0f)
			if ops[i]&0x80 != 0 {
				u.Read(off, []byte{0})
			} else {
				u.Write(off, []byte{ops[i+1]})
			}
		}
		assert.LessOrEqual(t, u.rxLen, fifoSize)
	})
}
