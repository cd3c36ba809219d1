package virtio_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/devices/pci"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/p9"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

// restored builds a second function on f's guest memory, as a restore in
// a new process does, and loads s into it.
func restored(t *testing.T, f *fixture, s virtio.PCIState) (*fakeDevice, *virtio.PCIDevice, *virtiotest.MSI, error) {
	t.Helper()
	dev := newFakeDevice(f.dev.sizes...)
	msi := virtiotest.NewMSI()
	fn, err := virtio.NewPCI(dev, virtio.PCIOptions{Mem: f.drv.Mem, MSI: msi, Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(fn.Reset)
	return dev, fn, msi, fn.Restore(s)
}

func TestStateRoundTripResumesQueues(t *testing.T) {
	f := newFixture(t, 8, 8)
	require.NoError(t, f.drv.Start(virtio.FeatureVersion1|virtio.FeatureEventIdx, ringBase))
	q := f.drv.Queues[0]
	q.AddChain([]virtiotest.Buf{{Data: []byte("ping")}})
	f.drv.Kick(0)
	require.True(t, f.msi.Wait(0, waitFor))
	require.Equal(t, uint16(1), q.UsedIdx())

	s := f.fn.State()
	f.fn.Reset() // the old process is gone; its memory lives on in the snapshot
	// A chain the driver made available after the snapshot's last
	// completion: the restored device must take it without a new kick.
	q.AddChain([]virtiotest.Buf{{Data: []byte("ping")}})

	dev, fn, msi, err := restored(t, f, s)
	require.NoError(t, err)
	assert.True(t, msi.Wait(0, waitFor), "the restored queue's interrupt fires")
	require.Eventually(t, func() bool { return q.UsedIdx() == 2 }, waitFor, 5*time.Millisecond)
	activations, _, processed := dev.counts()
	assert.Equal(t, 1, activations)
	assert.Equal(t, 1, processed)
	got := fn.State()
	got.ISR, s.ISR = 0, 0 // the restore's interrupts set it
	got.MSIX.Pending, s.MSIX.Pending = nil, nil
	assert.Equal(t, s, got)
}

func TestRestoreRejects(t *testing.T) {
	f := newFixture(t, 8)
	require.NoError(t, f.drv.Start(virtio.FeatureVersion1, ringBase))
	good := f.fn.State()
	f.fn.Reset()
	tests := map[string]func(*virtio.PCIState){
		"queue count":          func(s *virtio.PCIState) { s.Queues = append(s.Queues, s.Queues[0]) },
		"queue size":           func(s *virtio.PCIState) { s.Queues[0].Size = 3 },
		"queue too big":        func(s *virtio.PCIState) { s.Queues[0].Size = 16 },
		"queue vector":         func(s *virtio.PCIState) { s.Queues[0].Vector = 7 },
		"config vector":        func(s *virtio.PCIState) { s.ConfigVector = 9 },
		"unoffered features":   func(s *virtio.PCIState) { s.DriverFeatures |= 1 << 50 },
		"status bits":          func(s *virtio.PCIState) { s.Status |= 0x20 },
		"ring outside memory":  func(s *virtio.PCIState) { s.Queues[0].Device = 1 << 40 },
		"misaligned ring":      func(s *virtio.PCIState) { s.Queues[0].Desc++ },
		"enabled before FEAT":  func(s *virtio.PCIState) { s.Status = virtio.StatusAcknowledge },
		"MSI-X table size":     func(s *virtio.PCIState) { s.MSIX.Table = s.MSIX.Table[:16] },
		"MSI-X pending length": func(s *virtio.PCIState) { s.MSIX.Pending = nil },
	}
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			s := good
			s.Queues = append([]virtio.QueueState(nil), good.Queues...)
			edit(&s)
			dev, fn, _, err := restored(t, f, s)
			assert.ErrorIs(t, err, devices.ErrBadState)
			activations, _, _ := dev.counts()
			assert.Zero(t, activations)
			assert.Zero(t, fn.State().Status, "a refused state leaves the device reset")
		})
	}
}

