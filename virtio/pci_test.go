package virtio_test

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/devices/pci"
	"github.com/gvmm-dev/gvmm/internal/ratelog"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/queue"
	"github.com/gvmm-dev/gvmm/virtio/virtiotest"
)

const (
	statusAck      = virtio.StatusAcknowledge
	statusDriver   = virtio.StatusDriver
	statusFeatures = virtio.StatusFeaturesOK
	statusDriverOK = virtio.StatusDriverOK
	statusRunning  = statusAck | statusDriver | statusFeatures | statusDriverOK
	ringBase       = 0x100000
	waitFor        = 5 * time.Second
	deviceFeature  = 1 << 5
)

var _ virtio.Device = (*fakeDevice)(nil)

// fakeDevice completes every chain with length 0, or fails on demand.
type fakeDevice struct {
	sizes  []uint16
	config []byte
	fail   error // returned by Process for the first chain it pops

	mu          sync.Mutex
	act         virtio.Activation
	activations int
	resets      int
	processed   int
}

func newFakeDevice(sizes ...uint16) *fakeDevice {
	return &fakeDevice{sizes: sizes, config: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
}

func (f *fakeDevice) Type() virtio.DeviceType { return virtio.DeviceBalloon }
func (f *fakeDevice) Features() uint64        { return deviceFeature }
func (f *fakeDevice) QueueMaxSizes() []uint16 { return f.sizes }
func (f *fakeDevice) ReadConfig(off uint64, data []byte) {
	virtio.ReadConfigBytes(f.config, off, data)
}
func (f *fakeDevice) WriteConfig(uint64, []byte) {}

func (f *fakeDevice) Activate(a virtio.Activation) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.act = a
	f.activations++
	return nil
}

func (f *fakeDevice) Process(ctx context.Context, idx int) error {
	q := f.act.Queues[idx]
	var c queue.Chain
	for ctx.Err() == nil {
		ok, err := q.Pop(&c)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if f.fail != nil {
			return f.fail // a chain it cannot handle
		}
		if err := q.Push(c.Head, 0); err != nil {
			return err
		}
		f.mu.Lock()
		f.processed++
		f.mu.Unlock()
	}
	return q.SignalUsed()
}

func (f *fakeDevice) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resets++
	f.act = virtio.Activation{}
}

func (f *fakeDevice) counts() (activations, resets, processed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.activations, f.resets, f.processed
}

type fixture struct {
	dev *fakeDevice
	fn  *virtio.PCIDevice
	drv *virtiotest.PCIDriver
	msi *virtiotest.MSI
}

