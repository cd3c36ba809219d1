// Package kmod finds loadable kernel modules and their dependencies in a
// modules folder (/lib/modules/RELEASE), for initramfs images that load
// them: from modules.dep where depmod wrote one, otherwise, as in an
// unpacked kernel package, from the "depends=" entry of each module's
// .modinfo section.
package kmod

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Module is a loadable kernel module file.
type Module struct {
	Name string // canonical name, underscores for dashes
	Path string // .ko, or compressed .ko.xz, .ko.zst, .ko.gz
}

// Compressed reports whether the file is compressed: the kernel then
// decompresses it itself (finit_module's MODULE_INIT_COMPRESSED_FILE).
func (m Module) Compressed() bool { return !strings.HasSuffix(m.Path, ".ko") }

// canonical gives the kernel's spelling of a module name.
func canonical(name string) string { return strings.ReplaceAll(name, "-", "_") }

// nameOf is a module's canonical name from its file name.
func nameOf(file string) (string, bool) {
	base := filepath.Base(file)
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if n, ok := strings.CutSuffix(base, ext); ok {
			return canonical(n), true
		}
	}
	return "", false
}

// Resolve returns the named modules of the folder dir and everything they
// depend on, in an order in which they can be loaded (dependencies
// first). Modules built into the kernel (modules.builtin) are left out.
func Resolve(dir string, names ...string) ([]Module, error) {
	builtin, err := builtins(dir)
	if err != nil {
		return nil, err
	}
	index, depends, err := fromModulesDep(dir)
	if errors.Is(err, fs.ErrNotExist) {
		index, depends, err = fromModinfo(dir)
	}
	if err != nil {
		return nil, err
	}
	var order []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string) error
	visit = func(name string) error {
		name = canonical(name)
		switch {
		case state[name] == 2 || builtin[name]:
			return nil
		case state[name] == 1:
			return fmt.Errorf("kmod: module dependency cycle at %s", name)
		}
		p, ok := index[name]
		if !ok {
			return fmt.Errorf("kmod: no module %s in %s", name, dir)
		}
		state[name] = 1
		deps, err := depends(name, p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, Module{Name: name, Path: p})
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

type dependsFunc func(name, path string) ([]string, error)

// fromModulesDep reads depmod's modules.dep: "kernel/a/b.ko: dep.ko ...".
func fromModulesDep(dir string) (map[string]string, dependsFunc, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	index, deps := map[string]string{}, map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		file, rest, ok := strings.Cut(sc.Text(), ":")
		name, isMod := nameOf(file)
		if !ok || !isMod {
			continue
		}
		index[name] = filepath.Join(dir, file)
		for _, d := range strings.Fields(rest) {
			if dn, ok := nameOf(d); ok {
				deps[name] = append(deps[name], dn)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("kmod: modules.dep: %w", err)
	}
	return index, func(name, _ string) ([]string, error) { return deps[name], nil }, nil
}

// fromModinfo indexes the module files under dir/kernel and reads each
// one's dependencies from the file itself.
func fromModinfo(dir string) (map[string]string, dependsFunc, error) {
	index := map[string]string{}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name, ok := nameOf(p); ok && !d.IsDir() {
			index[name] = p
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("kmod: %w", err)
	}
	return index, func(_, path string) ([]string, error) { return moduleDepends(path) }, nil
}

func builtins(dir string) (map[string]bool, error) {
	data, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // a kernel without that list builds nothing in that we need
	}
	if err != nil {
		return nil, fmt.Errorf("kmod: %w", err)
	}
	b := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if name, ok := nameOf(line); ok {
			b[name] = true
		}
	}
	return b, nil
}

// moduleDepends reads the "depends=" entry of a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	if !strings.HasSuffix(path, ".ko") {
		return nil, fmt.Errorf("kmod: %s is compressed and the folder has no modules.dep: run depmod", path)
	}
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kmod: %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("kmod: %s has no .modinfo", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("kmod: %s: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}
