package kvm

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The KVM ioctls this package issues. Argument sizes come from the struct
// mirrors, so a mirror that drifts from the kernel's layout also changes
// the number, and ioctl_test.go catches both.
var (
	// On /dev/kvm.
	ioctlGetAPIVersion     = reqNone("KVM_GET_API_VERSION", 0x00)
	ioctlCreateVM          = reqNone("KVM_CREATE_VM", 0x01)
	ioctlGetMSRIndexList   = reqReadWrite("KVM_GET_MSR_INDEX_LIST", 0x02, unsafe.Sizeof(kvmMSRList{}))
	ioctlCheckExtension    = reqNone("KVM_CHECK_EXTENSION", 0x03)
	ioctlGetVCPUMmapSize   = reqNone("KVM_GET_VCPU_MMAP_SIZE", 0x04)
	ioctlGetSupportedCPUID = reqReadWrite("KVM_GET_SUPPORTED_CPUID", 0x05, unsafe.Sizeof(kvmCPUID2{}))

	// On a VM.
	ioctlCreateVCPU          = reqNone("KVM_CREATE_VCPU", 0x41)
	ioctlSetUserMemoryRegion = reqWrite("KVM_SET_USER_MEMORY_REGION", 0x46, unsafe.Sizeof(kvmUserspaceMemoryRegion{}))
	ioctlSetTSSAddr          = reqNone("KVM_SET_TSS_ADDR", 0x47)
	ioctlSetIdentityMapAddr  = reqWrite("KVM_SET_IDENTITY_MAP_ADDR", 0x48, unsafe.Sizeof(uint64(0)))
	ioctlCreateIRQChip       = reqNone("KVM_CREATE_IRQCHIP", 0x60)
	ioctlGetIRQChip          = reqReadWrite("KVM_GET_IRQCHIP", 0x62, unsafe.Sizeof(IRQChipState{}))
	// The kernel declares KVM_SET_IRQCHIP with _IOR although it reads the struct.
	ioctlSetIRQChip    = reqRead("KVM_SET_IRQCHIP", 0x63, unsafe.Sizeof(IRQChipState{}))
	ioctlIRQLine       = reqWrite("KVM_IRQ_LINE", 0x61, unsafe.Sizeof(kvmIRQLevel{}))
	ioctlSetGSIRouting = reqWrite("KVM_SET_GSI_ROUTING", 0x6a, unsafe.Sizeof(kvmIRQRouting{}))
	ioctlIRQFD         = reqWrite("KVM_IRQFD", 0x76, unsafe.Sizeof(kvmIRQFD{}))
	ioctlCreatePIT2    = reqWrite("KVM_CREATE_PIT2", 0x77, unsafe.Sizeof(kvmPITConfig{}))
	ioctlIOEventFD     = reqWrite("KVM_IOEVENTFD", 0x79, unsafe.Sizeof(kvmIOEventFD{}))
	ioctlSetClock      = reqWrite("KVM_SET_CLOCK", 0x7b, unsafe.Sizeof(ClockData{}))
	ioctlGetClock      = reqRead("KVM_GET_CLOCK", 0x7c, unsafe.Sizeof(ClockData{}))
	ioctlGetPIT2       = reqRead("KVM_GET_PIT2", 0x9f, unsafe.Sizeof(PITState2{}))
	ioctlSetPIT2       = reqWrite("KVM_SET_PIT2", 0xa0, unsafe.Sizeof(PITState2{}))
	ioctlSignalMSI     = reqWrite("KVM_SIGNAL_MSI", 0xa5, unsafe.Sizeof(kvmMSI{}))

	// On a vCPU.
	ioctlRun        = reqNone("KVM_RUN", 0x80)
	ioctlGetRegs    = reqRead("KVM_GET_REGS", 0x81, unsafe.Sizeof(Regs{}))
	ioctlSetRegs    = reqWrite("KVM_SET_REGS", 0x82, unsafe.Sizeof(Regs{}))
	ioctlGetSregs   = reqRead("KVM_GET_SREGS", 0x83, unsafe.Sizeof(Sregs{}))
	ioctlSetSregs   = reqWrite("KVM_SET_SREGS", 0x84, unsafe.Sizeof(Sregs{}))
	ioctlGetMSRs    = reqReadWrite("KVM_GET_MSRS", 0x88, unsafe.Sizeof(kvmMSRs{}))
	ioctlSetMSRs    = reqWrite("KVM_SET_MSRS", 0x89, unsafe.Sizeof(kvmMSRs{}))
	ioctlGetFPU     = reqRead("KVM_GET_FPU", 0x8c, unsafe.Sizeof(FPU{}))
	ioctlSetFPU     = reqWrite("KVM_SET_FPU", 0x8d, unsafe.Sizeof(FPU{}))
	ioctlGetLAPIC   = reqRead("KVM_GET_LAPIC", 0x8e, unsafe.Sizeof(LAPICState{}))
	ioctlSetLAPIC   = reqWrite("KVM_SET_LAPIC", 0x8f, unsafe.Sizeof(LAPICState{}))
	ioctlSetCPUID2  = reqWrite("KVM_SET_CPUID2", 0x90, unsafe.Sizeof(kvmCPUID2{}))
	ioctlGetMPState = reqRead("KVM_GET_MP_STATE", 0x98, unsafe.Sizeof(MPState(0)))
	ioctlSetMPState = reqWrite("KVM_SET_MP_STATE", 0x99, unsafe.Sizeof(MPState(0)))
	ioctlGetEvents  = reqRead("KVM_GET_VCPU_EVENTS", 0x9f, unsafe.Sizeof(VCPUEvents{}))
	ioctlSetEvents  = reqWrite("KVM_SET_VCPU_EVENTS", 0xa0, unsafe.Sizeof(VCPUEvents{}))
	ioctlGetDebug   = reqRead("KVM_GET_DEBUGREGS", 0xa1, unsafe.Sizeof(DebugRegs{}))
	ioctlSetDebug   = reqWrite("KVM_SET_DEBUGREGS", 0xa2, unsafe.Sizeof(DebugRegs{}))
	ioctlSetTSCKHz  = reqNone("KVM_SET_TSC_KHZ", 0xa2)
	ioctlGetTSCKHz  = reqNone("KVM_GET_TSC_KHZ", 0xa3)
	ioctlGetXSave   = reqRead("KVM_GET_XSAVE", 0xa4, unsafe.Sizeof(kvmXSave{}))
	ioctlSetXSave   = reqWrite("KVM_SET_XSAVE", 0xa5, unsafe.Sizeof(kvmXSave{}))
	ioctlGetXCRs    = reqRead("KVM_GET_XCRS", 0xa6, unsafe.Sizeof(XCRs{}))
	ioctlSetXCRs    = reqWrite("KVM_SET_XCRS", 0xa7, unsafe.Sizeof(XCRs{}))
	ioctlGetXSave2  = reqRead("KVM_GET_XSAVE2", 0xcf, unsafe.Sizeof(kvmXSave{}))
	// The kernel declares all three with _IOW although GET writes the
	// value (at the address in the struct, not the struct itself).
	ioctlSetDeviceAttr = reqWrite("KVM_SET_DEVICE_ATTR", 0xe1, unsafe.Sizeof(kvmDeviceAttr{}))
	ioctlGetDeviceAttr = reqWrite("KVM_GET_DEVICE_ATTR", 0xe2, unsafe.Sizeof(kvmDeviceAttr{}))
	ioctlHasDeviceAttr = reqWrite("KVM_HAS_DEVICE_ATTR", 0xe3, unsafe.Sizeof(kvmDeviceAttr{}))
)

