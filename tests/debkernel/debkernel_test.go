package debkernel

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests use the real kernel package: make test fetches it, and the
// test fails (never skips) when it cannot be had.
func TestModulesResolveDependenciesInLoadOrder(t *testing.T) {
	k, err := Get()
	require.NoError(t, err)
	assert.FileExists(t, k.Vmlinuz)

	mods, err := k.Modules("kvm-amd", "virtio_blk")
	require.NoError(t, err)
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.Name] = i
		assert.FileExists(t, m.Path)
	}
	for _, name := range []string{"irqbypass", "kvm", "ccp", "kvm_amd", "virtio_blk"} {
		assert.Contains(t, pos, name)
	}
	assert.Less(t, pos["irqbypass"], pos["kvm"])
	assert.Less(t, pos["kvm"], pos["kvm_amd"])
	assert.Less(t, pos["ccp"], pos["kvm_amd"])

	_, err = k.Modules("no_such_module")
	assert.ErrorContains(t, err, "no module no_such_module")
}

func TestOpenRejectsIncompleteTree(t *testing.T) {
	dir := t.TempDir()
	_, err := open(dir)
	assert.ErrorContains(t, err, "no boot/vmlinuz-*")

	require.NoError(t, os.MkdirAll(filepath.Join(dir, "boot"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "boot", "vmlinuz-9.9"), nil, 0o644))
	_, err = open(dir)
	assert.Error(t, err, "a kernel without its modules tree is incomplete")
}
