// Package snapshot is the on-disk form of a paused machine: the state
// file's envelope and contents, and the sparse guest memory file. It
// knows nothing of how a machine is built; machine.Snapshot fills a
// State and machine.Restore reads one back.
//
// A snapshot folder holds:
//
//	state   the envelope below, then the State as JSON
//	memory  guest RAM, regions one after another, zero pages as holes
//
// The state file is untrusted input on restore: Parse checks the magic,
// the format version, the length and a SHA-256 of the payload before
// decoding it strictly, and every value is validated again by whoever
// restores it.
package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gvmm-dev/gvmm/devices/cmos"
	"github.com/gvmm-dev/gvmm/devices/pci"
	"github.com/gvmm-dev/gvmm/devices/pm"
	"github.com/gvmm-dev/gvmm/devices/ps2"
	"github.com/gvmm-dev/gvmm/devices/uart"
	"github.com/gvmm-dev/gvmm/kvm"
	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/balloon"
	"github.com/gvmm-dev/gvmm/virtio/blk"
	"github.com/gvmm-dev/gvmm/virtio/net"
	"github.com/gvmm-dev/gvmm/virtio/p9"
)

// File names inside a snapshot folder.
const (
	StateFile  = "state"
	MemoryFile = "memory"
)

// Version is the state format this package writes and reads. A snapshot
// of another version is refused: the state of a device that changed
// between versions would be misread. Version 2: every vCPU's TSC MSR
// is its value at the instant of VM.Clock (version 1 had only vCPU 0's).
const Version = 2

// magic starts every state file.
var magic = [8]byte{'G', 'V', 'M', 'M', 'S', 'N', 'A', 'P'}

// header is the envelope before the payload: magic, version, payload
// length and the payload's SHA-256, little-endian.
type header struct {
	Magic   [8]byte
	Version uint32
	_       uint32
	Length  uint64
	Sum     [sha256.Size]byte
}

var headerSize = binary.Size(header{})

// MaxStateSize bounds the payload Parse accepts: a machine of MaxCPUs
// vCPUs with large XSAVE areas stays far below it, and a hostile length
// field cannot make a reader allocate more.
const MaxStateSize = 64 << 20

// Errors Parse wraps; callers and tests branch on them.
var (
	ErrFormat   = errors.New("not a gvmm snapshot state file")
	ErrVersion  = errors.New("snapshot from another gvmm format version")
	ErrChecksum = errors.New("snapshot state file is damaged (checksum mismatch)")
)

// State is everything a restore needs besides guest memory.
type State struct {
	Taken   time.Time // when the snapshot was taken, host wall clock
	Config  Config
	VM      VM
	VCPUs   []VCPU
	Devices Devices
	// MemorySize is the guest RAM, and the memory file's size, in bytes.
	MemorySize uint64
}

// Config is the machine configuration a restore rebuilds the machine
// from. Console, logging and the API are the restoring process's own.
type Config struct {
	Kernel, KernelCache, Initrd, Cmdline string // for a later reboot
	CPUs                                 int
	Memory                               uint64
	Disks                                []Disk
	Shares                               []Share `json:",omitempty"`
	Balloon                              *Balloon
	Vsock                                *Vsock
	Nets                                 []Net `json:",omitempty"`
	Mergeable, HugePages                 bool
	RebootRestart                        bool
	AllowCPUOvercommit                   bool
}

// Disk is a disk image and the identity it had when the snapshot was
// taken: the snapshot does not copy images, so a restore onto an image
// that changed since (written, replaced) is refused.
type Disk struct {
	Path     string
	ReadOnly bool
	Serial   string
	Limit    blk.Limit // in force when the snapshot was taken
	Identity DiskIdentity
}

// DiskIdentity identifies a disk image's content without reading it:
// device, inode, size and modification time.
type DiskIdentity struct {
	Dev, Inode uint64
	Size       int64
	ModTimeNs  int64
}

// Share is a host folder served over virtio-9p. The folder is not
// copied: its fids are saved by path (p9.State) and reopened there, or
// in another folder a restore names for the tag.
type Share struct {
	Path     string
	Tag      string
	ReadOnly bool
	SetID    bool `json:",omitempty"`
}

// Vsock is the vsock device's configuration. Its connections are not
// saved: a restore resets the transport, which ends them in the guest.
type Vsock struct {
	CID    uint64
	Socket string
}

// Net is a network device's TAP: its name when the machine was given
// one, which a restore opens (and creates, if absent) by default; empty
// when it was given an open TAP file, which a restore must be given
// anew. The MAC and rate limits are the device's state.
type Net struct {
	Tap string `json:",omitempty"`
}

// Balloon is the balloon device's configuration.
type Balloon struct {
	Size uint64
}

// VM is the state KVM keeps per VM.
type VM struct {
	// Clock is kvmclock at the instant each vCPU's TSC had its saved value.
	Clock    kvm.ClockData
	IRQChips []kvm.IRQChipState // PIC master, PIC slave, IOAPIC
	PIT      kvm.PITState2
}

