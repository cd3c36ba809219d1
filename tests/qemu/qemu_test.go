package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The pinned QEMU runs from its own tree on this machine, whatever the
// machine's own Debian release, and Files names all that it needs.
func TestPinnedQEMURunsFromItsTree(t *testing.T) {
	q, err := Get()
	require.NoError(t, err)
	argv := append(Argv(q.Root), "--version")
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	upstream := strings.TrimSuffix(strings.SplitN(Package.Version, ":", 2)[1], "+ds-0+deb13u1")
	assert.Contains(t, string(out), "QEMU emulator version "+upstream)

	files, err := q.Files()
	require.NoError(t, err)
	assert.Contains(t, files, "usr/lib/x86_64-linux-gnu/libc.so.6", "the tree's own C library")
	assert.Contains(t, files, "usr/share/qemu/linuxboot_dma.bin")
	assert.Contains(t, files, "usr/share/seabios/bios-microvm.bin")
	assert.Contains(t, files, "usr/share/seabios/bios-256k.bin")
	for _, f := range files {
		_, err := os.Stat(filepath.Join(q.Root, f))
		assert.NoError(t, err)
	}
}