// kvmFile is an owned KVM file descriptor. Ioctls go through the RawConn,
// which holds a reference on the descriptor for the length of the call,
// so a concurrent Close cannot let the number be reused under an ioctl.
type kvmFile struct {
	f  *os.File
	rc syscall.RawConn
}

func newKVMFile(f *os.File) (kvmFile, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return kvmFile{}, fmt.Errorf("kvm: %s: %w", f.Name(), err)
	}
	return kvmFile{f: f, rc: rc}, nil
}

// fileFromFD wraps a descriptor a KVM ioctl returned.
func fileFromFD(fd int, name string) (kvmFile, error) {
	f := os.NewFile(uintptr(fd), name)
	kf, err := newKVMFile(f)
	if err != nil {
		f.Close()
	}
	return kf, err
}

func (k kvmFile) Close() error { return k.f.Close() }

// control runs fn with the descriptor held open. A closed file has no
// descriptor; report that as the EBADF an ioctl on it would give.
//
// Every ioctl but KVM_RUN is restarted after EINTR: the Go runtime's
// preemption signals (SIGURG) interrupt sleeping ioctls such as
// KVM_CREATE_VM, which then fail for no reason of the caller's. KVM_RUN's
// EINTR is how a vCPU is kicked out, so it goes back to Run.
func (k kvmFile) control(r request, fn func(fd uintptr) unix.Errno) error {
	var errno unix.Errno
	err := k.rc.Control(func(fd uintptr) {
		for {
			errno = fn(fd)
			if errno != unix.EINTR || r == ioctlRun {
				return
			}
		}
	})
	if err != nil {
		return &IoctlError{Op: r.name, Err: unix.EBADF}
	}
	if errno != 0 {
		return &IoctlError{Op: r.name, Err: errno}
	}
	return nil
}