func newFixture(t *testing.T, sizes ...uint16) *fixture {
	t.Helper()
	dev := newFakeDevice(sizes...)
	mem := virtiotest.NewMemory(4 << 20)
	msi := virtiotest.NewMSI()
	fn, err := virtio.NewPCI(dev, virtio.PCIOptions{Mem: mem, MSI: msi, Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	drv, err := virtiotest.NewPCIDriver(fn, mem)
	require.NoError(t, err)
	t.Cleanup(func() {
		drv.SetStatus(0) // stops the workers
		assert.NoError(t, fn.Close())
	})
	return &fixture{dev: dev, fn: fn, drv: drv, msi: msi}
}

func cfg(cs *pci.ConfigSpace, off uint64, n int) uint64 {
	var b [8]byte
	cs.Read(off, b[:n])
	return binary.LittleEndian.Uint64(b[:])
}

func TestPCIIdentity(t *testing.T) {
	f := newFixture(t, 64, 32)
	cs := f.fn.ConfigSpace()
	assert.Equal(t, uint64(0x1af4), cfg(cs, pci.RegVendorID, 2))
	assert.Equal(t, uint64(0x1045), cfg(cs, pci.RegDeviceID, 2), "0x1040 + balloon")
	assert.Equal(t, uint64(1), cfg(cs, pci.RegRevision, 1))
	assert.GreaterOrEqual(t, cfg(cs, pci.RegSubsystemID, 2), uint64(0x40))
	assert.Equal(t, uint64(0x4), cfg(cs, pci.RegBAR0, 4)&0xf, "64-bit memory BAR")
	assert.Equal(t, virtio.PCIBar, f.drv.Common.Bar)
	assert.Equal(t, uint32(virtio.NotifyOffMultiplier), f.drv.Multiplier)
	assert.GreaterOrEqual(t, f.drv.Notify.Length, uint32(1*virtio.NotifyOffMultiplier+2))
	assert.Equal(t, uint64(2), f.drv.ReadCommon(virtiotest.CommonNumQueues, 2))
	for q := 0; q < 2; q++ {
		f.drv.WriteCommon(virtiotest.CommonQueueSelect, 2, uint64(q))
		off := f.drv.ReadCommon(virtiotest.CommonQueueNotifyOff, 2)
		assert.Equal(t, uint64(f.drv.Notify.Offset)+off*uint64(f.drv.Multiplier), f.fn.NotifyOffset(q))
	}
	f.drv.WriteCommon(virtiotest.CommonQueueSelect, 2, 0)
	assert.Equal(t, uint64(64), f.drv.ReadCommon(virtiotest.CommonQueueSize, 2))
	assert.Equal(t, uint64(virtio.NoVector), f.drv.ReadCommon(virtiotest.CommonQueueMSIXVector, 2))
	f.drv.WriteCommon(virtiotest.CommonQueueSelect, 2, 2)
	assert.Equal(t, uint64(0), f.drv.ReadCommon(virtiotest.CommonQueueSize, 2), "no queue 2")
	assert.Equal(t, uint64(0x04030201), f.drv.ReadDeviceConfig(0, 4))
	assert.Equal(t, uint64(0), f.drv.ReadDeviceConfig(8, 4), "past the device's config")
}

func TestNewPCIRejectsBadDevices(t *testing.T) {
	opts := virtio.PCIOptions{Mem: virtiotest.NewMemory(4096), MSI: virtiotest.NewMSI()}
	for _, sizes := range [][]uint16{nil, {0}, {100}, make([]uint16, virtio.MaxQueues+1)} {
		_, err := virtio.NewPCI(newFakeDevice(sizes...), opts)
		assert.ErrorIs(t, err, virtio.ErrDevice, "%v", sizes)
	}
	_, err := virtio.NewPCI(newFakeDevice(8), virtio.PCIOptions{})
	assert.Error(t, err, "no memory or MSI router")
}

func TestFeatureNegotiation(t *testing.T) {
	offered := uint64(virtio.FeatureVersion1 | virtio.FeatureIndirectDesc | virtio.FeatureEventIdx | deviceFeature)
	tests := []struct {
		name     string
		accepted uint64
		ok       bool
	}{
		{"everything offered", offered, true},
		{"VERSION_1 only", virtio.FeatureVersion1, true},
		{"without VERSION_1", deviceFeature, false},
		{"unoffered bit", virtio.FeatureVersion1 | 1<<40, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 8)
			assert.Equal(t, offered, f.drv.DeviceFeatures())
			assert.Equal(t, tt.ok, f.drv.Negotiate(tt.accepted))
			f.drv.WriteCommon(virtiotest.CommonDriverFeatureSelect, 4, 1)
			assert.Equal(t, tt.accepted>>32, f.drv.ReadCommon(virtiotest.CommonDriverFeature, 4))
		})
	}
	f := newFixture(t, 8)
	require.True(t, f.drv.Negotiate(virtio.FeatureVersion1))
	f.drv.SetDriverFeatures(offered)
	f.drv.WriteCommon(virtiotest.CommonDriverFeatureSelect, 4, 0)
	assert.Equal(t, uint64(0), f.drv.ReadCommon(virtiotest.CommonDriverFeature, 4), "fixed after FEATURES_OK")
	f.drv.WriteCommon(virtiotest.CommonDeviceFeatureSelect, 4, 2)
	assert.Equal(t, uint64(0), f.drv.ReadCommon(virtiotest.CommonDeviceFeature, 4))
}

func TestStatusMachine(t *testing.T) {
	f := newFixture(t, 8)
	f.drv.SetStatus(statusAck | statusDriver)
	f.drv.SetStatus(statusAck)
	assert.Equal(t, uint8(statusAck|statusDriver), f.drv.Status(), "bits are only cleared by reset")
	f.drv.SetStatus(statusAck | statusDriver | statusDriverOK)
	assert.Equal(t, uint8(statusAck|statusDriver|statusDriverOK|virtio.StatusNeedsReset), f.drv.Status(),
		"DRIVER_OK without FEATURES_OK")
	activations, _, _ := f.dev.counts()
	assert.Zero(t, activations)
	f.drv.SetStatus(0)
	assert.Equal(t, uint8(0), f.drv.Status())
	require.NoError(t, f.drv.Start(virtio.FeatureVersion1, ringBase))
	activations, resets, _ := f.dev.counts()
	assert.Equal(t, 1, activations)
	assert.Equal(t, 2, resets, "ours and the one starting Start's negotiation")
	f.drv.SetStatus(statusRunning | virtio.StatusFailed)
	assert.Equal(t, uint8(statusRunning|virtio.StatusFailed), f.drv.Status())
}

