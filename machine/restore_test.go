package machine

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/machine/snapshot"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio"
	vnet "github.com/gvmm-dev/gvmm/virtio/net"
)

// writeTestSnapshot writes a snapshot folder of a one-vCPU machine with
// one disk, as Snapshot would, without KVM.
func writeTestSnapshot(t *testing.T) (dir, disk string) {
	t.Helper()
	base := t.TempDir()
	disk = filepath.Join(base, "disk.img")
	require.NoError(t, os.WriteFile(disk, make([]byte, 1<<20), 0o600))
	share := filepath.Join(base, "share")
	require.NoError(t, os.Mkdir(share, 0o700))
	cfg := Config{Kernel: "/boot/vmlinuz", CPUs: 1, Memory: 64 * MiB, Disks: []Disk{{Path: disk, Serial: "s1"}},
		Shares: []Share{{Path: share, Tag: "data"}}}
	st := &snapshot.State{Taken: time.Now(), Config: snapshotConfig(cfg), MemorySize: 64 * MiB,
		VM:    snapshot.VM{IRQChips: make([]kvm.IRQChipState, 3)},
		VCPUs: []snapshot.VCPU{{CPUID: []kvm.CPUIDEntry{{Function: 0}}}}}
	id, err := diskIdentity(disk)
	require.NoError(t, err)
	st.Config.Disks[0].Identity = id
	dir = filepath.Join(base, "snap")
	ram := make([]byte, 64*MiB)
	copy(ram[1<<20:], "kernel text")
	require.NoError(t, writeSnapshot(dir, st, []memory.Region{{Data: ram}}))
	return dir, disk
}

func TestRestoreReadsASnapshot(t *testing.T) {
	dir, disk := writeTestSnapshot(t)
	m, err := Restore(dir, RestoreOptions{})
	require.NoError(t, err)
	c := m.Config()
	assert.Equal(t, 1, c.CPUs)
	assert.Equal(t, uint64(64*MiB), c.Memory)
	assert.Equal(t, []Disk{{Path: disk, Serial: "s1"}}, c.Disks)
	assert.Equal(t, []Share{{Path: filepath.Join(filepath.Dir(dir), "share"), Tag: "data"}}, c.Shares)
	assert.Equal(t, "/boot/vmlinuz", c.Kernel, "kept for a later reboot")
}

func TestRestoreRefuses(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(t *testing.T, dir, disk string)
		want  error
	}{
		{"damaged state file", func(t *testing.T, dir, _ string) {
			p := filepath.Join(dir, snapshot.StateFile)
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			b[len(b)-3] ^= 0x10
			require.NoError(t, os.WriteFile(p, b, 0o600))
		}, snapshot.ErrChecksum},
		{"truncated state file", func(t *testing.T, dir, _ string) {
			require.NoError(t, os.Truncate(filepath.Join(dir, snapshot.StateFile), 100))
		}, snapshot.ErrChecksum},
		{"truncated memory file", func(t *testing.T, dir, _ string) {
			require.NoError(t, os.Truncate(filepath.Join(dir, snapshot.MemoryFile), 32*MiB))
		}, snapshot.ErrMemoryFile},
		{"written disk image", func(t *testing.T, _, disk string) {
			time.Sleep(10 * time.Millisecond) // a later modification time
			require.NoError(t, os.WriteFile(disk, make([]byte, 1<<20), 0o600))
		}, ErrDiskChanged},
		{"replaced disk image", func(t *testing.T, _, disk string) {
			require.NoError(t, os.Remove(disk))
			require.NoError(t, os.WriteFile(disk, make([]byte, 1<<20), 0o600))
		}, ErrDiskChanged},
		{"missing state file", func(t *testing.T, dir, _ string) {
			require.NoError(t, os.Remove(filepath.Join(dir, snapshot.StateFile)))
		}, os.ErrNotExist},
		{"missing share folder", func(t *testing.T, dir, _ string) {
			require.NoError(t, os.Remove(filepath.Join(filepath.Dir(dir), "share")))
		}, ErrShare},
		{"share folder replaced by a file", func(t *testing.T, dir, _ string) {
			share := filepath.Join(filepath.Dir(dir), "share")
			require.NoError(t, os.Remove(share))
			require.NoError(t, os.WriteFile(share, nil, 0o600))
		}, ErrShare},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, disk := writeTestSnapshot(t)
			tt.spoil(t, dir, disk)
			_, err := Restore(dir, RestoreOptions{})
			assert.ErrorIs(t, err, tt.want)
		})
	}
}

