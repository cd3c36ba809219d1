package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/internal/pio"
)

// Ports the phases leave alone or treat specially.
const (
	com1         = 0x3f8
	configAddr   = 0xcf8
	i8042Data    = 0x60
	i8042Command = 0x64
	pmBase       = 0x600
	pmControlHi  = pmBase + 5 // PM1_CNT bits 8-15: SLP_EN is bit 5 here
	slpEnHi      = 1 << 5
	resetControl = 0xcf9 // bits 1-2 reset the machine on a PC
	portA        = 0x92  // bit 0 resets the CPU on a PC
)

// skipped reports ports the ports phase must not touch: those KVM
// emulates in the kernel (the PICs, the PIT and its speaker port, ELCR),
// which are not the VMM's code and whose garbage would break the guest's
// interrupts, and COM1 and CONFIG_ADDRESS/DATA, which have phases of
// their own (the console and the PCI functions the guest still uses).
func skipped(p int) bool {
	switch {
	case p == 0x20 || p == 0x21 || p == 0xa0 || p == 0xa1, // 8259 PICs
		p >= 0x40 && p <= 0x43, p == 0x61, // PIT, speaker
		p == 0x4d0 || p == 0x4d1, // ELCR
		p >= com1 && p < com1+8,
		p >= configAddr && p < configAddr+8:
		return true
	}
	return false
}

// tame turns a garbage write into one that does not reset or power off
// the machine: those are the break phase's business. It returns false if
// the write must be dropped.
func tame(port uint16, size int, v uint32) (uint32, bool) {
	for i := 0; i < size; i++ {
		p := int(port) + i
		b := uint8(v >> (8 * i))
		switch p {
		case i8042Command:
			// 0xd1 writes the output port (bit 0 low resets); 0xf0-0xff
			// with bit 0 clear pulse the reset line.
			if size == 1 && (b == 0xd1 || b >= 0xf0 && b&1 == 0) {
				return 0, false
			}
		case pmControlHi:
			b &^= slpEnHi
		case resetControl:
			b &^= 0x06
		case portA:
			b &^= 0x01
		}
		v = v&^(0xff<<(8*i)) | uint32(b)<<(8*i)
	}
	return v, true
}

// hammerPorts reads, writes garbage to and reads again the ISA ports
// (0-0x3ff) at every width, every stride-th port above them at one width
// in turn (stride 1: every port; exits cost hundreds of microseconds in
// the emulated test host), and then every byte value and a few words to
// the ports the VMM's devices claim.
func hammerPorts(stride int) (int, error) {
	if stride < 1 {
		return 0, fmt.Errorf("port stride %d", stride)
	}
	rng := newRand(0x9047)
	n := 0
	touch := func(port uint16, size int, v uint32) {
		for i := 0; i < size; i++ {
			if skipped(int(port) + i) {
				return
			}
		}
		pio.In(port, size)
		if v, ok := tame(port, size, v); ok {
			pio.Out(port, size, v)
			n++
		}
		n++
	}
	for p := 0; p < 0x400; p++ {
		for _, size := range []int{1, 2, 4} {
			touch(uint16(p), size, rng.u32())
		}
	}
	for p := 0x400; p <= 0xffff; p += stride {
		if size := 1 << (p / stride % 3); p+size <= 0x10000 {
			touch(uint16(p), size, rng.u32())
		}
	}
	devicePorts := []uint16{i8042Data, i8042Command, 0x70, 0x71, 0x80, pmBase, pmBase + 1, pmBase + 2,
		pmBase + 3, pmBase + 4, pmBase + 5}
	for _, p := range devicePorts {
		for v := 0; v < 256; v++ {
			touch(p, 1, uint32(v))
		}
		for _, size := range []int{2, 4} {
			for _, v := range []uint32{0, 0xffffffff, rng.u32(), rng.u32()} {
				touch(p, size, v)
			}
		}
	}
	return n, nil
}

