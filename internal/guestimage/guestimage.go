// Package guestimage builds the small initramfs a gvmm guest boots from:
// a console node, one static program as /init (PID 1), and the kernel
// modules it loads first, in order. gvmm exec's init and the containerd
// shim's agent both boot from one; the guest side loads the modules with
// LoadModules.
package guestimage

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/kmod"
)

// ErrNotStatic refuses an init that needs a dynamic loader, which the
// initramfs does not have.
var ErrNotStatic = errors.New("not statically linked (build it with CGO_ENABLED=0)")

// CheckStatic checks that the executable at path needs no dynamic loader.
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s: %w", path, ErrNotStatic)
		}
	}
	return nil
}

// modulesOrder lists the initramfs's modules in load order, one a line:
// NAME and, for a compressed file, " compressed".
const modulesOrder = "etc/modules.order"

// Write writes the initramfs to path: a console node, init as /init, and
// the modules under /lib/modules.
func Write(path, init string, mods []kmod.Module) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	w := cpio.Newc.Writer(bw)
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("etc", 0o755),
		cpio.Directory("lib", 0o755),
		cpio.Directory("lib/modules", 0o755),
	}
	data, err := os.ReadFile(init)
	if err != nil {
		return err
	}
	recs = append(recs, cpio.StaticFile("init", string(data), 0o755))
	var order strings.Builder
	for _, m := range mods {
		data, err := os.ReadFile(m.Path)
		if err != nil {
			return fmt.Errorf("module %s: %w", m.Name, err)
		}
		file := "lib/modules/" + filepath.Base(m.Path)
		recs = append(recs, cpio.StaticFile(file, string(data), 0o644))
		order.WriteString("/" + file)
		if m.Compressed() {
			order.WriteString(" compressed")
		}
		order.WriteString("\n")
	}
	recs = append(recs, cpio.StaticFile(modulesOrder, order.String(), 0o644))
	for _, r := range recs {
		if err := w.WriteRecord(r); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return bw.Flush()
}

// LoadModules is the guest's side: it loads the initramfs's modules in
// the order Write listed them.
func LoadModules() error {
	data, err := os.ReadFile("/" + modulesOrder)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		path, compressed := strings.CutSuffix(line, " compressed")
		flags := 0
		if compressed {
			flags = unix.MODULE_INIT_COMPRESSED_FILE
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", flags)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("loading %s: %w", path, err)
		}
	}
	return nil
}
