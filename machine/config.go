package machine

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"

	"github.com/gvmm-dev/gvmm/virtio/blk"
)

// DefaultCmdline brings up the serial console and makes the kernel reboot
// through the keyboard controller, which the machine turns into an exit.
const DefaultCmdline = "console=ttyS0 reboot=k panic=1"

// Defaults of a Config's zero fields.
const (
	DefaultCPUs   = 1
	DefaultMemory = 512 * MiB
	// MaxCPUs is what one xAPIC MADT can describe.
	MaxCPUs = 254
)

// NoKernelCache as Config.KernelCache boots a bzImage as it is.
const NoKernelCache = "none"

// RebootAction says what a guest reboot does.
type RebootAction int

const (
	// RebootExit ends the machine, as a power-off does.
	RebootExit RebootAction = iota
	// RebootRestart boots the guest again.
	RebootRestart
)

// Config describes a machine. Kernel is required; zero values take the
// defaults above.
type Config struct {
	Kernel string // bzImage or ELF vmlinux (PVH)
	// KernelCache is the folder where a bzImage is decompressed, once,
	// into the ELF kernel that boots in its place through its PVH entry
	// (see boot/kernelcache): "" is the user's cache folder,
	// NoKernelCache boots a bzImage through its own decompressor.
	KernelCache string
	Initrd      string // optional
	Cmdline     string // DefaultCmdline when empty
	CPUs        int
	Memory      uint64 // bytes

	// Console receives the guest's serial output; ConsoleIn, when set,
	// feeds the serial input.
	Console   io.Writer
	ConsoleIn io.Reader

	// Disks are raw images, attached as virtio-blk PCI devices in order
	// (the guest's vda, vdb, ...).
	Disks []Disk
	// Balloon, when set, adds a virtio-balloon device.
	Balloon *BalloonConfig
	// Shares are host folders, attached as virtio-9p PCI devices.
	Shares []Share
	// Vsock, when set, adds a virtio-vsock device.
	Vsock *VsockConfig
	// Nets are virtio-net devices on TAP interfaces (the guest's eth0,
	// eth1, ... in order).
	Nets []Net

	// AllowCPUOvercommit lets one guest have more vCPUs than the host
	// has logical CPUs, which is otherwise refused.
	AllowCPUOvercommit bool
	// Mergeable marks guest RAM for KSM page sharing; HugePages asks
	// for transparent huge pages.
	Mergeable bool
	HugePages bool

	OnReboot RebootAction
	Log      *slog.Logger
	// KVMDevice is the path of the KVM device, /dev/kvm by default.
	KVMDevice string

	// BeforeRun, when set, is called once, after the first boot opened
	// every file, device and socket and created the vCPUs, and before any
	// vCPU runs guest code: where a process confines itself. reopen lists
	// what a reboot with RebootRestart opens again by path (the KVM
	// device, the kernel, the initrd); it is empty otherwise. An error
	// fails Start.
	BeforeRun func(reopen []string) error
}

// Disk is a raw disk image.
type Disk struct {
	Path     string
	ReadOnly bool
	// Serial is what the guest reads as the disk's ID (at most 20 bytes).
	Serial string
	// Limit bounds the disk's rates; zero values do not limit.
	Limit blk.Limit
}

// maxDisks bounds the PCI slots disks take.
const maxDisks = 16

// ErrInvalidConfig is wrapped by every configuration error.
var ErrInvalidConfig = errors.New("invalid machine configuration")

// ConfigError names the Config field a configuration error is about, so
// that a front end can point at where the value came from.
type ConfigError struct {
	Field  string // the Config field: "CPUs", "Memory", "Disks[1].Serial"
	Reason string
	Err    error // a sentinel such as ErrCPUOvercommit, or nil
}

func (e *ConfigError) Error() string { return ErrInvalidConfig.Error() + ": " + e.Reason }

func (e *ConfigError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalidConfig}
	}
	return []error{ErrInvalidConfig, e.Err}
}

