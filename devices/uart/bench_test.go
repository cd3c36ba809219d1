package uart

import (
	"io"
	"log/slog"
	"testing"
)

// BenchmarkOutput times one console byte the way Linux's 8250 console
// (serial8250_console_putchar) sends it: poll LSR until THRE, then write
// THR. Output goes to io.Discard, so this is the UART's own cost per byte.
// With ETBEI set every THR write also raises the (counting) interrupt, as
// the tty driver's transmit path runs.
func BenchmarkOutput(b *testing.B) {
	tests := []struct {
		name string
		ier  byte
	}{
		{"polled", 0},
		{"thre-irq", ierTHREmpty},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			irq := &countIRQ{}
			u := New(irq, io.Discard, slog.New(slog.DiscardHandler))
			wr(u, regLCR, 0x03) // 8N1, as the driver programs it
			wr(u, regIER, tt.ier)
			lsr, thr := []byte{0}, []byte{'x'}
			b.SetBytes(1)
			b.ReportAllocs()
			for b.Loop() {
				u.Read(regLSR, lsr)
				if lsr[0]&lsrTHRE == 0 {
					b.Fatal("THR not empty: the transmitter never is")
				}
				u.Write(regData, thr)
			}
		})
	}
}
