package cgroup2

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A plain folder stands in for a cgroup: the files are what is read and
// written.
func TestEnableControllers(t *testing.T) {
	tests := []struct {
		name, have string
		want       []string
		wrote      string // "" when nothing is written
	}{
		{"adds the missing", "cpu", []string{"cpu", "memory", "io"}, "+memory +io"},
		{"nothing to add", "cpu memory\n", []string{"memory"}, ""},
		{"nothing wanted", "", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "cgroup.subtree_control")
			require.NoError(t, os.WriteFile(file, []byte(tt.have), 0o644))
			require.NoError(t, EnableControllers(dir, tt.want))
			b, err := os.ReadFile(file)
			require.NoError(t, err)
			if tt.wrote == "" {
				assert.Equal(t, tt.have, string(b))
			} else {
				assert.Equal(t, tt.wrote, string(b))
			}
		})
	}
	assert.ErrorContains(t, EnableControllers(filepath.Join(t.TempDir(), "none"), []string{"cpu"}), "cgroup.subtree_control")
}

func TestControllers(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644))
	got, err := Controllers(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{"cpuset", "cpu", "io", "memory", "pids"}, got)
	_, err = Controllers(filepath.Join(dir, "none"))
	assert.Error(t, err)
}

func TestRemove(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vm-1")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, Remove(dir))
	assert.NoDirExists(t, dir)
	require.NoError(t, Remove(dir), "one already gone")

	full := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(full, "x"), nil, 0o644))
	assert.ErrorContains(t, Remove(full), "removing", "a folder the kernel would call busy with processes fails at once with its own error")
}

func TestMounted(t *testing.T) {
	assert.False(t, Mounted(t.TempDir()))
}
