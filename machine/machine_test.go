package machine

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/boot"
	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/machine/acpi"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"512M", 512 * MiB, true},
		{"2G", 2 * GiB, true},
		{"2g", 2 * GiB, true},
		{"1024", 1024 * MiB, true},
		{"65536K", 64 * MiB, true},
		{"12Q", 0, false},
		{"", 0, false},
		{"0", 0, false},
		{"-1G", 0, false},
		{"1.5G", 0, false},
		{"512MB", 0, false},
		{"99999999999T", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if !tt.ok {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string // of the ConfigError; "" for a valid config
	}{
		{"defaults", Config{Kernel: "k"}, ""},
		{"no kernel", Config{}, "Kernel"},
		{"negative cpus", Config{Kernel: "k", CPUs: -1}, "CPUs"},
		{"too many cpus", Config{Kernel: "k", CPUs: MaxCPUs + 1}, "CPUs"},
		{"too little memory", Config{Kernel: "k", Memory: 16 * MiB}, "Memory"},
		{"unaligned memory", Config{Kernel: "k", Memory: 512*MiB + 1}, "Memory"},
		{"disk without a path", Config{Kernel: "k", Disks: []Disk{{Path: "a"}, {}}}, "Disks[1].Path"},
		{"long serial", Config{Kernel: "k", Disks: []Disk{{Path: "a", Serial: "123456789012345678901"}}}, "Disks[0].Serial"},
		{"shares", Config{Kernel: "k", Shares: []Share{{Path: "/a", Tag: "a"}, {Path: "/b", Tag: "b", ReadOnly: true}}}, ""},
		{"share without a folder", Config{Kernel: "k", Shares: []Share{{Tag: "a"}}}, "Shares[0].Path"},
		{"share tag with a space", Config{Kernel: "k", Shares: []Share{{Path: "/a", Tag: "a b"}}}, "Shares[0].Tag"},
		{"share tag twice", Config{Kernel: "k", Shares: []Share{{Path: "/a", Tag: "t"}, {Path: "/b", Tag: "t"}}}, "Shares[1].Tag"},
		{"too many shares", Config{Kernel: "k", Shares: make([]Share, maxShares+1)}, "Shares"},
		{"vsock", Config{Kernel: "k", Vsock: &VsockConfig{CID: 3, Socket: "/run/v.sock"}}, ""},
		{"vsock host CID", Config{Kernel: "k", Vsock: &VsockConfig{CID: 2}}, "Vsock.CID"},
		{"vsock CID any", Config{Kernel: "k", Vsock: &VsockConfig{CID: 1<<32 - 1}}, "Vsock.CID"},
		{"vsock long socket", Config{Kernel: "k", Vsock: &VsockConfig{CID: 3, Socket: "/" + strings.Repeat("s", 107)}}, "Vsock.Socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.cfg.withDefaults()
			if tt.field != "" {
				assert.ErrorIs(t, err, ErrInvalidConfig)
				ce, ok := errors.AsType[*ConfigError](err)
				require.True(t, ok, "%v is not a *ConfigError", err)
				assert.Equal(t, tt.field, ce.Field)
				assert.Equal(t, err, tt.cfg.Validate())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, DefaultCmdline, c.Cmdline)
			assert.Equal(t, DefaultCPUs, c.CPUs)
			assert.Equal(t, uint64(DefaultMemory), c.Memory)
		})
	}
}