func TestQueueEnableValidation(t *testing.T) {
	tests := []struct {
		name  string
		setup func(d *virtiotest.PCIDriver)
	}{
		{"size zero", func(d *virtiotest.PCIDriver) { d.WriteCommon(virtiotest.CommonQueueSize, 2, 0) }},
		{"size not a power of two", func(d *virtiotest.PCIDriver) { d.WriteCommon(virtiotest.CommonQueueSize, 2, 6) }},
		{"size above maximum", func(d *virtiotest.PCIDriver) { d.WriteCommon(virtiotest.CommonQueueSize, 2, 16) }},
		{"misaligned descriptor table", func(d *virtiotest.PCIDriver) { d.WriteCommon(virtiotest.CommonQueueDesc, 4, ringBase+8) }},
		{"used ring outside memory", func(d *virtiotest.PCIDriver) { d.WriteCommon(virtiotest.CommonQueueDevice+4, 4, 1) }},
		{"used ring on the last page", func(d *virtiotest.PCIDriver) { d.WriteCommon(virtiotest.CommonQueueDevice, 4, 4<<20-0x40) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 8)
			require.True(t, f.drv.Negotiate(virtio.FeatureVersion1))
			f.drv.WriteCommon(virtiotest.CommonQueueSelect, 2, 0)
			f.drv.WriteCommon(virtiotest.CommonQueueDesc, 4, ringBase)
			f.drv.WriteCommon(virtiotest.CommonQueueDriver, 4, ringBase+0x1000)
			f.drv.WriteCommon(virtiotest.CommonQueueDevice, 4, ringBase+0x2000)
			tt.setup(f.drv)
			f.drv.WriteCommon(virtiotest.CommonQueueEnable, 2, 1)
			assert.Equal(t, uint64(0), f.drv.ReadCommon(virtiotest.CommonQueueEnable, 2))
			assert.NotZero(t, f.drv.Status()&virtio.StatusNeedsReset)
			f.drv.SetStatus(statusAck | statusDriver | statusFeatures | statusDriverOK)
			activations, _, _ := f.dev.counts()
			assert.Zero(t, activations, "a broken device is not activated")
		})
	}
}

func TestQueueSetupRules(t *testing.T) {
	f := newFixture(t, 8)
	// Enabling a queue before FEATURES_OK is a driver bug.
	f.drv.SetStatus(statusAck | statusDriver)
	f.drv.SetupQueue(0, 8, ringBase)
	assert.NotZero(t, f.drv.Status()&virtio.StatusNeedsReset)

	require.True(t, f.drv.Negotiate(virtio.FeatureVersion1))
	assert.Zero(t, f.drv.Status()&virtio.StatusNeedsReset, "reset clears NEEDS_RESET")
	drv := f.drv.SetupQueue(0, 4, ringBase)
	assert.Equal(t, uint64(1), f.drv.ReadCommon(virtiotest.CommonQueueEnable, 2))
	f.drv.WriteCommon(virtiotest.CommonQueueSize, 2, 8)
	f.drv.WriteCommon(virtiotest.CommonQueueDesc, 8, 0)
	assert.Equal(t, uint64(4), f.drv.ReadCommon(virtiotest.CommonQueueSize, 2), "enabled queue is fixed")
	assert.Equal(t, uint64(drv.Desc), f.drv.ReadCommon(virtiotest.CommonQueueDesc, 8))
	// Vectors beyond the MSI-X table read back as NO_VECTOR.
	f.drv.WriteCommon(virtiotest.CommonQueueMSIXVector, 2, 2)
	assert.Equal(t, uint64(virtio.NoVector), f.drv.ReadCommon(virtiotest.CommonQueueMSIXVector, 2))
	f.drv.WriteCommon(virtiotest.CommonConfigMSIXVector, 2, 1)
	assert.Equal(t, uint64(1), f.drv.ReadCommon(virtiotest.CommonConfigMSIXVector, 2))
	// Odd widths are ignored.
	f.drv.WriteCommon(virtiotest.CommonQueueSelect, 4, 0x10001)
	assert.Equal(t, uint64(0), f.drv.ReadCommon(virtiotest.CommonQueueSelect, 2))

	f.drv.SetStatus(0)
	assert.Equal(t, uint64(0), f.drv.ReadCommon(virtiotest.CommonQueueEnable, 2))
	assert.Equal(t, uint64(8), f.drv.ReadCommon(virtiotest.CommonQueueSize, 2))
	assert.Equal(t, uint64(virtio.NoVector), f.drv.ReadCommon(virtiotest.CommonConfigMSIXVector, 2))
	assert.Equal(t, uint64(0), f.drv.ReadCommon(virtiotest.CommonQueueDesc, 8))
}