func TestWriteSnapshotRefusesAFullFolder(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "x"), nil, 0o600))
	err := writeSnapshot(dir, &snapshot.State{}, nil)
	assert.ErrorContains(t, err, "not empty")
}

// netSnapshot is the part of a snapshot's state restoredNets reads: a
// net given by name, one given by file, each with its device's state.
func netSnapshot() *snapshot.State {
	limits := vnet.Limits{TX: vnet.Limit{Packets: ratelimit.Bucket{Rate: 100}}}
	return &snapshot.State{
		Config: snapshot.Config{Nets: []snapshot.Net{{Tap: "tap0"}, {}}},
		Devices: snapshot.Devices{Virtio: []snapshot.VirtioDevice{
			{Type: virtio.DeviceBlock},
			{Type: virtio.DeviceNet, Net: &vnet.State{MAC: [6]byte{0x52, 0x54, 0, 0, 0, 1}, Limits: limits}},
			{Type: virtio.DeviceNet, Net: &vnet.State{MAC: [6]byte{0x52, 0x54, 0, 0, 0, 2}}},
		}},
	}
}

func TestRestoredNets(t *testing.T) {
	mac1, mac2 := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}
	limits := vnet.Limits{TX: vnet.Limit{Packets: ratelimit.Bucket{Rate: 100}}}
	other := vnet.Limits{RX: vnet.Limit{Packets: ratelimit.Bucket{Rate: 7}}}
	file, err := os.Open(os.DevNull) // restoredNets only passes it on
	require.NoError(t, err)
	defer file.Close()
	tests := []struct {
		name  string
		edit  func(*snapshot.State)
		over  []Net
		want  []Net
		error string
	}{
		{name: "by the snapshot's names", edit: func(s *snapshot.State) { s.Config.Nets[1].Tap = "tap1" },
			want: []Net{{Tap: "tap0", MAC: mac1, Limits: limits}, {Tap: "tap1", MAC: mac2}}},
		{name: "other TAPs", over: []Net{{Tap: "clone0"}, {File: file, MAC: mac2, Limits: other}},
			want: []Net{{Tap: "clone0", MAC: mac1, Limits: limits}, {File: file, MAC: mac2, Limits: other}}},
		{name: "a file not given again", error: "network device 1 was given an open TAP file"},
		{name: "another count", over: []Net{{Tap: "clone0"}}, error: "the snapshot has 2 network devices, 1 TAPs given"},
		{name: "another MAC", over: []Net{{Tap: "a", MAC: mac2}, {Tap: "b"}}, error: "the guest's driver keeps the MAC"},
		{name: "a device without its state", edit: func(s *snapshot.State) { s.Devices.Virtio[2].Net = nil },
			error: "without its state"},
		{name: "a device the configuration lacks", edit: func(s *snapshot.State) { s.Config.Nets = s.Config.Nets[:1] },
			error: "1 network devices configured, 2 saved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := netSnapshot()
			if tt.edit != nil {
				tt.edit(st)
			}
			got, err := restoredNets(st, tt.over)
			if tt.error != "" {
				assert.ErrorContains(t, err, tt.error)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestCheckCPUID(t *testing.T) {
	host := []kvm.CPUIDEntry{
		{Function: 1, ECX: 0x0000_00ff, EDX: 0xffff},
		{Function: 7, Index: 0, Flags: kvm.CPUIDFlagSignificantIndex, EBX: 0xf0},
	}
	ok := []kvm.CPUIDEntry{
		// The machine's own bits are not the host's to have.
		{Function: 1, ECX: 0x0f | featureECXHypervis | featureECXTSCDline, EDX: 0xff | featureEDXHTT},
		{Function: 7, Index: 0, Flags: kvm.CPUIDFlagSignificantIndex, EBX: 0x10},
	}
	require.NoError(t, checkCPUID(ok, host))
	avx512 := append([]kvm.CPUIDEntry(nil), ok...)
	avx512[1].EBX |= 1 << 16
	err := checkCPUID(avx512, host)
	assert.ErrorIs(t, err, ErrCPUFeatures)
	assert.ErrorContains(t, err, "leaf 0x7.0 ebx bits 0x10000")
}

func TestRestoredConfigRoundTrip(t *testing.T) {
	cfg := Config{Kernel: "/k", Initrd: "/i", Cmdline: "quiet", CPUs: 2, Memory: 128 * MiB, OnReboot: RebootRestart,
		Disks:   []Disk{{Path: "/d", ReadOnly: true, Serial: "x"}},
		Balloon: &BalloonConfig{Size: 16 * MiB}, Vsock: &VsockConfig{CID: 3, Socket: "/run/v.sock"}, Mergeable: true}
	cfg.Shares = []Share{{Path: "/srv/a", Tag: "a", ReadOnly: true}, {Path: "/srv/b", Tag: "b", SetID: true}}
	got, err := restoredConfig(snapshotConfig(cfg), RestoreOptions{})
	require.NoError(t, err)
	assert.Equal(t, cfg, *got)
	clone, err := restoredConfig(snapshotConfig(cfg), RestoreOptions{VsockSocket: "/run/clone.sock",
		Shares: []Share{{Path: "/srv/b2", Tag: "b", ReadOnly: true}}})
	require.NoError(t, err)
	assert.Equal(t, &VsockConfig{CID: 3, Socket: "/run/clone.sock"}, clone.Vsock, "a clone's own vsock socket")
	assert.Equal(t, []Share{cfg.Shares[0], {Path: "/srv/b2", Tag: "b", ReadOnly: true}}, clone.Shares, "a clone's own copy of a share")
	_, err = restoredConfig(snapshotConfig(cfg), RestoreOptions{Shares: []Share{{Path: "/srv/c", Tag: "c"}}})
	assert.ErrorIs(t, err, ErrShare, "a tag the snapshot lacks")
}

func TestAdvanceTSC(t *testing.T) {
	msrs := []kvm.MSREntry{{Index: msrTSC, Data: 1000}, {Index: msrSTAR, Data: 7}}
	got := advanceTSC(msrs, 2_000_000, 1500*time.Millisecond) // a 2 GHz TSC
	assert.Equal(t, []kvm.MSREntry{{Index: msrTSC, Data: 1000 + 3_000_000_000}, {Index: msrSTAR, Data: 7}}, got)
	assert.Equal(t, uint64(1000), msrs[0].Data, "the saved state is not changed")
	assert.Equal(t, msrs, advanceTSC(msrs, 2_000_000, 0))
	century := advanceTSC(msrs, 5_000_000, 100*365*24*time.Hour)
	assert.Equal(t, uint64(1000+100*365*24*3600*5_000_000_000), century[0].Data, "no overflow")
}

func TestTSCAtClock(t *testing.T) {
	msrs := []kvm.MSREntry{{Index: msrSTAR, Data: 7}, {Index: msrTSC, Data: 1_000_000}}
	const khz = 2_000_000 // a 2 GHz TSC
	tests := []struct {
		name       string
		saved, now uint64 // kvmclock, ns
		want       uint64
	}{
		{"clock where it was saved", 5e9, 5e9, 1_000_000},
		{"1.5 s later", 5e9, 6.5e9, 1_000_000 + 3_000_000_000},
		{"1 ns later: rounded down", 5e9, 5e9 + 1, 1_000_000 + 2},
		{"clock behind the saved one", 5e9, 4e9, 1_000_000},
		{"a century later", 0, 100 * 365 * 24 * 3600 * 1e9, 1_000_000 + 100*365*24*3600*2_000_000_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tscAtClock(msrs, khz, tt.saved, tt.now))
		})
	}
}

func TestSetTSC(t *testing.T) {
	msrs := []kvm.MSREntry{{Index: msrSTAR, Data: 7}, {Index: msrTSC, Data: 1}}
	setTSC(msrs, 42)
	assert.Equal(t, []kvm.MSREntry{{Index: msrSTAR, Data: 7}, {Index: msrTSC, Data: 42}}, msrs)
}
