package kvm

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Expected numbers are the kernel macros' values (include/uapi/linux/kvm.h
// compiled for x86-64), not recomputed with this package's encoder.
func TestIoctlNumbers(t *testing.T) {
	tests := []struct {
		req  request
		name string
		want uintptr
	}{
		{ioctlGetAPIVersion, "KVM_GET_API_VERSION", 0xAE00},
		{ioctlCreateVM, "KVM_CREATE_VM", 0xAE01},
		{ioctlGetMSRIndexList, "KVM_GET_MSR_INDEX_LIST", 0xC004AE02},
		{ioctlCheckExtension, "KVM_CHECK_EXTENSION", 0xAE03},
		{ioctlGetVCPUMmapSize, "KVM_GET_VCPU_MMAP_SIZE", 0xAE04},
		{ioctlGetSupportedCPUID, "KVM_GET_SUPPORTED_CPUID", 0xC008AE05},
		{ioctlCreateVCPU, "KVM_CREATE_VCPU", 0xAE41},
		{ioctlSetUserMemoryRegion, "KVM_SET_USER_MEMORY_REGION", 0x4020AE46},
		{ioctlSetTSSAddr, "KVM_SET_TSS_ADDR", 0xAE47},
		{ioctlSetIdentityMapAddr, "KVM_SET_IDENTITY_MAP_ADDR", 0x4008AE48},
		{ioctlCreateIRQChip, "KVM_CREATE_IRQCHIP", 0xAE60},
		{ioctlIRQLine, "KVM_IRQ_LINE", 0x4008AE61},
		{ioctlSetGSIRouting, "KVM_SET_GSI_ROUTING", 0x4008AE6A},
		{ioctlIRQFD, "KVM_IRQFD", 0x4020AE76},
		{ioctlCreatePIT2, "KVM_CREATE_PIT2", 0x4040AE77},
		{ioctlIOEventFD, "KVM_IOEVENTFD", 0x4040AE79},
		{ioctlSetClock, "KVM_SET_CLOCK", 0x4030AE7B},
		{ioctlGetClock, "KVM_GET_CLOCK", 0x8030AE7C},
		{ioctlSignalMSI, "KVM_SIGNAL_MSI", 0x4020AEA5},
		{ioctlRun, "KVM_RUN", 0xAE80},
		{ioctlGetRegs, "KVM_GET_REGS", 0x8090AE81},
		{ioctlSetRegs, "KVM_SET_REGS", 0x4090AE82},
		{ioctlGetSregs, "KVM_GET_SREGS", 0x8138AE83},
		{ioctlSetSregs, "KVM_SET_SREGS", 0x4138AE84},
		{ioctlGetMSRs, "KVM_GET_MSRS", 0xC008AE88},
		{ioctlSetMSRs, "KVM_SET_MSRS", 0x4008AE89},
		{ioctlGetFPU, "KVM_GET_FPU", 0x81A0AE8C},
		{ioctlSetFPU, "KVM_SET_FPU", 0x41A0AE8D},
		{ioctlGetLAPIC, "KVM_GET_LAPIC", 0x8400AE8E},
		{ioctlSetLAPIC, "KVM_SET_LAPIC", 0x4400AE8F},
		{ioctlSetCPUID2, "KVM_SET_CPUID2", 0x4008AE90},
		{ioctlGetMPState, "KVM_GET_MP_STATE", 0x8004AE98},
		{ioctlSetMPState, "KVM_SET_MP_STATE", 0x4004AE99},
		{ioctlGetIRQChip, "KVM_GET_IRQCHIP", 0xC208AE62},
		{ioctlSetIRQChip, "KVM_SET_IRQCHIP", 0x8208AE63},
		{ioctlGetPIT2, "KVM_GET_PIT2", 0x8070AE9F},
		{ioctlSetPIT2, "KVM_SET_PIT2", 0x4070AEA0},
		{ioctlGetEvents, "KVM_GET_VCPU_EVENTS", 0x8040AE9F},
		{ioctlSetEvents, "KVM_SET_VCPU_EVENTS", 0x4040AEA0},
		{ioctlGetDebug, "KVM_GET_DEBUGREGS", 0x8080AEA1},
		{ioctlSetDebug, "KVM_SET_DEBUGREGS", 0x4080AEA2},
		{ioctlSetTSCKHz, "KVM_SET_TSC_KHZ", 0xAEA2},
		{ioctlGetTSCKHz, "KVM_GET_TSC_KHZ", 0xAEA3},
		{ioctlGetXSave, "KVM_GET_XSAVE", 0x9000AEA4},
		{ioctlSetXSave, "KVM_SET_XSAVE", 0x5000AEA5},
		{ioctlGetXCRs, "KVM_GET_XCRS", 0x8188AEA6},
		{ioctlSetXCRs, "KVM_SET_XCRS", 0x4188AEA7},
		{ioctlGetXSave2, "KVM_GET_XSAVE2", 0x9000AECF},
		{ioctlSetDeviceAttr, "KVM_SET_DEVICE_ATTR", 0x4018AEE1},
		{ioctlGetDeviceAttr, "KVM_GET_DEVICE_ATTR", 0x4018AEE2},
		{ioctlHasDeviceAttr, "KVM_HAS_DEVICE_ATTR", 0x4018AEE3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.name, tt.req.name)
			assert.Equal(t, fmt.Sprintf("%#x", tt.want), fmt.Sprintf("%#x", tt.req.num))
		})
	}
}

func TestIocRejectsOversizedArgument(t *testing.T) {
	assert.NotPanics(t, func() { ioc(iocRead, kvmIO, 0, 1<<iocSizeBits-1) })
	assert.Panics(t, func() { ioc(iocRead, kvmIO, 0, 1<<iocSizeBits) })
}