func TestNotifyRunsWorker(t *testing.T) {
	f := newFixture(t, 16, 16)
	require.NoError(t, f.drv.Start(virtio.FeatureVersion1|virtio.FeatureEventIdx, ringBase))
	q1 := f.drv.Queues[1]
	q1.SetUsedEvent(0)
	head, _ := q1.AddChain([]virtiotest.Buf{{Data: []byte("ping")}})
	f.drv.Kick(1)
	require.True(t, f.msi.Wait(1, waitFor), "queue 1's vector")
	assert.Equal(t, []virtiotest.Used{{ID: uint32(head)}}, q1.Used())
	assert.Equal(t, uint8(1), f.drv.ReadISR(), "queue interrupt bit")
	assert.Equal(t, uint8(0), f.drv.ReadISR(), "reading the ISR clears it")
	assert.Zero(t, f.msi.Count(0))

	// The doorbell rung as KVM rings an ioeventfd.
	q1.SetUsedEvent(1)
	q1.AddChain([]virtiotest.Buf{{Data: []byte("pong")}})
	require.NoError(t, f.fn.Doorbell(1).Signal())
	require.True(t, f.msi.Wait(1, waitFor))

	// And as a device's host side kicks its queue.
	q1.SetUsedEvent(2)
	q1.AddChain([]virtiotest.Buf{{Data: []byte("again")}})
	f.fn.Notify(1)
	require.True(t, f.msi.Wait(1, waitFor))
	f.fn.Notify(-1)
	f.fn.Notify(2)
}

