package machine

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/internal/ratelimit"
	"github.com/gvmm-dev/gvmm/virtio/blk"
)

func TestSetDiskLimit(t *testing.T) {
	dir := t.TempDir()
	var disks []Disk
	for i, serial := range []string{"", "data", "0", "twin", "twin"} {
		path := filepath.Join(dir, string(rune('a'+i))+".img")
		require.NoError(t, os.WriteFile(path, make([]byte, 4096), 0o600))
		disks = append(disks, Disk{Path: path, Serial: serial})
	}
	initial := blk.Limit{Ops: ratelimit.Bucket{Rate: 100}}
	disks[1].Limit = initial
	m := &Machine{cfg: Config{Disks: disks}, log: slog.New(slog.DiscardHandler)}
	assert.ErrorIs(t, m.SetDiskLimit("1", blk.Limit{}), ErrNoDisk, "before Start")
	require.NoError(t, m.openDisks())
	t.Cleanup(m.closeDisks)

	info := m.Disks()
	require.Len(t, info, 5)
	assert.Equal(t, disks[1], info[1].Disk)
	assert.Equal(t, initial, info[1].Limit, "from the config")

	lim := blk.Limit{Bytes: ratelimit.Bucket{Rate: 1 << 20, Burst: 1 << 16}}
	tests := []struct {
		id   string
		want int // the disk changed; -1 for none
	}{
		{"data", 1},
		{"0", 0}, // an index matches before a serial
		{"2", 2},
		{"1", 1},
		{"4", 4},
		{"twin", -1}, // ambiguous
		{"5", -1},
		{"01", -1},
		{"-1", -1},
		{"", -1},
		{"nope", -1},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			for i := range m.disks {
				m.disks[i].SetLimit(blk.Limit{})
			}
			err := m.SetDiskLimit(tt.id, lim)
			if tt.want < 0 {
				assert.ErrorIs(t, err, ErrNoDisk)
			} else {
				assert.NoError(t, err)
			}
			got, err := m.DiskLimit(tt.id)
			if tt.want < 0 {
				assert.ErrorIs(t, err, ErrNoDisk)
			} else {
				assert.Equal(t, lim, got)
			}
			for i, d := range m.Disks() {
				if i == tt.want {
					assert.Equal(t, lim, d.Limit, "disk %d", i)
				} else {
					assert.Equal(t, blk.Limit{}, d.Limit, "disk %d", i)
				}
			}
		})
	}
}
