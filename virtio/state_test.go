package virtio_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices"
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
