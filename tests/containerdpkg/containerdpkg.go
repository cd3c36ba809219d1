// Package containerdpkg provides the containerd, ctr and runc that the
// shim's tests run in the KVM test host: Debian 13's containerd package,
// pinned by Package, fetched with its dependencies (runc among them) into
// the cache and run from there (package debian). Debian 13's containerd
// is 1.7, whose runtime v2 shim protocol the shim speaks (see the
// README's "containerd and Kubernetes").
package containerdpkg

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/gvmm-dev/gvmm/tests/debian"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
)

// Package is the containerd the tests use: the one place its version is
// named. Its dependencies bring runc, the benchmark's peer.
var Package = debian.Package{Suite: "trixie", Name: "containerd", Version: "1.7.24~ds1-6+deb13u1"}

// Programs are the package tree's programs the tests run, relative to
// its root: all are statically linked Go programs but runc, which needs
// libseccomp from the same tree.
var Programs = []string{"usr/bin/containerd", "usr/bin/ctr", "usr/sbin/runc"}

// Get returns the root of the unpacked tree, fetching it on first use.
func Get() (string, error) {
	cache, err := debkernel.CacheDir()
	if err != nil {
		return "", err
	}
	root, err := debian.Unpack(cache, Package)
	if err != nil {
		return "", err
	}
	for _, p := range Programs {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			return "", fmt.Errorf("containerdpkg: %s has no %s: %w", root, p, err)
		}
	}
	return root, nil
}
