package kvm

import "fmt"

// The ioctl number layout of asm-generic/ioctl.h (used by x86):
// | dir:2 | size:14 | type:8 | nr:8 |.
const (
	iocNRBits   = 8
	iocTypeBits = 8
	iocSizeBits = 14

	iocNRShift   = 0
	iocTypeShift = iocNRShift + iocNRBits
	iocSizeShift = iocTypeShift + iocTypeBits
	iocDirShift  = iocSizeShift + iocSizeBits

	// Direction bits, from the caller's point of view: "write" means
	// userspace writes to the kernel.
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	// kvmIO is KVMIO, the ioctl type byte of every KVM ioctl.
	kvmIO = 0xAE
)

// ioc encodes an ioctl number like the kernel's _IOC macro. It panics if
// size does not fit the 14-bit size field; sizes come from struct mirrors,
// so that is a programming error caught when the package initialises.
func ioc(dir, typ, nr, size uintptr) uintptr {
	if size >= 1<<iocSizeBits {
		panic(fmt.Sprintf("kvm: ioctl %#x/%#x: argument size %d does not fit the ioctl encoding", typ, nr, size))
	}
	return dir<<iocDirShift | size<<iocSizeShift | typ<<iocTypeShift | nr<<iocNRShift
}

// request is one KVM ioctl: its encoded number and its name, which errors
// carry so a failure says which call failed.
type request struct {
	name string
	num  uintptr
}

// reqNone is _IO(KVMIO, nr).
func reqNone(name string, nr uintptr) request {
	return request{name, ioc(iocNone, kvmIO, nr, 0)}
}

// reqRead is _IOR(KVMIO, nr, T) for an argument of size bytes.
func reqRead(name string, nr, size uintptr) request {
	return request{name, ioc(iocRead, kvmIO, nr, size)}
}

// reqWrite is _IOW(KVMIO, nr, T) for an argument of size bytes.
func reqWrite(name string, nr, size uintptr) request {
	return request{name, ioc(iocWrite, kvmIO, nr, size)}
}

// reqReadWrite is _IOWR(KVMIO, nr, T) for an argument of size bytes.
func reqReadWrite(name string, nr, size uintptr) request {
	return request{name, ioc(iocRead|iocWrite, kvmIO, nr, size)}
}
