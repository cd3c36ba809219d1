package virtio_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/devices/pci"
	"github.com/gvmm-dev/gvmm/virtio"
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
// whose queues lie inside guest memory, never panic.
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
	f.Fuzz(func(t *testing.T, data []byte) {
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
