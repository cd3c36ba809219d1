package machine

import (
	"fmt"

	"github.com/gvmm-dev/gvmm/virtio/p9"
)

// Share is a host folder the guest mounts over virtio-9p:
// mount -t 9p -o trans=virtio TAG /mnt.
type Share struct {
	Path     string
	Tag      string // the mount tag: 1 to 64 letters, digits, '.', '_', '-'
	ReadOnly bool   // every change is refused with EROFS
	// SetID lets the guest make set-user-ID and set-group-ID files, for
	// a folder out of other host users' reach (hostfs.Options.SetID).
	SetID bool
}

// maxShares bounds the PCI slots shares take.
const maxShares = 8

func validateShares(shares []Share) error {
	if len(shares) > maxShares {
		return configError("Shares", nil, "%d shares: at most %d", len(shares), maxShares)
	}
	tags := map[string]bool{}
	for i, s := range shares {
		if s.Path == "" {
			return configError(fmt.Sprintf("Shares[%d].Path", i), nil, "a share without a folder")
		}
		if err := p9.ValidTag(s.Tag); err != nil {
			return configError(fmt.Sprintf("Shares[%d].Tag", i), err, "share %s: tag %q: %v", s.Path, s.Tag, err)
		}
		if tags[s.Tag] {
			return configError(fmt.Sprintf("Shares[%d].Tag", i), nil, "share %s: tag %q is used twice", s.Path, s.Tag)
		}
		tags[s.Tag] = true
	}
	return nil
}

func (m *Machine) openShares() error {
	for _, s := range m.cfg.Shares {
		dev, err := p9.New(s.Path, p9.Options{Tag: s.Tag, ReadOnly: s.ReadOnly, SetID: s.SetID, Log: m.log})
		if err != nil {
			return fmt.Errorf("machine: %w", err)
		}
		m.shares = append(m.shares, dev)
	}
	return nil
}

func (m *Machine) closeShares() {
	for _, s := range m.shares {
		if err := s.Close(); err != nil {
			m.log.Warn("closing a share", "err", err)
		}
	}
	m.shares = nil
}
