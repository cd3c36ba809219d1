package kvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

var (
	// ErrNoKVM means there is no usable KVM device at the path opened.
	ErrNoKVM = errors.New("kvm: KVM is not available")
	// ErrPermission means the KVM device exists but may not be opened.
	ErrPermission = errors.New("kvm: no permission to use KVM")
	// ErrAPIVersion means the kernel speaks a KVM API other than APIVersion.
	ErrAPIVersion = errors.New("kvm: unsupported KVM API version")
)

// Hints appended to open failures: what the user can do about them.
const (
	hintNoKVM      = "load the kvm-intel or kvm-amd module, with nested virtualization enabled if this is a VM, or run inside the KVM test host"
	hintPermission = "add yourself to the kvm group and log in again, or run as root"
)

// openError classifies a failure to open a KVM device: a missing device
// wraps ErrNoKVM, a refused one ErrPermission. Both also wrap the original
// error, so errors.Is(err, unix.ENOENT) keeps working.
func openError(path string, err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("kvm: opening %s: %w", path, err)
	}
	switch errno {
	case unix.ENOENT, unix.ENODEV, unix.ENXIO:
		return fmt.Errorf("%w: %w (%s)", ErrNoKVM, err, hintNoKVM)
	case unix.EACCES, unix.EPERM:
		return fmt.Errorf("%w: %w (%s)", ErrPermission, err, hintPermission)
	case unix.ENOTTY:
		return fmt.Errorf("%w: %s is not a KVM device (%w)", ErrNoKVM, path, err)
	}
	return fmt.Errorf("kvm: opening %s: %w", path, err)
}

// IoctlError is a failed KVM ioctl. It unwraps to the errno.
type IoctlError struct {
	Op  string // the ioctl's name, e.g. "KVM_SET_USER_MEMORY_REGION"
	Err unix.Errno
}

func (e *IoctlError) Error() string { return "kvm: " + e.Op + ": " + e.Err.Error() }

func (e *IoctlError) Unwrap() error { return e.Err }

// MSRError reports that KVM_GET_MSRS or KVM_SET_MSRS stopped early: the
// kernel processes MSRs in order and returns how many it handled, so the
// first one it did not handle is the one it rejected.
type MSRError struct {
	Op        string // "KVM_GET_MSRS" or "KVM_SET_MSRS"
	Index     uint32 // the rejected MSR
	Processed int    // how many MSRs the kernel handled
	Requested int
}

func (e *MSRError) Error() string {
	return fmt.Sprintf("kvm: %s: MSR %#x rejected (%d of %d processed)", e.Op, e.Index, e.Processed, e.Requested)
}

// DecodeError reports a kvm_run exit whose contents do not fit: a data
// offset or length that would reach outside the kvm_run mapping or the
// exit's own buffer.
type DecodeError struct {
	Reason ExitReason
	Field  string // the kvm_run field that is out of range, e.g. "mmio.len"
	Value  uint64 // its value (for a data range, the range's end)
	Limit  uint64 // the largest value that would have been accepted
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("kvm: decoding %v exit: %s = %d exceeds %d", e.Reason, e.Field, e.Value, e.Limit)
}
