// Package virtio is the modern (1.x) virtio-over-PCI transport. A device
// model implements Device; NewPCI wraps it in a PCI function that the root
// complex hosts. Device work runs on one goroutine per queue, woken by
// guest notifications, never on the vCPU thread.
package virtio

import (
	"context"
	"fmt"

	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/memory"
	"github.com/gvmm-dev/gvmm/virtio/queue"
)

// DeviceType is a virtio device ID (spec 5).
type DeviceType uint16

// Device types this VMM implements.
const (
	DeviceNet     DeviceType = 1
	DeviceBlock   DeviceType = 2
	DeviceBalloon DeviceType = 5
	Device9P      DeviceType = 9
	DeviceVsock   DeviceType = 19
)

// String names the type as metrics and logs label devices: "block0".
func (t DeviceType) String() string {
	switch t {
	case DeviceNet:
		return "net"
	case DeviceBlock:
		return "block"
	case DeviceBalloon:
		return "balloon"
	case Device9P:
		return "9p"
	case DeviceVsock:
		return "vsock"
	}
	return fmt.Sprintf("virtio%d", uint16(t))
}

// Device status bits (spec 2.1).
const (
	StatusAcknowledge = 1
	StatusDriver      = 2
	StatusDriverOK    = 4
	StatusFeaturesOK  = 8
	StatusNeedsReset  = 0x40
	StatusFailed      = 0x80
)

// Transport feature bits (spec 6).
const (
	FeatureIndirectDesc = 1 << 28
	FeatureEventIdx     = 1 << 29
	FeatureVersion1     = 1 << 32
)

// transportFeatures are offered for every device: the queue package
// implements them.
const transportFeatures = FeatureVersion1 | FeatureIndirectDesc | FeatureEventIdx

// Device is a virtio device model.
type Device interface {
	Type() DeviceType
	// Features returns the device-specific feature bits offered.
	Features() uint64
	// QueueMaxSizes returns the maximum size of each queue; its length is
	// the number of queues.
	QueueMaxSizes() []uint16
	// ReadConfig and WriteConfig access the device-specific configuration
	// at any offset and width; ReadConfigBytes does the clamping.
	ReadConfig(offset uint64, data []byte)
	WriteConfig(offset uint64, data []byte)
	// Activate starts the device once the driver set DRIVER_OK. An error
	// marks the device NEEDS_RESET.
	Activate(a Activation) error
	// Process services queue idx; it runs on that queue's worker
	// goroutine after each notification, and should return when the
	// queue is empty or ctx is done. An error means the driver broke the
	// protocol: the device is marked NEEDS_RESET and the queue stops.
	Process(ctx context.Context, idx int) error
	// Reset returns the device to its initial state. It is called on
	// every driver reset after all workers have stopped.
	Reset()
}

// Activation is what a device gets when the driver sets DRIVER_OK.
type Activation struct {
	Features uint64 // negotiated
	Mem      *memory.Memory
	// Queues are indexed by queue number; nil for queues the driver did
	// not enable. Each raises its own interrupt from SignalUsed.
	Queues []*queue.Queue
	// ConfigChanged sends a configuration change notification.
	ConfigChanged devices.Interrupt
	// Kick wakes queue idx's worker as a driver notification does, for
	// devices whose work also arrives from the host side (vsock's
	// sockets). It never blocks.
	Kick func(idx int)
}

// ReadConfigBytes copies cfg[offset:] into data, zero-filling whatever
// lies past cfg, so no offset or width can fault.
func ReadConfigBytes(cfg []byte, offset uint64, data []byte) {
	clear(data)
	if offset < uint64(len(cfg)) {
		copy(data, cfg[offset:])
	}
}