func TestCPUOvercommitGuard(t *testing.T) {
	n := hostCPUs()
	_, err := (&Config{Kernel: "k", CPUs: n}).withDefaults()
	assert.NoError(t, err, "as many vCPUs as host CPUs is fine")
	_, err = (&Config{Kernel: "k", CPUs: n + 1}).withDefaults()
	assert.ErrorIs(t, err, ErrCPUOvercommit)
	assert.ErrorContains(t, err, "logical CPUs")
	_, err = (&Config{Kernel: "k", CPUs: n + 1, AllowCPUOvercommit: true}).withDefaults()
	assert.NoError(t, err)
	// Refused for its memory, with no logger yet: no warning, no panic.
	_, err = (&Config{Kernel: "k", CPUs: n + 1, AllowCPUOvercommit: true, Memory: MiB}).withDefaults()
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

func TestRAMLayoutAndE820(t *testing.T) {
	tests := []struct {
		name   string
		size   uint64
		ranges []ramRange
	}{
		{"small", 128 * MiB, []ramRange{{0, 128 * MiB}}},
		{"exactly the hole start", MMIOHoleStart, []ramRange{{0, MMIOHoleStart}}},
		{"split by the hole", 3584 * MiB, []ramRange{{0, MMIOHoleStart}, {HighRAMStart, 512 * MiB}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ram := ramLayout(tt.size)
			assert.Equal(t, tt.ranges, ram)
			m, err := e820(ram)
			require.NoError(t, err)
			var total uint64
			for i, e := range m {
				if i > 0 {
					assert.GreaterOrEqual(t, e.Addr, m[i-1].Addr+m[i-1].Size, "sorted, no overlap")
				}
				if e.Type == boot.E820RAM {
					total += e.Size
					assert.False(t, e.Addr < IOAPICAddr && e.Addr+e.Size > PCIMMIOStart, "no RAM in the MMIO hole")
				}
			}
			// Only the legacy BIOS area is taken from RAM.
			assert.Equal(t, tt.size-(boot.HighMemStart-boot.EBDAStart), total)
		})
	}
	_, err := e820(ramLayout(32 * MiB))
	assert.Error(t, err)
}

func TestACPIRegionIsReserved(t *testing.T) {
	m, err := e820(ramLayout(256 * MiB))
	require.NoError(t, err)
	start, end := uint64(acpi.RegionBase), uint64(acpi.RegionBase)+acpi.RegionSize
	covered := false
	for _, e := range m {
		if e.Type == boot.E820Reserved && e.Addr <= start && end <= e.Addr+e.Size {
			covered = true
		}
	}
	assert.True(t, covered, "the ACPI tables must sit in a reserved e820 range")
}

func TestGuestCPUID(t *testing.T) {
	supported := []kvm.CPUIDEntry{
		{Function: 0x1, EBX: 0xaabb0800, ECX: 0, EDX: 0},
		{Function: 0xb, Index: 0}, {Function: 0xb, Index: 1}, {Function: 0xb, Index: 2, ECX: 2},
		{Function: 0x40000000, EBX: 0x4b4d564b},
	}
	for _, tt := range []struct {
		id, n       int
		tscDeadline bool
	}{{0, 1, false}, {1, 2, true}, {3, 4, false}} {
		out := guestCPUID(supported, tt.id, tt.n, tt.tscDeadline)
		require.Len(t, out, len(supported))
		leaf1 := out[0]
		assert.Equal(t, uint32(tt.id), leaf1.EBX>>24, "initial APIC ID")
		assert.Equal(t, uint32(tt.n), leaf1.EBX>>16&0xff, "logical processors")
		assert.Equal(t, uint32(0x0800), leaf1.EBX&0xffff, "CLFLUSH size kept")
		assert.NotZero(t, leaf1.ECX&featureECXHypervis, "hypervisor bit")
		assert.Equal(t, tt.n > 1, leaf1.EDX&featureEDXHTT != 0)
		assert.Equal(t, tt.tscDeadline, leaf1.ECX&featureECXTSCDline != 0, "TSC-deadline timer")
		for _, e := range out[1:4] {
			assert.Equal(t, uint32(tt.id), e.EDX, "x2APIC ID in leaf 0xb")
		}
		assert.Equal(t, uint32(tt.n), out[2].EBX, "cores at the core level")
		assert.Equal(t, uint32(0x4b4d564b), out[4].EBX, "KVM signature kept")
	}
	assert.Equal(t, uint32(0), supported[0].ECX, "the supported list is not modified")
}

func TestSetupLAPIC(t *testing.T) {
	var s kvm.LAPICState
	binary.LittleEndian.PutUint32(s.Regs[apicLVTLINT0:], 0x10000) // masked, fixed
	setupLAPIC(&s)
	assert.Equal(t, uint32(0x10000|apicModeExtINT), binary.LittleEndian.Uint32(s.Regs[apicLVTLINT0:]))
	assert.Equal(t, uint32(apicModeNMI), binary.LittleEndian.Uint32(s.Regs[apicLVTLINT1:]))
}

func TestApplyEntry(t *testing.T) {
	e := &boot.Entry{
		Mode: boot.Long64, RIP: 0x100200, RSI: 0x7000, RSP: 0x9000, RFLAGS: 2,
		CR0: 0x80000011, CR3: 0x9000, CR4: 0x20, EFER: 0x500,
		GDT: boot.Table{Base: 0x500, Limit: 0x2f},
		CS:  boot.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 0xb, Present: true, S: true, L: true, G: true},
	}
	var sregs kvm.Sregs
	var regs kvm.Regs
	applyEntry(&sregs, &regs, e)
	assert.Equal(t, kvm.Regs{RIP: 0x100200, RSI: 0x7000, RSP: 0x9000, RFLAGS: 2}, regs)
	assert.Equal(t, uint64(0x500), sregs.EFER)
	assert.Equal(t, kvm.DTable{Base: 0x500, Limit: 0x2f}, sregs.GDT)
	assert.Equal(t, kvm.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}, sregs.CS)
}

func TestVsockCallsWithoutTheDevice(t *testing.T) {
	m := &Machine{}
	_, err := m.DialVsock(context.Background(), 1)
	assert.ErrorIs(t, err, ErrNoVsock)
	_, err = m.ListenVsock(1)
	assert.ErrorIs(t, err, ErrNoVsock)
	_, _, ok := m.Vsock()
	assert.False(t, ok)
}