func configError(field string, err error, format string, a ...any) *ConfigError {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, a...), Err: err}
}

// Validate checks c as New does, without looking at files.
func (c *Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// ErrCPUOvercommit refuses a guest with more vCPUs than host CPUs.
var ErrCPUOvercommit = errors.New("more vCPUs than host CPUs")

// hostCPUs is the number of logical CPUs this process may run on.
func hostCPUs() int { return runtime.NumCPU() }

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.Kernel == "" {
		return out, configError("Kernel", nil, "no kernel")
	}
	if out.Cmdline == "" {
		out.Cmdline = DefaultCmdline
	}
	if out.CPUs == 0 {
		out.CPUs = DefaultCPUs
	}
	if out.CPUs < 1 || out.CPUs > MaxCPUs {
		return out, configError("CPUs", nil, "%d vCPUs: want 1 to %d", out.CPUs, MaxCPUs)
	}
	hostN := hostCPUs()
	if out.CPUs > hostN && !out.AllowCPUOvercommit {
		return out, configError("CPUs", ErrCPUOvercommit, "%s: %d vCPUs on a host with %d logical CPUs: the guest's vCPUs would compete for CPUs and it would run slower than with %d, and could stall the host (many single-vCPU guests are fine); allow it explicitly to go ahead", ErrCPUOvercommit, out.CPUs, hostN, hostN)
	}
	if out.Memory == 0 {
		out.Memory = DefaultMemory
	}
	if out.Memory < MinMemory || out.Memory > MaxMemory {
		return out, configError("Memory", nil, "memory %d MiB: want %d MiB to %d GiB", out.Memory/MiB, MinMemory/MiB, MaxMemory/GiB)
	}
	if out.Memory%(4096) != 0 {
		return out, configError("Memory", nil, "memory %d bytes is not a whole number of 4 KiB pages", out.Memory)
	}
	if len(out.Disks) > maxDisks {
		return out, configError("Disks", nil, "%d disks: at most %d", len(out.Disks), maxDisks)
	}
	for i, d := range out.Disks {
		if d.Path == "" {
			return out, configError(fmt.Sprintf("Disks[%d].Path", i), nil, "a disk without a path")
		}
		if len(d.Serial) > 20 {
			return out, configError(fmt.Sprintf("Disks[%d].Serial", i), nil, "disk %s: serial %q is longer than 20 bytes", d.Path, d.Serial)
		}
	}
	if err := validateShares(out.Shares); err != nil {
		return out, err
	}
	if out.Vsock != nil {
		if err := out.Vsock.validate(); err != nil {
			return out, err
		}
	}
	if err := validateNets(out.Nets); err != nil {
		return out, err
	}
	if out.Console == nil {
		out.Console = io.Discard
	}
	if out.Log == nil {
		out.Log = slog.New(slog.DiscardHandler)
	}
	if out.KVMDevice == "" {
		out.KVMDevice = "/dev/kvm"
	}
	if out.CPUs > hostN {
		out.Log.Warn("vCPU over-commit: the guest has more vCPUs than the host has CPUs", "vcpus", out.CPUs, "host_cpus", hostN)
	}
	return out, nil
}

// ParseSize parses a memory size: "512M", "2G", "1024K", or a plain
// number of MiB.
func ParseSize(s string) (uint64, error) {
	units := map[string]uint64{"K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}
	num, mult := strings.TrimSpace(s), uint64(MiB)
	if n := len(num); n > 0 {
		suffix := strings.ToUpper(num[n-1:])
		if u, ok := units[suffix]; ok {
			num, mult = num[:n-1], u
		} else if suffix == "B" {
			return 0, fmt.Errorf("size %q: write 512M or 2G, not bytes units", s)
		}
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("size %q: want a positive whole number with an optional K, M, G or T suffix", s)
	}
	if v > (1<<63)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return v * mult, nil
}