// FuzzRestore loads hostile transport states, as a damaged or forged
// snapshot would carry: Restore must refuse them or restore a device
// whose queues lie inside guest memory, never panic. The same input, as
// a virtio-9p share's state (its JSON fields are not the transport's),
// is restored into a share and activated: refused with ErrBadState, or
// its fids reopened without a panic, without reaching outside the share
// and without truncating or creating anything.
func FuzzRestore(f *testing.F) {
	seed := func(edit func(*virtio.PCIState)) {
		s := virtio.PCIState{Status: statusRunning, DriverFeatures: virtio.FeatureVersion1, ConfigVector: virtio.NoVector,
			Queues: []virtio.QueueState{{Size: 8, Enabled: true, Vector: 0, Desc: 0x1000, Driver: 0x2000, Device: 0x3000}},
			MSIX:   pci.MSIXState{Enabled: true, Table: make([]byte, 2*pci.MSIXEntrySize), Pending: make([]bool, 2)}}
		if edit != nil {
			edit(&s)
		}
		b, err := json.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(nil)
	seed(func(s *virtio.PCIState) { s.Queues[0].Device = 1 << 30 })
	seed(func(s *virtio.PCIState) { s.Queues[0].Size = 7 })
	seed(func(s *virtio.PCIState) { s.NeedsReset = true })
	for _, fids := range [][]p9.FidState{
		{{Fid: 1}, {Fid: 2, Path: "a", Open: true, Flags: unix.O_RDWR | unix.O_TRUNC}, {Fid: 3, Path: "d", Open: true, Dir: true}},
		{{Fid: 1, Path: "l/secret", Open: true, Flags: unix.O_RDWR}, {Fid: 2, Path: "d/b", Open: true, Flags: unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY}},
		{{Fid: 1, Path: "../outside"}, {Fid: 2, Path: "/etc/passwd"}},
	} {
		b, err := json.Marshal(p9.State{Tag: "t", MessageSize: 8192, Fids: fids})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var ps p9.State
		if json.Unmarshal(data, &ps) == nil {
			fuzzShareRestore(t, ps)
		}
		var s virtio.PCIState
		if json.Unmarshal(data, &s) != nil {
			return
		}
		dev := newFakeDevice(8)
		mem := virtiotest.NewMemory(64 << 10)
		fn, err := virtio.NewPCI(dev, virtio.PCIOptions{Mem: mem, MSI: virtiotest.NewMSI(), Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer fn.Reset()
		if err := fn.Restore(s); err != nil {
			if !errors.Is(err, devices.ErrBadState) {
				t.Fatalf("Restore failed without ErrBadState: %v", err)
			}
			if fn.State().Status != 0 {
				t.Fatal("a refused state left the device configured")
			}
		}
	})
}

// fuzzShareRestore restores s into a share of a folder holding a, d/b
// and a symlink l to a folder outside with a file secret, and checks that
// every file is as it was.
func fuzzShareRestore(t *testing.T, s p9.State) {
	base := t.TempDir()
	share, outside := filepath.Join(base, "share"), filepath.Join(base, "outside")
	files := map[string]string{filepath.Join(share, "a"): "a", filepath.Join(share, "d", "b"): "b", filepath.Join(outside, "secret"): "secret"}
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(share, "l")); err != nil {
		t.Fatal(err)
	}
	dev, err := p9.New(share, p9.Options{Tag: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := dev.Restore(s); err != nil {
		if !errors.Is(err, devices.ErrBadState) {
			t.Fatalf("Restore failed without ErrBadState: %v", err)
		}
		return
	}
	mem := virtiotest.NewMemory(64 << 10)
	q, err := queue.New(mem, virtiotest.NewDriver(mem, 8, 0x1000).Config(false, false), virtiotest.NewInterrupt())
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Activate(virtio.Activation{Mem: mem, Queues: []*queue.Queue{q}}); err == nil {
		dev.Reset()
	}
	for p, content := range files {
		if b, err := os.ReadFile(p); err != nil || string(b) != content {
			t.Fatalf("%s holds %q (%v) after the restore, want %q", p, b, err, content)
		}
	}
	entries, err := os.ReadDir(share)
	if err != nil || len(entries) != 3 {
		t.Fatalf("the share holds %d entries after the restore (%v), want 3", len(entries), err)
	}
}