// ioctl issues r with an integer argument and returns the kernel's result.
func (k kvmFile) ioctl(r request, arg uintptr) (int, error) {
	var ret uintptr
	err := k.control(r, func(fd uintptr) unix.Errno {
		var errno unix.Errno
		ret, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, r.num, arg)
		return errno
	})
	return int(ret), err
}

// ioctlPtr issues r with a pointer to arg, which the kernel reads and/or
// writes; for flexible-array structs arg is the header at the start of
// the whole allocation.
func ioctlPtr[T any](k kvmFile, r request, arg *T) (int, error) {
	var ret uintptr
	err := k.control(r, func(fd uintptr) unix.Errno {
		var errno unix.Errno
		// Converted inside the call expression, so arg stays live and
		// unmoved for the duration of the syscall (unsafe.Pointer rule 4).
		ret, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, r.num, uintptr(unsafe.Pointer(arg)))
		return errno
	})
	return int(ret), err
}

// ioctlAttr issues KVM_GET_DEVICE_ATTR or KVM_SET_DEVICE_ATTR on an
// attribute whose value is 64 bits: it passes val and returns what the
// kernel left there.
func ioctlAttr(k kvmFile, r request, group uint32, attr, val uint64) (uint64, error) {
	// The value shares the allocation of the struct the ioctl gets, which
	// escapes to the heap as ioctlPtr's argument and so cannot move under
	// the address the kernel is given; a separate local could sit on the
	// stack, which moves when it grows.
	b := &struct {
		a   kvmDeviceAttr
		val uint64
	}{a: kvmDeviceAttr{group: group, attr: attr}, val: val}
	b.a.addr = uint64(uintptr(unsafe.Pointer(&b.val)))
	_, err := ioctlPtr(k, r, &b.a)
	return b.val, err
}

// flexArray is a kernel struct that ends in a flexible array member: a
// header H immediately followed by n entries E, in one 8-byte-aligned
// allocation. The layout test checks that each header's size is the
// kernel's offset of its array.
type flexArray[H, E any] struct {
	hdr     *H
	entries []E
}

func newFlexArray[H, E any](n int) flexArray[H, E] {
	hdrSize := unsafe.Sizeof(*new(H))
	size := hdrSize + uintptr(n)*unsafe.Sizeof(*new(E))
	// []uint64 gives the 8-byte alignment the kernel structs need.
	buf := make([]uint64, (size+7)/8)
	// buf's backing array is the whole struct; the kernel reads and writes it.
	p := unsafe.Pointer(unsafe.SliceData(buf))
	fa := flexArray[H, E]{hdr: (*H)(p)}
	if n > 0 {
		// The entries start right after the header, inside buf (n > 0, so
		// the pointer is not past the end of the allocation).
		fa.entries = unsafe.Slice((*E)(unsafe.Add(p, hdrSize)), n)
	}
	return fa
}

// sliceAddr is the host address of b's first byte, for kernel structs
// that carry a userspace address. The caller keeps b alive for as long as
// the kernel uses the address.
func sliceAddr(b []byte) uint64 {
	// Go's heap does not move objects, so the address stays valid while b is referenced.
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

// mmap maps size bytes of the file shared and read-write (a vCPU's kvm_run).
func (k kvmFile) mmap(size int) ([]byte, error) {
	var mapping []byte
	var merr error
	if err := k.rc.Control(func(fd uintptr) {
		mapping, merr = unix.Mmap(int(fd), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	}); err != nil {
		return nil, err
	}
	return mapping, merr
}
