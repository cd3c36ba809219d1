// Package containerdpkg provides the containerd, ctr and runc that the
// shim's tests run in the KVM test host: Debian 13's containerd package,
// pinned by Package, fetched with its dependencies into the cache
// (package debian), Debian 12's runc and Debian 12's CNI plugins. Debian 13's containerd
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
// named.
var Package = debian.Package{Suite: "trixie", Name: "containerd", Version: "1.7.24~ds1-6+deb13u1"}

// RuncPackage is the benchmark's peer runtime: Debian 12's runc, which
// runs with a Debian 12 machine's own C library and libseccomp, where
// Debian 13's needs glibc 2.38. Its runtime v2 shim is containerd's.
var RuncPackage = debian.Package{Suite: "bookworm", Name: "runc", Version: "1.1.5+ds1-1+deb12u1"}

// CNIPackage is the CNI plugins a pod's network is set up with (the
// path the kubelet takes through containerd's CRI plugin): Debian 12's,
// whose programs, like runc, run with a Debian 12 machine's C library.
var CNIPackage = debian.Package{Suite: "bookworm", Name: "containernetworking-plugins", Version: "1.1.1+ds1-3+b5"}

// CNIPlugins are the CNI plugins the tests use, in CNIPackage's
// plugin folder (usr/lib/cni).
var CNIPlugins = []string{"bridge", "host-local", "loopback"}

// Programs are the package tree's programs the tests run, relative to
// its root; they need nothing but the C library.
var Programs = []string{"usr/bin/containerd", "usr/bin/ctr", "usr/bin/containerd-shim-runc-v2"}

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

// Runc returns the path of RuncPackage's runc, fetching it on first use.
func Runc() (string, error) {
	cache, err := debkernel.CacheDir()
	if err != nil {
		return "", err
	}
	root, err := debian.Unpack(cache, RuncPackage)
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "usr/sbin/runc")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("containerdpkg: %w", err)
	}
	return p, nil
}

// CNI returns the paths of CNIPackage's CNIPlugins, fetching it on
// first use.
func CNI() ([]string, error) {
	cache, err := debkernel.CacheDir()
	if err != nil {
		return nil, err
	}
	root, err := debian.Unpack(cache, CNIPackage)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, name := range CNIPlugins {
		p := filepath.Join(root, "usr/lib/cni", name)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("containerdpkg: %w", err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}
