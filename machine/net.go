package machine

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"

	vnet "github.com/gvmm-dev/gvmm/virtio/net"
)

// ErrNoNet is returned for a network device the machine does not have.
var ErrNoNet = errors.New("machine has no such network device")

// Net is a virtio-net device on a TAP interface. The host side of the
// TAP (a bridge, an address, NAT) is the user's to set up.
type Net struct {
	// Tap names the interface. An existing TAP is used as it is; an
	// absent one is created (with CAP_NET_ADMIN), brought up, and
	// removed when the machine ends.
	Tap string
	// File, instead of Tap, is an open TAP queue (IFF_TAP, IFF_NO_PI,
	// IFF_VNET_HDR) such as an orchestrator or CNI plugin hands over.
	// Start takes it over: it is closed when the machine ends, or when
	// Start fails.
	File *os.File
	// MAC is the guest's address; empty takes one derived from the
	// TAP's name, the same on every boot.
	MAC net.HardwareAddr
	// Limits bound the device's rates; zero values do not limit.
	Limits vnet.Limits
}

// maxNets bounds the PCI slots network devices take.
const maxNets = 8

// DefaultMAC is the address a guest gets on the TAP named tap: locally
// administered, unicast, and stable, since the guest's configuration
// (a DHCP lease, a udev name) may hang on it.
func DefaultMAC(tap string) net.HardwareAddr {
	h := sha256.Sum256([]byte("gvmm-net\x00" + tap))
	mac := net.HardwareAddr(h[:6])
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

func validateNets(nets []Net) error {
	if len(nets) > maxNets {
		return configError("Nets", nil, "%d network devices: at most %d", len(nets), maxNets)
	}
	taps := map[string]bool{}
	for i, n := range nets {
		field := fmt.Sprintf("Nets[%d]", i)
		switch {
		case (n.Tap == "") == (n.File == nil):
			return configError(field, nil, "a network device needs either a TAP name or an open TAP file, not both")
		case n.Tap != "" && len(n.Tap) >= unix.IFNAMSIZ:
			return configError(field+".Tap", nil, "TAP name %q is longer than %d bytes", n.Tap, unix.IFNAMSIZ-1)
		case n.Tap != "" && taps[n.Tap]:
			return configError(field+".Tap", nil, "TAP %s is given twice", n.Tap)
		}
		taps[n.Tap] = true
		if n.MAC != nil {
			if len(n.MAC) != 6 {
				return configError(field+".MAC", nil, "MAC %s is not a 6-byte Ethernet address", n.MAC)
			}
			if n.MAC[0]&1 != 0 || [6]byte(n.MAC) == [6]byte{} {
				return configError(field+".MAC", nil, "MAC %s is not a unicast address", n.MAC)
			}
		}
		if err := n.Limits.Validate(); err != nil {
			return configError(field+".Limits", err, "network device %d: %v (%d bytes)", i, err, vnet.MaxFrame)
		}
	}
	return nil
}

// netDev is one network device, open for the machine's lifetime.
type netDev struct {
	dev *vnet.Device
	tap string
}

func (m *Machine) openNets() error {
	for i, c := range m.cfg.Nets {
		var tap *vnet.Tap
		var err error
		if c.File != nil {
			tap, err = vnet.TapFromFile(c.File)
		} else {
			tap, err = vnet.OpenTap(c.Tap)
		}
		if err != nil {
			return fmt.Errorf("machine: network device %d: %w", i, err)
		}
		mac := c.MAC
		if mac == nil {
			mac = DefaultMAC(tap.Name())
		}
		dev, err := vnet.New(vnet.Options{Tap: tap, MAC: [6]byte(mac), Limits: c.Limits, Log: m.log})
		if err != nil {
			tap.Close()
			return fmt.Errorf("machine: network device %d: %w", i, err)
		}
		m.log.Info("network device", "tap", tap.Name(), "mac", mac.String(), "created", tap.Created())
		m.nets = append(m.nets, netDev{dev: dev, tap: tap.Name()})
	}
	return nil
}

// closeNets closes the TAPs once the VM is down, and the TAP files of a
// Start that failed before it opened them; the devices stay, so that
// Nets still reports what they moved.
func (m *Machine) closeNets() {
	for _, n := range m.nets {
		if err := n.dev.Close(); err != nil {
			m.log.Warn("closing a TAP", "tap", n.tap, "err", err)
		}
	}
	for _, c := range m.cfg.Nets[len(m.nets):] {
		if c.File != nil {
			c.File.Close() // already closed if opening it failed
		}
	}
}

// NetInfo describes one network device.
type NetInfo struct {
	Tap    string
	MAC    net.HardwareAddr
	Limits vnet.Limits
	Stats  vnet.Stats
}

// Nets describes the network devices in order.
func (m *Machine) Nets() []NetInfo {
	out := make([]NetInfo, 0, len(m.nets))
	for _, n := range m.nets {
		mac := n.dev.MAC()
		out = append(out, NetInfo{Tap: n.tap, MAC: net.HardwareAddr(mac[:]), Limits: n.dev.Limits(), Stats: n.dev.Stats()})
	}
	return out
}

// SetNetLimits changes the rate limits of the device on TAP tap at once.
func (m *Machine) SetNetLimits(tap string, l vnet.Limits) error {
	for _, n := range m.nets {
		if n.tap == tap {
			if err := n.dev.SetLimits(l); err != nil {
				return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrNoNet, tap)
}
