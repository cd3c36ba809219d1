// Package debkernel provides the stock Debian kernel that the KVM test
// host and the integration tests' guests boot: the package that
// linux-image-amd64 depends on, fetched with apt-get download and
// unpacked with dpkg -x into a cache folder git ignores.
package debkernel

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/kmod"
)

// EnvDir names a directory laid out like an unpacked kernel package
// (boot/vmlinuz-*, lib/modules/*/). When set, Get uses it instead of the
// cache; the KVM test host sets it for the tests it runs.
const EnvDir = "GVMM_KERNEL_DIR"

// EnvCache overrides the cache folder (default: .cache in the module root).
const EnvCache = "GVMM_CACHE_DIR"

// Kernel is an unpacked kernel package.
type Kernel struct {
	Root    string // the unpacked package
	Release string // e.g. 6.1.0-56-amd64
	Vmlinuz string // path of the bzImage
}

// ModulesDir is where the release's modules are.
func (k *Kernel) ModulesDir() string {
	return filepath.Join(k.Root, "lib", "modules", k.Release)
}

// Get returns the kernel, downloading and unpacking it on first use.
func Get() (*Kernel, error) {
	if dir := os.Getenv(EnvDir); dir != "" {
		return open(dir)
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("debkernel: %w", err)
	}
	// go test runs packages in parallel: serialise the download.
	lock, err := os.OpenFile(filepath.Join(cache, "kernel.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("debkernel: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("debkernel: locking the cache: %w", err)
	}
	pkg, resolveErr := resolvePackage()
	if resolveErr != nil {
		// Offline or without apt lists: a kernel unpacked earlier still serves.
		if k, err := newestCached(cache); err == nil {
			return k, nil
		}
		return nil, resolveErr
	}
	dir := filepath.Join(cache, pkg)
	if k, err := open(dir); err == nil {
		return k, nil
	}
	if err := fetch(pkg, cache, dir); err != nil {
		return nil, err
	}
	return open(dir)
}

// CacheDir returns the folder that holds downloaded packages.
func CacheDir() (string, error) {
	if dir := os.Getenv(EnvCache); dir != "" {
		return dir, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache"), nil
}

// ModuleRoot finds the directory holding go.mod above the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("debkernel: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("debkernel: no go.mod above the working directory; set %s", EnvCache)
		}
		dir = parent
	}
}

var depends = regexp.MustCompile(`Depends: (linux-image-[0-9][^\s]*)`)

// resolvePackage asks apt which versioned package linux-image-amd64 pulls
// in today, refreshing the package lists once if they are missing.
func resolvePackage() (string, error) {
	pkg, err := aptDepends()
	if err == nil {
		return pkg, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("debkernel: %w (run: sudo apt-get update)", err)
	}
	if out, uerr := exec.Command("apt-get", "update", "-q").CombinedOutput(); uerr != nil {
		return "", fmt.Errorf("debkernel: apt-get update: %w\n%s", uerr, out)
	}
	return aptDepends()
}

func aptDepends() (string, error) {
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64: %w", err)
	}
	m := depends.FindSubmatch(out)
	if m == nil {
		return "", errors.New("apt-cache depends linux-image-amd64 names no kernel package")
	}
	return string(m[1]), nil
}

func fetch(pkg, cache, dir string) error {
	dl := exec.Command("apt-get", "download", "-q", pkg)
	dl.Dir = cache
	if out, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("debkernel: apt-get download %s: %w\n%s", pkg, err, out)
	}
	debs, err := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
	if err != nil || len(debs) == 0 {
		return fmt.Errorf("debkernel: apt-get download %s left no .deb in %s", pkg, cache)
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("debkernel: %w", err)
	}
	if out, err := exec.Command("dpkg", "-x", debs[len(debs)-1], tmp).CombinedOutput(); err != nil {
		return fmt.Errorf("debkernel: dpkg -x: %w\n%s", err, out)
	}
	// Rename last, so an interrupted unpack is never taken for a kernel.
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("debkernel: %w", err)
	}
	return nil
}

func newestCached(cache string) (*Kernel, error) {
	dirs, _ := filepath.Glob(filepath.Join(cache, "linux-image-*"))
	for i := len(dirs) - 1; i >= 0; i-- {
		if k, err := open(dirs[i]); err == nil {
			return k, nil
		}
	}
	return nil, errors.New("debkernel: no kernel in the cache")
}

func open(root string) (*Kernel, error) {
	images, err := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if err != nil || len(images) == 0 {
		return nil, fmt.Errorf("debkernel: no boot/vmlinuz-* under %s", root)
	}
	release := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	k := &Kernel{Root: root, Release: release, Vmlinuz: images[0]}
	if _, err := os.Stat(k.ModulesDir()); err != nil {
		return nil, fmt.Errorf("debkernel: %w", err)
	}
	return k, nil
}

// Module is a loadable kernel module file.
type Module = kmod.Module

// Modules returns the named modules and everything they depend on, in an
// order in which they can be loaded (dependencies first). Modules built
// into the kernel are left out.
func (k *Kernel) Modules(names ...string) ([]Module, error) {
	return kmod.Resolve(k.ModulesDir(), names...)
}
