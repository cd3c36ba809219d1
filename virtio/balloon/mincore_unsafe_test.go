package balloon

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mincore is mincore(2), which x/sys/unix does not wrap: one byte of vec
// per page of b, bit 0 set if the page is resident.
func mincore(b, vec []byte) error {
	// unsafe.Pointer: the kernel reads b's range and writes vec, both kept
	// alive by the conversion inside the Syscall argument list.
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return errno
	}
	return nil
}
