// Package initramfs builds newc cpio archives (Linux initramfs images)
// from host files, using u-root's pkg/cpio. The KVM test host and the
// integration tests' guests are both booted from archives built here.
package initramfs

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/gvmm-dev/gvmm/tests/debkernel"
)

// Archive collects the records of one initramfs. Parent directories are
// created implicitly; adding the same path twice is an error.
type Archive struct {
	records []cpio.Record
	names   map[string]bool
}

// New returns an empty archive.
func New() *Archive { return &Archive{names: make(map[string]bool)} }

func (a *Archive) add(r cpio.Record) error {
	r.Name = cpio.Normalize(r.Name)
	if a.names[r.Name] {
		return fmt.Errorf("initramfs: %q added twice", r.Name)
	}
	a.names[r.Name] = true
	a.records = append(a.records, r)
	return nil
}

// Has reports whether name is already in the archive.
func (a *Archive) Has(name string) bool { return a.names[cpio.Normalize(name)] }

// AddData adds a regular file with the given contents.
func (a *Archive) AddData(name string, data []byte, perm os.FileMode) error {
	return a.add(cpio.StaticRecord(data, cpio.Info{Name: name, Mode: cpio.S_IFREG | uint64(perm.Perm())}))
}

// AddFile adds the host file src (symlinks followed) as name.
func (a *Archive) AddFile(name, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return a.AddData(name, data, st.Mode())
}

// AddDir adds an empty directory.
func (a *Archive) AddDir(name string, perm os.FileMode) error {
	return a.add(cpio.Directory(name, uint64(perm.Perm())))
}

// AddSymlink adds a symbolic link name -> target.
func (a *Archive) AddSymlink(name, target string) error {
	return a.add(cpio.Symlink(name, target))
}

// AddCharDev adds a character device node, such as /dev/console, which
// the kernel needs before devtmpfs is mounted.
func (a *Archive) AddCharDev(name string, perm os.FileMode, major, minor uint64) error {
	return a.add(cpio.CharDev(name, uint64(perm.Perm()), major, minor))
}

// AddProgram adds the file src as name and, when it is a dynamically
// linked executable, its ELF interpreter and shared libraries at their
// host paths, so that it runs in an otherwise empty root file system.
func (a *Archive) AddProgram(name, src string) error {
	if err := a.AddFile(name, src); err != nil {
		return err
	}
	libs, err := sharedLibraries(src)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if a.Has(lib) {
			continue
		}
		if err := a.AddFile(lib, lib); err != nil {
			return err
		}
	}
	return nil
}

// sharedLibraries lists the absolute paths of the libraries the dynamic
// executable path needs, including its interpreter; none for a static one.
func sharedLibraries(file string) ([]string, error) {
	magic := make([]byte, len(elf.ELFMAG))
	if r, err := os.Open(file); err == nil {
		_, _ = io.ReadFull(r, magic)
		r.Close()
	}
	if string(magic) != elf.ELFMAG {
		return nil, nil // data, not a program
	}
	f, err := elf.Open(file)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %s: %w", file, err)
	}
	defer f.Close()
	dynamic := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			dynamic = true
		}
	}
	if !dynamic {
		return nil, nil
	}
	out, err := exec.Command("ldd", file).Output()
	if err != nil {
		return nil, fmt.Errorf("initramfs: ldd %s: %w", file, err)
	}
	return parseLDD(out), nil
}

// parseLDD extracts absolute library paths from ldd output lines such as
// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
// "/lib64/ld-linux-x86-64.so.2 (0x...)".
func parseLDD(out []byte) []string {
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for _, f := range fields {
			if path.IsAbs(f) {
				seen[f] = true
				break
			}
		}
	}
	libs := make([]string, 0, len(seen))
	for l := range seen {
		libs = append(libs, l)
	}
	sort.Strings(libs)
	return libs
}

// WriteTo writes the archive, parent directories first, then the trailer.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	rw := cpio.NewDedupWriter(cpio.Newc.Writer(cw))
	for _, r := range a.records {
		dirs := strings.Split(path.Dir(r.Name), "/")
		for i := range dirs {
			if d := path.Join(dirs[:i+1]...); d != "." {
				if err := rw.WriteRecord(cpio.Directory(d, 0o755)); err != nil {
					return cw.n, fmt.Errorf("initramfs: %w", err)
				}
			}
		}
		if err := rw.WriteRecord(r); err != nil {
			return cw.n, fmt.Errorf("initramfs: writing %s: %w", r.Name, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return cw.n, fmt.Errorf("initramfs: %w", err)
	}
	return cw.n, nil
}

// WriteFile writes the archive to path (uncompressed: the kernel unpacks
// it faster than a gzip stream and memory is not the constraint here).
func (a *Archive) WriteFile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if _, err := a.WriteTo(bw); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// WriteGuest writes an integration guest's initramfs to path: a console
// node, init as /init, and the modules as /lib/modules/NAME.ko, named in
// load order in /etc/modules.order for the init to load.
func WriteGuest(path, init string, mods []debkernel.Module) error {
	a := New()
	if err := a.AddCharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := a.AddProgram("init", init); err != nil {
		return err
	}
	var order strings.Builder
	for _, m := range mods {
		if err := a.AddFile("lib/modules/"+m.Name+".ko", m.Path); err != nil {
			return err
		}
		order.WriteString(m.Name + "\n")
	}
	if err := a.AddData("etc/modules.order", []byte(order.String()), 0o644); err != nil {
		return err
	}
	return a.WriteFile(path)
}
