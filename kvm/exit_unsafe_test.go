package kvm

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A vCPU mapping as x86 KVM lays it out: kvm_run, then the port I/O data
// page, then the coalesced MMIO ring.
const (
	fakePageSize   = 4096
	fakeMapSize    = 3 * fakePageSize
	fakePIODataOff = fakePageSize
)

// fakeRun returns a zeroed, 8-byte-aligned stand-in for a vCPU mapping
// and the kvm_run at its start.
func fakeRun(t *testing.T) ([]byte, *kvmRun) {
	t.Helper()
	words := make([]uint64, fakeMapSize/8)
	// words is fakeMapSize bytes of 8-byte-aligned memory, viewed as bytes.
	buf := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), fakeMapSize)
	return buf, runView(buf)
}

func TestDecodeExit(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(buf []byte, r *kvmRun)
		want    Exit
		wantErr *DecodeError
	}{
		{
			name: "io out",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitIO
				*r.io() = kvmRunIO{direction: IOOut, size: 2, port: 0x3f8, count: 2, dataOffset: fakePIODataOff}
				copy(buf[fakePIODataOff:], "abcd")
			},
			want: Exit{Reason: ExitIO, IO: IOExit{Direction: IOOut, Port: 0x3f8, Size: 2, Count: 2, Data: []byte("abcd")}},
		},
		{
			name: "io data ends exactly at the mapping's end",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitIO
				*r.io() = kvmRunIO{direction: IOIn, size: 4, port: 0x60, count: 1, dataOffset: fakeMapSize - 4}
			},
			want: Exit{Reason: ExitIO, IO: IOExit{Direction: IOIn, Port: 0x60, Size: 4, Count: 1, Data: make([]byte, 4)}},
		},
		{
			name: "io data runs past the mapping",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitIO
				*r.io() = kvmRunIO{direction: IOOut, size: 4, count: 2, dataOffset: fakeMapSize - 4}
			},
			wantErr: &DecodeError{Reason: ExitIO, Field: "io.data_offset+count*size", Value: fakeMapSize + 4, Limit: fakeMapSize},
		},
		{
			name: "io data offset past the mapping",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitIO
				*r.io() = kvmRunIO{direction: IOOut, size: 1, count: 1, dataOffset: fakeMapSize + 1}
			},
			wantErr: &DecodeError{Reason: ExitIO, Field: "io.data_offset", Value: fakeMapSize + 1, Limit: fakeMapSize},
		},
		{
			name: "io data offset at the top of the address space",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitIO
				*r.io() = kvmRunIO{direction: IOOut, size: 4, count: 0xffffffff, dataOffset: ^uint64(0)}
			},
			wantErr: &DecodeError{Reason: ExitIO, Field: "io.data_offset", Value: ^uint64(0), Limit: fakeMapSize},
		},
		{
			name: "io with the largest count",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitIO
				*r.io() = kvmRunIO{direction: IOIn, size: 4, count: 0xffffffff, dataOffset: fakePIODataOff}
			},
			wantErr: &DecodeError{Reason: ExitIO, Field: "io.data_offset+count*size", Value: fakePIODataOff + 4*0xffffffff, Limit: fakeMapSize},
		},
		{
			name: "mmio write",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitMMIO
				*r.mmio() = kvmRunMMIO{physAddr: 0xd0000000, data: [8]byte{1, 2, 3, 4, 5}, len: 4, isWrite: 1}
			},
			want: Exit{Reason: ExitMMIO, MMIO: MMIOExit{Addr: 0xd0000000, IsWrite: true, Data: []byte{1, 2, 3, 4}}},
		},
		{
			name: "mmio of 8 bytes",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitMMIO
				*r.mmio() = kvmRunMMIO{physAddr: 0x1000, len: 8}
			},
			want: Exit{Reason: ExitMMIO, MMIO: MMIOExit{Addr: 0x1000, Data: make([]byte, 8)}},
		},
		{
			name: "mmio longer than its data buffer",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitMMIO
				*r.mmio() = kvmRunMMIO{physAddr: 0x1000, len: 9}
			},
			wantErr: &DecodeError{Reason: ExitMMIO, Field: "mmio.len", Value: 9, Limit: 8},
		},
		{
			name: "hlt with interrupt state",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitHLT
				r.readyForInterruptInjection = 1
				r.ifFlag = 1
			},
			want: Exit{Reason: ExitHLT, ReadyForInterruptInjection: true, IFFlag: true},
		},
		{
			name:  "shutdown",
			setup: func(buf []byte, r *kvmRun) { r.exitReason = ExitShutdown },
			want:  Exit{Reason: ExitShutdown},
		},
		{
			name: "fail entry",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitFailEntry
				*r.failEntry() = kvmRunFailEntry{hardwareEntryFailureReason: 0x80000021, cpu: 3}
			},
			want: Exit{Reason: ExitFailEntry, FailEntry: FailEntryExit{HardwareReason: 0x80000021, CPU: 3}},
		},
		{
			name: "internal error",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitInternalError
				*r.internal() = kvmRunInternal{suberror: 1, ndata: 2, data: [kvmRunDataWords]uint64{7, 8, 9}}
			},
			want: Exit{Reason: ExitInternalError, Internal: InternalErrorExit{Suberror: 1, Data: []uint64{7, 8}}},
		},
		{
			name: "internal error with too much data",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitInternalError
				*r.internal() = kvmRunInternal{suberror: 1, ndata: kvmRunDataWords + 1}
			},
			wantErr: &DecodeError{Reason: ExitInternalError, Field: "internal.ndata", Value: kvmRunDataWords + 1, Limit: kvmRunDataWords},
		},
		{
			name: "system event reset",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitSystemEvent
				*r.systemEvent() = kvmRunSystemEvent{typ: SystemEventReset, ndata: 1, data: [kvmRunDataWords]uint64{42}}
			},
			want: Exit{Reason: ExitSystemEvent, SystemEvent: SystemEventExit{Type: SystemEventReset, Data: []uint64{42}}},
		},
		{
			name: "system event with too much data",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitSystemEvent
				*r.systemEvent() = kvmRunSystemEvent{typ: SystemEventCrash, ndata: 1000}
			},
			wantErr: &DecodeError{Reason: ExitSystemEvent, Field: "system_event.ndata", Value: 1000, Limit: kvmRunDataWords},
		},
		{
			name: "debug",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitDebug
				*r.debug() = kvmRunDebug{exception: 3, pc: 0x1000, dr6: 0xffff0ff0, dr7: 0x400}
			},
			want: Exit{Reason: ExitDebug, Debug: DebugExit{Exception: 3, PC: 0x1000, DR6: 0xffff0ff0, DR7: 0x400}},
		},
		{
			name: "unknown",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitUnknown
				r.hw().hardwareExitReason = 0x30
			},
			want: Exit{Reason: ExitUnknown, HardwareExitReason: 0x30},
		},
		{
			name:  "irq window open",
			setup: func(buf []byte, r *kvmRun) { r.exitReason = ExitIRQWindowOpen },
			want:  Exit{Reason: ExitIRQWindowOpen},
		},
		{
			name: "reason this package does not decode",
			setup: func(buf []byte, r *kvmRun) {
				r.exitReason = ExitX86RDMSR
				r.hw().hardwareExitReason = 0x30 // ignored: not the hw member
			},
			want: Exit{Reason: ExitX86RDMSR},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf, r := fakeRun(t)
			tt.setup(buf, r)
			got, err := decodeExit(buf)
			if tt.wantErr != nil {
				var de *DecodeError
				require.ErrorAs(t, err, &de)
				assert.Equal(t, tt.wantErr, de)
				assert.Equal(t, Exit{}, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// Data handed out for IO-in and MMIO-read exits aliases kvm_run, so what
// the caller writes is what the kernel gives the guest on the next run.
func TestExitDataAliasesKVMRun(t *testing.T) {
	t.Run("io in", func(t *testing.T) {
		buf, r := fakeRun(t)
		r.exitReason = ExitIO
		*r.io() = kvmRunIO{direction: IOIn, size: 1, port: 0x64, count: 3, dataOffset: fakePIODataOff}
		e, err := decodeExit(buf)
		require.NoError(t, err)
		copy(e.IO.Data, "xyz")
		assert.Equal(t, []byte("xyz"), buf[fakePIODataOff:fakePIODataOff+3])
		assert.Equal(t, 3, cap(e.IO.Data), "appending must not spill into the rest of the mapping")
	})
	t.Run("mmio read", func(t *testing.T) {
		buf, r := fakeRun(t)
		r.exitReason = ExitMMIO
		*r.mmio() = kvmRunMMIO{physAddr: 0xfee00000, len: 4}
		e, err := decodeExit(buf)
		require.NoError(t, err)
		copy(e.MMIO.Data, []byte{0xde, 0xad, 0xbe, 0xef})
		assert.Equal(t, [8]byte{0xde, 0xad, 0xbe, 0xef}, r.mmio().data)
		assert.Equal(t, 4, cap(e.MMIO.Data))
	})
}

func TestSetImmediateExitTouchesOnlyItsByte(t *testing.T) {
	_, r := fakeRun(t)
	r.requestInterruptWindow = 1

	r.setImmediateExit(true)
	assert.Equal(t, uint8(1), r.immediateExit)
	assert.Equal(t, uint8(1), r.requestInterruptWindow)

	r.setImmediateExit(false)
	assert.Equal(t, uint8(0), r.immediateExit)
	assert.Equal(t, uint8(1), r.requestInterruptWindow)
}

func TestRoutingEntries(t *testing.T) {
	msi := MSIRoute(24, 0x1_fee0_1000, 0x4041)
	assert.Equal(t, uint32(24), msi.GSI)
	assert.Equal(t, IRQRoutingMSI, msi.Type)
	assert.Equal(t, kvmIRQRoutingMSI{addressLo: 0xfee01000, addressHi: 1, data: 0x4041}, *msi.msi())

	chip := IRQChipRoute(4, IRQChipIOAPIC, 4)
	assert.Equal(t, uint32(4), chip.GSI)
	assert.Equal(t, IRQRoutingIRQChip, chip.Type)
	assert.Equal(t, kvmIRQRoutingIRQChip{irqchip: IRQChipIOAPIC, pin: 4}, *chip.irqchip())
}
