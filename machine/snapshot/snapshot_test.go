package snapshot

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/balloon"
	"github.com/gvmm-dev/gvmm/virtio/net"
)

func sample() *State {
	s := &State{
		Taken: time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC),
		Config: Config{Kernel: "/k", CPUs: 2, Memory: 64 << 20, Disks: []Disk{{Path: "/d.img", Identity: DiskIdentity{Inode: 7, Size: 1 << 20}}},
			Nets: []Net{{Tap: "tap0"}}},
		MemorySize: 64 << 20,
		VM:         VM{IRQChips: make([]kvm.IRQChipState, 3), Clock: kvm.ClockData{Clock: 12345}},
		Devices: Devices{Virtio: []VirtioDevice{{Type: virtio.DeviceBalloon, Balloon: &balloon.State{NumPages: 3}},
			{Type: virtio.DeviceNet, Net: &net.State{MAC: [6]byte{0x52, 0x54, 0, 0, 0, 1}}}}},
	}
	for i := range 2 {
		v := VCPU{CPUID: []kvm.CPUIDEntry{{Function: 1, ECX: 1 << 31}}, XSave: make([]byte, 4096), MSRs: []kvm.MSREntry{{Index: 0x10, Data: 99}}}
		v.Regs.RIP = uint64(0x1000 + i)
		v.LAPIC.Regs[0x20] = byte(i)
		s.VCPUs = append(s.VCPUs, v)
	}
	s.VM.IRQChips[2].ChipID = kvm.IRQChipIOAPIC
	return s
}

func TestMarshalParseRoundTrip(t *testing.T) {
	data, err := Marshal(sample())
	require.NoError(t, err)
	got, err := Parse(data)
	require.NoError(t, err)
	assert.Equal(t, sample(), got)
}

func TestParseRefuses(t *testing.T) {
	good, err := Marshal(sample())
	require.NoError(t, err)
	edit := func(f func([]byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	reseal := func(s *State) []byte {
		b, err := Marshal(s)
		require.NoError(t, err)
		return b
	}
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrFormat},
		{"short header", good[:10], ErrFormat},
		{"bad magic", edit(func(b []byte) []byte { b[0] = 'X'; return b }), ErrFormat},
		{"other version", edit(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], Version+1); return b }), ErrVersion},
		{"truncated", good[:len(good)-1], ErrChecksum},
		{"flipped payload bit", edit(func(b []byte) []byte { b[len(b)-5] ^= 1; return b }), ErrChecksum},
		{"huge length", edit(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16:], 1<<62); return b }), ErrChecksum},
		{"vCPU count mismatch", reseal(func() *State { s := sample(); s.Config.CPUs = 3; return s }()), ErrFormat},
		{"memory size mismatch", reseal(func() *State { s := sample(); s.MemorySize = 1; return s }()), ErrFormat},
		{"irqchip count", reseal(func() *State { s := sample(); s.VM.IRQChips = nil; return s }()), ErrFormat},
		{"no CPUID", reseal(func() *State { s := sample(); s.VCPUs[1].CPUID = nil; return s }()), ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.data)
			assert.ErrorIs(t, err, tt.want)
		})
	}
}

func TestParseRefusesUnknownFields(t *testing.T) {
	payload := []byte(`{"Config":{"CPUs":1},"Surprise":1}`)
	data := envelope(payload)
	_, err := Parse(data)
	assert.ErrorIs(t, err, ErrFormat)
}

func TestWriteMemoryIsSparse(t *testing.T) {
	dir := t.TempDir()
	low := make([]byte, 4<<20)
	high := make([]byte, 2<<20)
	copy(low[8192:], "kernel")
	copy(high[len(high)-pageSize:], "top")
	path := filepath.Join(dir, MemoryFile)
	require.NoError(t, WriteMemory(path, [][]byte{low, high}))
	assert.Error(t, WriteMemory(path, [][]byte{low}), "an existing file is not overwritten")

	f, err := OpenMemory(path, 6<<20)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	assert.Less(t, st.Sys().(*syscall.Stat_t).Blocks*512, int64(64<<10), "zero pages are holes")
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, append(low, high...), got)

	_, err = OpenMemory(path, 8<<20)
	assert.ErrorIs(t, err, ErrMemoryFile, "a truncated memory file is refused")
}
