package virtio

import (
	"fmt"

	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/devices/pci"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// PCIState is the transport's state, for snapshots: the common
// configuration, each queue's configuration and the MSI-X table. Queue
// positions are not in it: they are in guest memory (queue.Resume).
// The device model's own state is saved by the device.
type PCIState struct {
	Status           uint8
	NeedsReset       bool
	DeviceFeatureSel uint32
	DriverFeatureSel uint32
	DriverFeatures   uint64
	QueueSel         uint16
	ConfigVector     uint16
	Generation       uint8
	ISR              uint8
	Queues           []QueueState
	MSIX             pci.MSIXState
}

// QueueState is one queue's configuration as the driver wrote it.
type QueueState struct {
	Size                 uint16
	Enabled              bool
	Vector               uint16
	Desc, Driver, Device uint64
}

// State returns the transport's state. Take it with the vCPUs stopped,
// so the driver changes nothing meanwhile.
func (p *PCIDevice) State() PCIState {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PCIState{
		Status: p.status, NeedsReset: p.needsReset.Load(),
		DeviceFeatureSel: p.deviceFeatureSel, DriverFeatureSel: p.driverFeatureSel,
		DriverFeatures: p.driverFeatures, QueueSel: p.queueSel,
		ConfigVector: uint16(p.configVector.Load()), Generation: uint8(p.generation.Load()),
		ISR: uint8(p.isr.Load()), MSIX: p.msix.State(),
	}
	for i, q := range p.queues {
		s.Queues = append(s.Queues, QueueState{Size: q.size, Enabled: q.enabled,
			Vector: uint16(p.queueVectors[i].Load()), Desc: q.desc, Driver: q.driver, Device: q.device})
	}
	return s
}

// statusBits are the device status bits a driver can have set.
const statusBits = StatusAcknowledge | StatusDriver | StatusDriverOK | StatusFeaturesOK | StatusFailed

// Restore loads s into a transport just built for the same device, whose
// own state the caller has restored first. Each enabled queue is
// validated again as when the driver enabled it and resumes where guest
// memory says (queue.Resume); a device the driver had started is
// activated and its workers started, each woken once to take the chains
// that wait and once more signalled, since an interrupt may have been
// lost with the old process. s is untrusted: every field is checked, and
// a refused s leaves the transport reset.
func (p *PCIDevice) Restore(s PCIState) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run != nil || p.status != 0 {
		return fmt.Errorf("virtio: %w: restore into a device in use", devices.ErrBadState)
	}
	if err := p.restore(s); err != nil {
		p.reset()
		return fmt.Errorf("virtio %s: %w", p.dev.Type(), err)
	}
	return nil
}

func (p *PCIDevice) restore(s PCIState) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{devices.ErrBadState}, args...)...)
	}
	switch {
	case len(s.Queues) != len(p.queues):
		return bad("%d queues saved, the device has %d", len(s.Queues), len(p.queues))
	case s.Status&^statusBits != 0:
		return bad("device status %#x", s.Status)
	case s.DriverFeatures&^p.offered != 0:
		return bad("driver features %#x were not offered", s.DriverFeatures&^p.offered)
	case s.Status&StatusDriverOK != 0 && s.Status&StatusFeaturesOK == 0:
		return bad("device status %#x: DRIVER_OK without FEATURES_OK", s.Status)
	case s.Status&StatusFeaturesOK != 0 && s.DriverFeatures&FeatureVersion1 == 0:
		return bad("FEATURES_OK without VIRTIO_F_VERSION_1")
	case s.ISR&^(isrQueue|isrConfig) != 0:
		return bad("ISR %#x", s.ISR)
	case s.ConfigVector != NoVector && int(s.ConfigVector) >= p.msix.Vectors():
		return bad("configuration vector %d", s.ConfigVector)
	}
	for i, q := range s.Queues {
		if q.Size == 0 || q.Size&(q.Size-1) != 0 || q.Size > p.maxSizes[i] {
			return bad("queue %d size %d", i, q.Size)
		}
		if q.Vector != NoVector && int(q.Vector) >= p.msix.Vectors() {
			return bad("queue %d vector %d", i, q.Vector)
		}
		if q.Enabled && s.Status&StatusFeaturesOK == 0 {
			return bad("queue %d enabled before FEATURES_OK", i)
		}
	}
	if err := p.msix.Restore(s.MSIX); err != nil {
		return err
	}
	p.status, p.deviceFeatureSel, p.driverFeatureSel = s.Status, s.DeviceFeatureSel, s.DriverFeatureSel
	p.driverFeatures, p.queueSel = s.DriverFeatures, s.QueueSel
	p.configVector.Store(uint32(s.ConfigVector))
	p.generation.Store(uint32(s.Generation))
	p.isr.Store(uint32(s.ISR))
	p.needsReset.Store(s.NeedsReset)
	for i, qs := range s.Queues {
		q := &p.queues[i]
		*q = queueConfig{size: qs.Size, desc: qs.Desc, driver: qs.Driver, device: qs.Device}
		p.queueVectors[i].Store(uint32(qs.Vector))
		if !qs.Enabled {
			continue
		}
		vq, err := queue.New(p.mem, queue.Config{
			Size: qs.Size, MaxSize: p.maxSizes[i],
			DescTable: memory.GuestAddress(qs.Desc), AvailRing: memory.GuestAddress(qs.Driver), UsedRing: memory.GuestAddress(qs.Device),
			EventIdx: s.DriverFeatures&FeatureEventIdx != 0, Indirect: s.DriverFeatures&FeatureIndirectDesc != 0,
		}, queueInterrupt{p, i})
		if err != nil {
			return bad("queue %d: %v", i, err)
		}
		vq.Resume()
		q.q, q.enabled = vq, true
	}
	if s.Status&StatusDriverOK == 0 || s.NeedsReset {
		return nil
	}
	if err := p.activate(s.Status); err != nil {
		// A live activation that fails sets NEEDS_RESET, which skips
		// this: a state that cannot start was not saved running.
		return fmt.Errorf("%w: %w", devices.ErrBadState, err)
	}
	for i := range p.queues {
		if p.queues[i].enabled {
			if err := (queueInterrupt{p, i}).Trigger(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Type is the device's virtio type.
func (p *PCIDevice) Type() DeviceType { return p.dev.Type() }
