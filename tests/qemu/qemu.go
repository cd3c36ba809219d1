// Package qemu provides the QEMU that the tests run: the KVM test host's
// emulator and the benchmark's peer inside it. It is Debian 13's package,
// pinned by Version, fetched with its dependencies into the cache and run
// through its own dynamic loader (package debian), so that Debian 12
// machines get it too. QEMU 7.2, Debian 12's, froze two-vCPU test hosts
// running KVM guests within minutes; see the README's "The KVM test host".
package qemu

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/gvmm-dev/gvmm/tests/debian"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
)

// Package is the QEMU the tests use: the one place its version is named.
var Package = debian.Package{Suite: "trixie", Name: "qemu-system-x86", Version: "1:10.0.13+ds-0+deb13u1"}

// Paths inside an unpacked tree.
const (
	binary  = "usr/bin/qemu-system-x86_64"
	loader  = "usr/lib64/ld-linux-x86-64.so.2"
	libDir  = "usr/lib/x86_64-linux-gnu"
	dataDir = "usr/share/qemu"
	// seabios's BIOS images are a package of their own, found through -L.
	biosDir = "usr/share/seabios"
)

// QEMU is an unpacked QEMU with its libraries and firmware.
type QEMU struct {
	Root string
}

// Get returns the pinned QEMU, fetching it on first use.
func Get() (*QEMU, error) {
	cache, err := debkernel.CacheDir()
	if err != nil {
		return nil, err
	}
	root, err := debian.Unpack(cache, Package)
	if err != nil {
		return nil, err
	}
	q := &QEMU{Root: root}
	if _, err := os.Stat(filepath.Join(root, binary)); err != nil {
		return nil, fmt.Errorf("qemu: %s has no %s: %w", root, binary, err)
	}
	return q, nil
}

// Argv is the start of a command line that runs this QEMU from a copy of
// its files laid out under root (q.Root, or where they were carried),
// firmware search path included; the caller appends QEMU's arguments.
func Argv(root string) []string {
	return []string{
		filepath.Join(root, loader), "--library-path", filepath.Join(root, libDir),
		"--argv0", "qemu-system-x86_64", filepath.Join(root, binary),
		"-L", filepath.Join(root, dataDir), "-L", filepath.Join(root, biosDir),
	}
}

// Files lists, relative to q.Root, what Argv needs: the program, its
// loader and libraries, and the firmware.
func (q *QEMU) Files() ([]string, error) {
	out, err := exec.Command(filepath.Join(q.Root, loader), "--library-path", filepath.Join(q.Root, libDir),
		"--list", filepath.Join(q.Root, binary)).Output()
	if err != nil {
		return nil, fmt.Errorf("qemu: listing the libraries of %s: %w", binary, err)
	}
	files := []string{binary, loader}
	prefix := filepath.Join(q.Root, libDir) + "/"
	for _, line := range strings.Split(string(bytes.TrimSpace(out)), "\n") {
		_, lib, ok := strings.Cut(line, "=> ")
		lib, _, _ = strings.Cut(lib, " (")
		if !ok || filepath.Base(lib) == filepath.Base(loader) {
			continue // the vDSO, the loader itself
		}
		if !strings.HasPrefix(lib, prefix) {
			return nil, fmt.Errorf("qemu: %s resolves %q outside its own tree", binary, strings.TrimSpace(line))
		}
		files = append(files, strings.TrimPrefix(lib, q.Root+"/"))
	}
	for _, dir := range []string{dataDir, biosDir} {
		err := filepath.WalkDir(filepath.Join(q.Root, dir), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				files = append(files, strings.TrimPrefix(p, q.Root+"/"))
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
	}
	return files, nil
}
