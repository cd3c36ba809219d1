package machine

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/gvmm-dev/gvmm/virtio/blk"
)

// ErrNoDisk is returned for a disk the machine does not have.
var ErrNoDisk = errors.New("machine has no such disk")

// DiskInfo describes one disk.
type DiskInfo struct {
	Disk
	Limit blk.Limit // in force now
}

// Disks describes the disks in order.
func (m *Machine) Disks() []DiskInfo {
	m.pauseMu.Lock() // closeDisks may be dropping them
	defer m.pauseMu.Unlock()
	out := make([]DiskInfo, 0, len(m.disks))
	for i, d := range m.disks {
		out = append(out, DiskInfo{Disk: m.cfg.Disks[i], Limit: d.Limit()})
	}
	return out
}

// DiskLimit returns the rate limit in force on disk id, named as for
// SetDiskLimit.
func (m *Machine) DiskLimit(id string) (blk.Limit, error) {
	m.pauseMu.Lock()
	defer m.pauseMu.Unlock()
	i, err := m.diskIndex(id)
	if err != nil {
		return blk.Limit{}, err
	}
	return m.disks[i].Limit(), nil
}

// SetDiskLimit changes the rate limit of disk id at once. The id is the
// disk's index in Config.Disks ("0", "1", ...), or its serial if no
// other disk has it, as a Firecracker drive is named by its drive_id.
func (m *Machine) SetDiskLimit(id string, l blk.Limit) error {
	m.pauseMu.Lock()
	defer m.pauseMu.Unlock()
	i, err := m.diskIndex(id)
	if err != nil {
		return err
	}
	m.disks[i].SetLimit(l)
	return nil
}

func (m *Machine) diskIndex(id string) (int, error) {
	if i, err := strconv.Atoi(id); err == nil && strconv.Itoa(i) == id && i >= 0 && i < len(m.disks) {
		return i, nil
	}
	match := -1
	for i := range m.disks { // empty until Start
		if s := m.cfg.Disks[i].Serial; s != "" && s == id {
			if match >= 0 {
				return 0, fmt.Errorf("%w: serial %q names more than one disk: use the index", ErrNoDisk, id)
			}
			match = i
		}
	}
	if match < 0 {
		return 0, fmt.Errorf("%w: %q", ErrNoDisk, id)
	}
	return match, nil
}
