package kvm

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// System is an open KVM device (/dev/kvm).
type System struct {
	fd kvmFile
}

// Open opens DefaultPath. See OpenPath.
func Open() (*System, error) { return OpenPath(DefaultPath) }

// OpenPath opens the KVM device at path and checks that it speaks
// APIVersion. A missing device (or a path that is not one) gives an error
// wrapping ErrNoKVM, a refused open one wrapping ErrPermission; both
// also wrap the errno and say what to do about it.
func OpenPath(path string) (*System, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, openError(path, err)
	}
	kf, err := newKVMFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	version, err := kf.ioctl(ioctlGetAPIVersion, 0)
	if err != nil {
		kf.Close()
		if errors.Is(err, unix.ENOTTY) {
			return nil, openError(path, err)
		}
		return nil, err
	}
	if version != APIVersion {
		kf.Close()
		return nil, fmt.Errorf("%w: %s speaks version %d, want %d", ErrAPIVersion, path, version, APIVersion)
	}
	return &System{fd: kf}, nil
}

// Close closes the device. VMs created from it stay usable.
func (s *System) Close() error { return s.fd.Close() }

// CheckExtension reports whether the kernel supports c: 0 if not, and
// otherwise 1 or a capability-specific value (e.g. a vCPU count).
func (s *System) CheckExtension(c Cap) (int, error) {
	return s.fd.ioctl(ioctlCheckExtension, uintptr(c))
}

// VCPUMmapSize is the size of the region each vCPU fd maps: kvm_run
// followed by the port I/O data page and other shared pages.
func (s *System) VCPUMmapSize() (int, error) {
	return s.fd.ioctl(ioctlGetVCPUMmapSize, 0)
}

// SupportedCPUID returns the CPUID leaves KVM can present to a guest, the
// starting point for a vCPU's SetCPUID.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	return growingList(
		func(h *kvmCPUID2) *uint32 { return &h.nent },
		func(fa flexArray[kvmCPUID2, CPUIDEntry]) error {
			_, err := ioctlPtr(s.fd, ioctlGetSupportedCPUID, fa.hdr)
			return err
		})
}

// MSRIndexList returns the MSRs KVM saves and restores for a vCPU.
func (s *System) MSRIndexList() ([]uint32, error) {
	return growingList(
		func(h *kvmMSRList) *uint32 { return &h.nmsrs },
		func(fa flexArray[kvmMSRList, uint32]) error {
			_, err := ioctlPtr(s.fd, ioctlGetMSRIndexList, fa.hdr)
			return err
		})
}

// Bounds for the list ioctls that fail with E2BIG when the buffer is too
// small: KVM_MAX_CPUID_ENTRIES is 256 today, and the MSR list is shorter.
const (
	listFirstEntries = 256
	listMaxEntries   = 1 << 14
)

// growingList runs a list ioctl whose header count says how many entries
// the buffer holds, retrying with a bigger buffer on E2BIG: as big as the
// count the kernel wrote back if it asked for more (KVM_GET_MSR_INDEX_LIST
// does), otherwise twice as big.
func growingList[H, E any](count func(*H) *uint32, call func(flexArray[H, E]) error) ([]E, error) {
	for n := listFirstEntries; ; {
		fa := newFlexArray[H, E](n)
		*count(fa.hdr) = uint32(n)
		err := call(fa)
		got := int(*count(fa.hdr))
		if errors.Is(err, unix.E2BIG) && n < listMaxEntries {
			n = min(max(got, 2*n), listMaxEntries)
			continue
		}
		if err != nil {
			return nil, err
		}
		if got > n {
			return nil, fmt.Errorf("kvm: list ioctl reported %d entries in a buffer of %d", got, n)
		}
		return fa.entries[:got:got], nil
	}
}

// CreateVM creates a virtual machine.
func (s *System) CreateVM() (*VM, error) {
	runSize, err := s.VCPUMmapSize()
	if err != nil {
		return nil, err
	}
	if runSize < int(kvmRunSize) {
		return nil, fmt.Errorf("kvm: vCPU mmap size %d is smaller than kvm_run (%d bytes)", runSize, kvmRunSize)
	}
	fd, err := s.fd.ioctl(ioctlCreateVM, 0)
	if err != nil {
		return nil, err
	}
	kf, err := fileFromFD(fd, "kvm-vm")
	if err != nil {
		return nil, err
	}
	return &VM{fd: kf, runSize: runSize, slots: make(map[uint32][]byte)}, nil
}
