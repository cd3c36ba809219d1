package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	"github.com/pelletier/go-toml"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gvmm-dev/gvmm/machine"
)

// DefaultConfigPath is read when containerd names no configuration.
const DefaultConfigPath = "/etc/gvmm/containerd-shim.toml"

// Config is the shim's configuration: a TOML file, named by the runtime
// options' ConfigPath (config.toml's runtime entry, or ctr's
// --runtime-config-path) or given whole as ConfigBody.
type Config struct {
	// Kernel boots the container's VM; Modules is its modules folder,
	// from which the agent's initramfs takes 9p, vsock and virtio-pci.
	Kernel  string `toml:"kernel"`
	Modules string `toml:"modules"`
	// Agent is gvmm-agent, static; default: next to the shim's binary.
	Agent string `toml:"agent"`
	// Memory ("512M", "1G") and CPUs are the VM's unless the container's
	// resources ask for more memory or CPU time.
	Memory string `toml:"memory"`
	CPUs   int    `toml:"cpus"`
	// BootTimeout bounds the wait for the agent: "2m".
	BootTimeout string `toml:"boot_timeout"`
	// Seccomp is "on" (the default): the shim confines itself to the
	// system calls it needs once the VM runs; "off" is for debugging.
	Seccomp string `toml:"seccomp"`
}

// settings is a Config checked and completed.
type settings struct {
	kernel, modules, agent string
	memory                 uint64
	cpus                   int
	bootTimeout            time.Duration
	seccomp                bool
}

// loadConfig reads the configuration the runtime options name, or the
// default file when there is one.
func loadConfig(opts *anypb.Any) (settings, error) {
	var (
		c    Config
		body []byte
		path = DefaultConfigPath
	)
	if opts != nil && opts.GetTypeUrl() != "" {
		v, err := typeurl.UnmarshalAny(opts)
		if err != nil {
			return settings{}, fmt.Errorf("the runtime options: %w", err)
		}
		o, ok := v.(*runtimeoptions.Options)
		if !ok {
			return settings{}, fmt.Errorf("the runtime options are %T, not %s's ConfigPath/ConfigBody options", v, runtimeName)
		}
		if o.ConfigBody != nil {
			body, path = o.ConfigBody, ""
		} else if o.ConfigPath != "" {
			path = o.ConfigPath
		}
	}
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist) && path == DefaultConfigPath:
		case err != nil:
			return settings{}, fmt.Errorf("the shim's configuration: %w", err)
		default:
			body = data
		}
	}
	if err := toml.Unmarshal(body, &c); err != nil {
		return settings{}, fmt.Errorf("the shim's configuration %s: %w", path, err)
	}
	return c.settings()
}

func (c Config) settings() (settings, error) {
	release := kernelRelease()
	s := settings{kernel: c.Kernel, modules: c.Modules, agent: c.Agent, cpus: c.CPUs,
		memory: machine.DefaultMemory, bootTimeout: 2 * time.Minute, seccomp: true}
	if s.kernel == "" {
		s.kernel = "/boot/vmlinuz-" + release
	}
	if s.modules == "" {
		s.modules = "/lib/modules/" + release
	}
	if s.agent == "" {
		self, err := os.Executable()
		if err != nil {
			return settings{}, err
		}
		s.agent = filepath.Join(filepath.Dir(self), "gvmm-agent")
	}
	if s.cpus == 0 {
		s.cpus = machine.DefaultCPUs
	}
	if s.cpus < 0 || s.cpus > machine.MaxCPUs {
		return settings{}, fmt.Errorf("cpus = %d: want 1 to %d", c.CPUs, machine.MaxCPUs)
	}
	if c.Memory != "" {
		m, err := machine.ParseSize(c.Memory)
		if err != nil {
			return settings{}, fmt.Errorf("memory = %q: %w", c.Memory, err)
		}
		s.memory = m
	}
	if c.BootTimeout != "" {
		d, err := time.ParseDuration(c.BootTimeout)
		if err != nil || d <= 0 {
			return settings{}, fmt.Errorf("boot_timeout = %q: want a duration such as 2m", c.BootTimeout)
		}
		s.bootTimeout = d
	}
	switch c.Seccomp {
	case "", "on":
	case "off":
		s.seccomp = false
	default:
		return settings{}, fmt.Errorf("seccomp = %q: want on or off", c.Seccomp)
	}
	return s, nil
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