// VCPU is one vCPU's state, in the order KVM's restore takes it.
type VCPU struct {
	CPUID     []kvm.CPUIDEntry
	TSCKHz    uint32
	MPState   kvm.MPState
	Regs      kvm.Regs
	Sregs     kvm.Sregs
	XSave     []byte
	XCRs      kvm.XCRs
	DebugRegs kvm.DebugRegs
	LAPIC     kvm.LAPICState
	MSRs      []kvm.MSREntry
	Events    kvm.VCPUEvents
}

// Devices is the state of every emulated device.
type Devices struct {
	UART  uart.State
	I8042 ps2.State
	RTC   cmos.State
	PM    pm.State
	PCI   pci.RootState
	// Virtio holds the virtio functions in the order the machine adds
	// them: disks, the balloon, shares, vsock, nets.
	Virtio []VirtioDevice
}

// VirtioDevice is one virtio function: its type, transport and the
// device's own state where it has one.
type VirtioDevice struct {
	Type      virtio.DeviceType
	Transport virtio.PCIState
	Balloon   *balloon.State `json:",omitempty"`
	Net       *net.State     `json:",omitempty"`
	P9        *p9.State      `json:",omitempty"`
}

// Marshal encodes s as a state file.
func Marshal(s *State) ([]byte, error) {
	payload, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("snapshot: encoding the state: %w", err)
	}
	if len(payload) > MaxStateSize {
		// Parse would refuse it: better no snapshot than one that
		// cannot be restored.
		return nil, fmt.Errorf("snapshot: the state is %d bytes, more than the %d a restore reads", len(payload), MaxStateSize)
	}
	h := header{Magic: magic, Version: Version, Length: uint64(len(payload)), Sum: sha256.Sum256(payload)}
	var buf bytes.Buffer
	buf.Grow(headerSize + len(payload))
	if err := binary.Write(&buf, binary.LittleEndian, h); err != nil {
		return nil, err
	}
	buf.Write(payload)
	return buf.Bytes(), nil
}

// Parse decodes a state file, refusing one that is not a snapshot, of
// another version, truncated, damaged or not decodable into a State.
func Parse(data []byte) (*State, error) {
	var h header
	if len(data) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the header", ErrFormat, len(data))
	}
	if err := binary.Read(bytes.NewReader(data[:headerSize]), binary.LittleEndian, &h); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	if h.Magic != magic {
		return nil, fmt.Errorf("%w: bad magic %q", ErrFormat, h.Magic[:])
	}
	if h.Version != Version {
		return nil, fmt.Errorf("%w: version %d, this gvmm reads version %d", ErrVersion, h.Version, Version)
	}
	payload := data[headerSize:]
	if h.Length > MaxStateSize || h.Length != uint64(len(payload)) {
		return nil, fmt.Errorf("%w: header says %d bytes of state, the file has %d", ErrChecksum, h.Length, len(payload))
	}
	if sha256.Sum256(payload) != h.Sum {
		return nil, ErrChecksum
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var s State
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: decoding the state: %w", ErrFormat, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the state", ErrFormat)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	return &s, nil
}

// Bounds on the state's shape; the values themselves are checked by
// whoever restores them.
const (
	maxCPUs       = 254
	maxDisks      = 16
	maxShares     = 8
	maxCPUIDs     = 1024
	maxMSRs       = 1 << 12
	maxXSave      = 1 << 20
	numIRQChips   = 3
	maxVirtioDevs = 64
)

// validate checks the shape of a decoded state: counts and sizes that
// the restore allocates or loops over.
func (s *State) validate() error {
	c := s.Config
	switch {
	case c.CPUs < 1 || c.CPUs > maxCPUs || len(s.VCPUs) != c.CPUs:
		return fmt.Errorf("%d vCPUs configured, %d saved", c.CPUs, len(s.VCPUs))
	case c.Memory == 0 || c.Memory != s.MemorySize:
		return fmt.Errorf("memory of %d bytes configured, %d saved", c.Memory, s.MemorySize)
	case len(c.Disks) > maxDisks:
		return fmt.Errorf("%d disks", len(c.Disks))
	case len(c.Shares) > maxShares:
		return fmt.Errorf("%d shares", len(c.Shares))
	case len(s.VM.IRQChips) != numIRQChips:
		return fmt.Errorf("%d interrupt controllers saved, want %d", len(s.VM.IRQChips), numIRQChips)
	case len(s.Devices.Virtio) > maxVirtioDevs:
		return fmt.Errorf("%d virtio devices", len(s.Devices.Virtio))
	}
	for i, v := range s.VCPUs {
		if len(v.CPUID) == 0 || len(v.CPUID) > maxCPUIDs || len(v.MSRs) > maxMSRs || len(v.XSave) > maxXSave {
			return fmt.Errorf("vCPU %d: %d CPUID entries, %d MSRs, %d bytes of XSAVE", i, len(v.CPUID), len(v.MSRs), len(v.XSave))
		}
	}
	return nil
}