// UART registers (offsets from COM1) and bits.
const (
	uartData = 0 // THR/RBR, DLL with DLAB
	uartIER  = 1 // DLM with DLAB
	uartFCR  = 2 // IIR on read
	uartLCR  = 3
	uartMCR  = 4
	uartLSR  = 5
	uartSCR  = 7
	lcrDLAB  = 0x80
	fcrFIFOs = 0x87 // enable, clear both, trigger at 8
)

// hammerUART writes every byte value to every COM1 register but the
// transmitter (whose bytes would garble the console the reports use) and
// restores what the kernel's driver had set. Only kernel messages can be
// lost meanwhile: the guest prints nothing during the phase.
func hammerUART() (int, error) {
	if err := unix.IoctlSetInt(int(os.Stdout.Fd()), unix.TCSBRK, 1); err != nil { // tcdrain
		return 0, fmt.Errorf("draining the console: %w", err)
	}
	time.Sleep(50 * time.Millisecond)
	lcr := pio.Inb(com1 + uartLCR)
	ier, mcr, scr := pio.Inb(com1+uartIER), pio.Inb(com1+uartMCR), pio.Inb(com1+uartSCR)
	pio.Outb(com1+uartLCR, lcr|lcrDLAB)
	dll, dlm := pio.Inb(com1+uartData), pio.Inb(com1+uartIER)
	pio.Outb(com1+uartLCR, lcr)

	n := 0
	for _, dlab := range []uint8{0, lcrDLAB} {
		for reg := uint16(0); reg < 8; reg++ {
			if reg == uartData && dlab == 0 {
				continue // THR: the console
			}
			for v := 0; v < 256; v++ {
				if reg != uartLCR {
					pio.Outb(com1+uartLCR, uint8(v)&^lcrDLAB|dlab)
				}
				pio.Outb(com1+reg, uint8(v))
				pio.Inb(com1 + reg)
				n += 3
			}
		}
	}
	// Wider accesses, which a 16550A does not decode; 0xa5 keeps DLAB set.
	for _, size := range []int{2, 4} {
		for r := uint16(1); r+uint16(size) <= 8; r++ {
			pio.In(com1+r, size)
			pio.Out(com1+r, size, 0xa5a5a5a5)
			n += 2
		}
	}

	pio.Outb(com1+uartLCR, lcr|lcrDLAB)
	pio.Outb(com1+uartData, dll)
	pio.Outb(com1+uartIER, dlm)
	pio.Outb(com1+uartLCR, lcr)
	pio.Outb(com1+uartFCR, fcrFIFOs)
	pio.Outb(com1+uartMCR, mcr)
	pio.Outb(com1+uartSCR, scr)
	pio.Outb(com1+uartIER, ier)
	for r := uint16(0); r < 8; r++ {
		pio.Inb(com1 + r) // clear what the garbage left pending
	}
	n += 17
	time.Sleep(50 * time.Millisecond)
	fmt.Println() // end whatever line the garbage left behind
	return n, nil
}

// Ports of the storm: unclaimed ones (the bus's miss path and its log)
// and device ports whose reads are harmless.
var stormPorts = []uint16{0x100, 0x2f8, 0x3e8, 0x510, 0x1234, 0xc000, 0xfff0, 0x80, i8042Data, i8042Command,
	0x70, 0x71, pmBase, pmBase + 4}

// storm reads bytes per port and width with REP INS: KVM hands the VMM
// up to 1 KiB of elements per exit, so this is where the accesses run
// into millions. (REP OUTS would not: KVM exits once per element.)
func storm(bytes int) (int, error) {
	const chunk = 64 << 10
	buf, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE|unix.MAP_POPULATE)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(buf)
	n := 0
	for _, size := range []int{1, 2, 4} {
		for _, p := range stormPorts {
			for done := 0; done < bytes; done += chunk {
				b := buf[:min(chunk, bytes-done)]
				repInsBuf(p, size, b)
				n += len(b) / size
			}
		}
	}
	return n, nil
}
