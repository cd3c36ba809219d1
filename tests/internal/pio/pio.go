// Package pio is port I/O for the test guests' inits, which run as root
// in the guest and get the ports with ioperm or iopl first.
package pio

// Accesses of exact widths, in pio_amd64.s.
func Inb(port uint16) uint8
func Inw(port uint16) uint16
func Inl(port uint16) uint32
func Outb(port uint16, v uint8)
func Outw(port uint16, v uint16)
func Outl(port uint16, v uint32)

// In reads size bytes (1, 2 or 4; anything else reads 4) from port.
func In(port uint16, size int) uint32 {
	switch size {
	case 1:
		return uint32(Inb(port))
	case 2:
		return uint32(Inw(port))
	}
	return Inl(port)
}

// Out writes the low size bytes of v (1, 2 or 4; anything else writes 4).
func Out(port uint16, size int, v uint32) {
	switch size {
	case 1:
		Outb(port, uint8(v))
	case 2:
		Outw(port, uint16(v))
	default:
		Outl(port, v)
	}
}
