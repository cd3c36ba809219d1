package kvm

import (
	"fmt"
	"unsafe"
)

// XSave returns the vCPU's XSAVE area: size bytes from KVM_GET_XSAVE2,
// where size is CapXSave2's value (0 when the kernel lacks it), or the
// 4096 bytes of KVM_GET_XSAVE, which cannot hold AMX state.
func (v *VCPU) XSave(size int) ([]byte, error) {
	r := ioctlGetXSave2
	if size <= xsaveLegacySize {
		r, size = ioctlGetXSave, xsaveLegacySize
	}
	fa := newXSave(size)
	if _, err := ioctlPtr(v.fd, r, fa.hdr); err != nil {
		return nil, err
	}
	return append([]byte(nil), xsaveBytes(fa, size)...), nil
}

// SetXSave loads an XSAVE area XSave returned. KVM reads as much of it as
// the vCPU's XSAVE features need, so it must be at least the legacy size.
func (v *VCPU) SetXSave(data []byte) error {
	if len(data) < xsaveLegacySize || len(data)%4 != 0 {
		return fmt.Errorf("kvm: XSAVE area of %d bytes: want a multiple of 4, at least %d", len(data), xsaveLegacySize)
	}
	fa := newXSave(len(data))
	copy(xsaveBytes(fa, len(data)), data)
	_, err := ioctlPtr(v.fd, ioctlSetXSave, fa.hdr)
	return err
}

func newXSave(size int) flexArray[kvmXSave, uint32] {
	return newFlexArray[kvmXSave, uint32]((size - xsaveLegacySize + 3) / 4)
}

func xsaveBytes(fa flexArray[kvmXSave, uint32], size int) []byte {
	// fa's allocation is the header followed by its entries, at least size bytes.
	return unsafe.Slice((*byte)(unsafe.Pointer(fa.hdr)), size)
}