func TestNotifyAfterClose(t *testing.T) {
	dev := newFakeDevice(8)
	fn, err := virtio.NewPCI(dev, virtio.PCIOptions{Mem: virtiotest.NewMemory(1 << 20), MSI: virtiotest.NewMSI(), Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, fn.Close())
	fn.Notify(0) // a device's late kick: dropped, no panic
	assert.ErrorIs(t, fn.Doorbell(0).Signal(), os.ErrClosed)
}

// startWithChain probes the one-queue device as Start does, with a chain
// made available before DRIVER_OK: activation's kick takes it, and
// nothing the test writes to the ring races the worker.
func startWithChain(t *testing.T, f *fixture) {
	t.Helper()
	require.True(t, f.drv.Negotiate(virtio.FeatureVersion1))
	f.drv.EnableMSIX(2)
	f.drv.WriteCommon(virtiotest.CommonConfigMSIXVector, 2, 1)
	f.drv.SetupQueue(0, 0, ringBase).AddChain([]virtiotest.Buf{{Len: 4, Write: true}})
	f.drv.SetStatus(1 | 2 | 8 | 4)
}

func TestProcessErrorNeedsReset(t *testing.T) {
	f := newFixture(t, 8)
	f.dev.fail = errors.New("broken chain")
	gen := f.drv.ReadCommon(virtiotest.CommonConfigGeneration, 1)
	startWithChain(t, f)
	require.True(t, f.msi.Wait(1, waitFor), "configuration change vector")
	assert.NotZero(t, f.drv.Status()&virtio.StatusNeedsReset)
	assert.NotEqual(t, gen, f.drv.ReadCommon(virtiotest.CommonConfigGeneration, 1))
	assert.Equal(t, uint8(2), f.drv.ReadISR()&2)

	f.drv.SetStatus(0)
	assert.Equal(t, uint8(0), f.drv.Status())
	f.dev.fail = nil
	startWithChain(t, f)
	require.True(t, f.msi.Wait(0, waitFor), "works again after reset")
	assert.Zero(t, f.drv.Status()&virtio.StatusNeedsReset)
}

func TestResetStopsWorkers(t *testing.T) {
	f := newFixture(t, 8)
	require.NoError(t, f.drv.Start(virtio.FeatureVersion1, ringBase))
	f.drv.Queues[0].AddChain([]virtiotest.Buf{{Len: 4, Write: true}})
	f.drv.Kick(0)
	require.True(t, f.msi.Wait(0, waitFor))
	f.drv.SetStatus(0)
	_, resets, processed := f.dev.counts()
	assert.Equal(t, 1, processed)
	assert.Equal(t, 2, resets, "Start's and ours")
	// After reset the old queue is gone: kicks do nothing.
	f.drv.Queues[0].AddChain([]virtiotest.Buf{{Len: 4, Write: true}})
	f.fn.Notify(0)
	time.Sleep(20 * time.Millisecond)
	_, _, processed = f.dev.counts()
	assert.Equal(t, 1, processed)
}

func TestChainsBeforeDriverOK(t *testing.T) {
	f := newFixture(t, 8)
	require.True(t, f.drv.Negotiate(virtio.FeatureVersion1))
	f.drv.EnableMSIX(2)
	q := f.drv.SetupQueue(0, 0, ringBase)
	q.AddChain([]virtiotest.Buf{{Len: 4, Write: true}})
	f.drv.SetStatus(statusRunning)
	require.True(t, f.msi.Wait(0, waitFor), "activation looks at every queue once")
}

func TestPCICfgWindow(t *testing.T) {
	f := newFixture(t, 8)
	cs := f.fn.ConfigSpace()
	c := f.drv.PCICfgCap
	win := func(offset, length uint32) {
		var b [4]byte
		cs.Write(c+4, []byte{virtio.PCIBar})
		binary.LittleEndian.PutUint32(b[:], offset)
		cs.Write(c+8, b[:])
		binary.LittleEndian.PutUint32(b[:], length)
		cs.Write(c+12, b[:])
	}
	win(f.drv.Common.Offset+virtiotest.CommonNumQueues, 2)
	assert.Equal(t, uint64(1), cfg(cs, c+16, 4))
	win(f.drv.Common.Offset+virtiotest.CommonDeviceStatus, 1)
	cs.Write(c+16, []byte{statusAck})
	assert.Equal(t, uint8(statusAck), f.drv.Status())
	win(f.drv.Common.Offset+1, 2) // misaligned: no access
	assert.Equal(t, uint64(0), cfg(cs, c+16, 4))
	win(0x7ffe, 4)
	assert.Equal(t, uint64(0), cfg(cs, c+16, 4))
}

// TestEveryOffsetEveryWidth reads and writes every offset of the BAR and
// of configuration space at widths 1, 2, 4 and 8 on a running device.
func TestEveryOffsetEveryWidth(t *testing.T) {
	f := newFixture(t, 8, 8)
	require.NoError(t, f.drv.Start(virtio.FeatureVersion1|virtio.FeatureEventIdx|virtio.FeatureIndirectDesc, ringBase))
	const barSize = 0x8000
	for _, w := range []int{1, 2, 4, 8} {
		buf := make([]byte, w)
		for off := uint64(0); off < barSize+16; off++ {
			f.fn.ReadBAR(virtio.PCIBar, off, buf)
			if off%0x1000 == virtiotest.CommonDeviceStatus && w == 1 {
				continue // writing status would reset the device mid-test
			}
			f.fn.WriteBAR(virtio.PCIBar, off, buf)
		}
		f.fn.ReadBAR(1, 0, buf)
		f.fn.WriteBAR(1, 0, buf)
		f.fn.ReadBAR(virtio.PCIBar, ^uint64(0)-2, buf)
		for off := uint64(0); off < pci.ConfigSize+16; off++ {
			f.fn.ConfigSpace().Read(off, buf)
			f.fn.ConfigSpace().Write(off, buf)
		}
	}
}

// TestGuestProvokedWarningsAreBounded: a driver that breaks the device
// over and over, as a hostile guest can at the rate of its register
// writes, gets a bounded number of log lines for it.
func TestGuestProvokedWarningsAreBounded(t *testing.T) {
	var log syncBuffer
	mem := virtiotest.NewMemory(4 << 20)
	fn, err := virtio.NewPCI(newFakeDevice(8), virtio.PCIOptions{Mem: mem, MSI: virtiotest.NewMSI(),
		Log: slog.New(slog.NewTextHandler(&log, nil))})
	require.NoError(t, err)
	drv, err := virtiotest.NewPCIDriver(fn, mem)
	require.NoError(t, err)
	for i := 0; i < 500; i++ {
		drv.SetStatus(statusAck | statusDriver)
		drv.SetStatus(statusAck) // clears a bit without a reset
		drv.SetStatus(statusAck | statusDriver | statusDriverOK)
		require.NotZero(t, drv.Status()&virtio.StatusNeedsReset, "DRIVER_OK without FEATURES_OK")
		drv.SetStatus(0)
	}
	assert.LessOrEqual(t, strings.Count(log.String(), "level=WARN"), ratelog.Burst, "%s", log.String())
	assert.Contains(t, log.String(), "virtio device needs reset")
}

type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
