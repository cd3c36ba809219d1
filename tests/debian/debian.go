// Package debian fetches a Debian package of another suite than the
// machine's own (Debian 13's QEMU on a Debian 12 machine, say) together
// with everything it depends on, its own C library included, and unpacks
// them into one folder of the cache, where the package's programs run
// through that folder's own dynamic loader. Nothing is installed: apt runs
// in a private root with an empty dpkg status, against the machine's own
// Debian mirror, and the packages are unpacked with dpkg -x.
package debian

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Package names one version of a package of a suite.
type Package struct {
	Suite   string // e.g. trixie
	Name    string
	Version string // exact, as apt spells it: the version is pinned
}

// Keyring verifies Debian's archives; every Debian system has it.
const Keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// complete marks an unpacked folder as whole: a folder without it is the
// remains of an interrupted unpack.
const complete = ".complete"

// Unpack returns a folder under cache holding p and its dependencies
// unpacked, fetching them on first use. Concurrent callers (go test runs
// packages in parallel) wait for one another.
func Unpack(cache string, p Package) (string, error) {
	dir := filepath.Join(cache, p.Name+"_"+strings.ReplaceAll(p.Version, ":", "%3a")+"_"+p.Suite)
	if _, err := os.Stat(filepath.Join(dir, complete)); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("debian: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, "debian.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("debian: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("debian: locking the cache: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, complete)); err == nil {
		return dir, nil // another process fetched it while we waited
	}
	a, err := newApt(filepath.Join(cache, "apt-"+p.Suite), p.Suite)
	if err != nil {
		return "", err
	}
	debs, err := a.download(p)
	if err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("debian: %w", err)
	}
	for _, deb := range debs {
		if out, err := exec.Command("dpkg", "-x", deb, dir).CombinedOutput(); err != nil {
			return "", fmt.Errorf("debian: dpkg -x %s: %w\n%s", filepath.Base(deb), err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, complete), nil, 0o644); err != nil {
		return "", fmt.Errorf("debian: %w", err)
	}
	return dir, nil
}

// apt is apt-get in a private root: its own sources list, package lists,
// download cache and an empty dpkg status, so that it resolves every
// dependency down to the C library and touches nothing of the system's.
type apt struct {
	root string
	opts []string
}

func newApt(root, suite string) (*apt, error) {
	mirror, err := Mirror()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"lists/partial", "archives/partial"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("debian: %w", err)
		}
	}
	sources := filepath.Join(root, "sources.list")
	line := fmt.Sprintf("deb [signed-by=%s] %s %s main\n", Keyring, mirror, suite)
	if err := os.WriteFile(sources, []byte(line), 0o644); err != nil {
		return nil, fmt.Errorf("debian: %w", err)
	}
	status := filepath.Join(root, "status")
	if err := os.WriteFile(status, nil, 0o644); err != nil {
		return nil, fmt.Errorf("debian: %w", err)
	}
	return &apt{root: root, opts: []string{
		"-o", "Dir::Etc::SourceList=" + sources,
		"-o", "Dir::Etc::SourceParts=/dev/null",
		"-o", "Dir::State=" + root,
		"-o", "Dir::State::Lists=" + filepath.Join(root, "lists"),
		"-o", "Dir::State::status=" + status,
		"-o", "Dir::Cache=" + root,
		"-o", "Dir::Cache::Archives=" + filepath.Join(root, "archives"),
		"-o", "Debug::NoLocking=1",
		"-o", "APT::Architecture=amd64",
		"-o", "APT::Install-Recommends=false",
	}}, nil
}

func (a *apt) run(args ...string) ([]byte, error) {
	cmd := exec.Command("apt-get", append(append([]string{"-q", "-y"}, a.opts...), args...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	return cmd.CombinedOutput()
}

// download fetches p and its dependencies and returns the .deb files.
// The package lists are refreshed when the pinned version is not in them.
func (a *apt) download(p Package) ([]string, error) {
	want := p.Name + "=" + p.Version
	archives := filepath.Join(a.root, "archives")
	// A failed download can leave files of another version behind: start clean.
	old, _ := filepath.Glob(filepath.Join(archives, "*.deb"))
	for _, f := range old {
		os.Remove(f)
	}
	out, err := a.run("install", "--download-only", want)
	if err != nil {
		if uout, uerr := a.run("update"); uerr != nil {
			return nil, fmt.Errorf("debian: apt-get update (%s): %w\n%s", p.Suite, uerr, uout)
		}
		if out, err = a.run("install", "--download-only", want); err != nil {
			return nil, fmt.Errorf("debian: apt-get install --download-only %s from %s: %w\n%s"+
				"(is %s still in %s? the version is pinned where the package is named)",
				want, p.Suite, err, out, p.Version, p.Suite)
		}
	}
	debs, err := filepath.Glob(filepath.Join(archives, "*.deb"))
	if err != nil || len(debs) == 0 {
		return nil, fmt.Errorf("debian: apt-get left no packages in %s\n%s", archives, out)
	}
	return debs, nil
}

// Mirror is the machine's own Debian archive, as its apt sources name it
// for its own release: the packages of another suite come from there too.
// It reads the sources alone (--no-release-info), so that it works on a
// fresh machine whose package lists were never downloaded.
func Mirror() (string, error) {
	codename, err := codename()
	if err != nil {
		return "", err
	}
	out, err := exec.Command("apt-get", "indextargets", "--no-release-info", "--format", "$(REPO_URI) $(RELEASE)", "Identifier: Packages").Output()
	if err != nil {
		return "", fmt.Errorf("debian: apt-get indextargets: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		uri, release, ok := strings.Cut(sc.Text(), " ")
		if ok && release == codename {
			return uri, nil
		}
	}
	return "", fmt.Errorf("debian: apt's sources name no archive for this machine's release %q", codename)
}

func codename() (string, error) {
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "", fmt.Errorf("debian: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VERSION_CODENAME="); ok && v != "" {
			return strings.Trim(v, `"`), nil
		}
	}
	return "", errors.New("debian: /etc/os-release has no VERSION_CODENAME: not a Debian system?")
}
