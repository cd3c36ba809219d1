package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/backup"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/machine/vmdef"
)

func backupCmd(c *vmCommand) func() int {
	return func() int {
		name, dest := c.args[0], c.args[1]
		dir, l, err := c.lock(name)
		if err != nil {
			return c.fail(err)
		}
		defer l.Unlock()
		def, err := dir.Load(name)
		if err != nil {
			return c.fail(err)
		}
		defData, err := os.ReadFile(dir.DefinitionPath(name))
		if err != nil {
			return c.fail(err)
		}
		st, err := c.status(dir, l)
		if err != nil {
			return c.fail(err)
		}
		running := st.State == state.Running
		sources := []backup.Source{{Role: backup.RoleKernel, Path: def.Config.Kernel}}
		if def.Config.Initrd != "" {
			sources = append(sources, backup.Source{Role: backup.RoleInitrd, Path: def.Config.Initrd})
		}
		for _, d := range def.Config.Disks {
			// A VMM holds its writable images locked: a stopped VM's are
			// locked here so that nothing else can write them meanwhile.
			sources = append(sources, backup.Source{Role: backup.RoleDisk, Path: d.Path, LockShared: !running})
		}
		total := int64(len(defData))
		for _, s := range sources {
			n, err := backup.FileSize(s.Path)
			if err != nil {
				return c.fail(err)
			}
			total += n
		}
		total *= 2 // copied, then read back and hashed
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()

		start := time.Now()
		var paused time.Duration
		p := newProgress(c.env.stderr, c.env.progressBar, total)
		opts := backup.Options{Progress: p.event}
		if running {
			// Only the disks change while the guest runs: it is paused while
			// their data is copied, not while the copies are hashed.
			var resume func() error
			var pausedAt time.Time
			opts.BeforeDisks = func() (err error) {
				if resume, err = pauseForBackup(ctx, dir.Paths(name).API); err != nil {
					return fmt.Errorf("pausing %s for a consistent copy: %w", name, err)
				}
				pausedAt = time.Now()
				return nil
			}
			opts.AfterDisks = func() error {
				paused = time.Since(pausedAt)
				if err := resume(); err != nil {
					return fmt.Errorf("resuming %s failed: %w; resume it with gvmm ctl --api-socket %s resume", name, err, dir.Paths(name).API)
				}
				return nil
			}
		}
		m, err := backup.Write(ctx, dest, name, defData, sources, opts)
		p.stop()
		if err != nil {
			return c.fail(err)
		}
		var size, data int64
		for _, f := range m.Files {
			size, data = size+f.Size, data+f.Data
		}
		c.printf("%s backed up to %s: %d files, %s (%s of data) in %s\n", name, dest, len(m.Files),
			humanSize(uint64(size)), humanSize(uint64(data)), time.Since(start).Round(time.Millisecond))
		if paused > 0 {
			c.printf("%s was paused for %s (vCPUs stopped, disks quiesced and synced) while its disks were copied\n", name, paused.Round(time.Millisecond))
		}
		return exitOK
	}
}

// pauseForBackup pauses a running VM through its API: the VMM then has
// no disk request in progress and its images synced. resume undoes it,
// unless the VM was already paused.
func pauseForBackup(ctx context.Context, socket string) (resume func() error, err error) {
	cl := api.NewClient(socket)
	call := func(do func(context.Context) error) error {
		ctx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		return do(ctx)
	}
	var info api.Info
	if err := call(func(ctx context.Context) (err error) { info, err = cl.Info(ctx); return err }); err != nil {
		cl.Close()
		return nil, err
	}
	if info.State == api.StatePaused {
		cl.Close()
		return func() error { return nil }, nil
	}
	if err := call(cl.Pause); err != nil {
		cl.Close()
		return nil, err
	}
	return func() error {
		defer cl.Close()
		// Not ctx: an interrupted backup must still resume the VM.
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		return cl.Resume(ctx)
	}, nil
}

// restoreItem is a file of the backup and where it goes.
type restoreItem struct {
	file   backup.File
	target string
	reuse  bool   // the target already holds exactly this file
	tmp    string // the copy before it is moved into place
	placed bool
}

func restoreCmd(c *vmCommand) func() int {
	newName := c.fs.String("name", "", "define the VM as `NEW` instead of the backup's name")
	diskDir := c.fs.String("disk-dir", "", "restore the images into `DIR` instead of where the definition had them")
	return func() (code int) {
		src := c.args[0]
		if *newName != "" {
			if err := vmdef.CheckName(*newName); err != nil {
				return c.usageErr("--name: %v", err)
			}
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		m, def, err := readBackup(src)
		if err != nil {
			return c.fail(err)
		}
		name := def.Name
		if *newName != "" {
			name = *newName
		}
		// A failed restore leaves no folder of its own behind.
		var dirs madeDirs
		defer func() {
			if code != exitOK {
				dirs.removeEmpty()
			}
		}()
		if *diskDir != "" {
			if *diskDir, err = filepath.Abs(*diskDir); err == nil {
				err = dirs.mkdirAll(*diskDir)
			}
			if err != nil {
				return c.fail(err)
			}
		}
		dir, l, err := c.lock(name)
		if err != nil {
			return c.fail(err)
		}
		defer l.Unlock()
		if _, err := dir.Load(name); err == nil {
			return c.fail(fmt.Errorf("%s: %w: restore it under another name with --name", name, state.ErrExists))
		} else if !errors.Is(err, state.ErrNotDefined) {
			return c.fail(err)
		}
		items, err := planRestore(ctx, src, m, def, *diskDir)
		if err != nil {
			return c.fail(err)
		}
		var total int64
		for _, it := range items {
			if !it.reuse {
				total += it.file.Size
			}
		}
		p := newProgress(c.env.stderr, c.env.progressBar, total)
		err = copyRestore(ctx, src, items, p, &dirs)
		p.stop()
		if err == nil {
			err = placeRestore(items)
		}
		if err == nil {
			def.Name = name
			i := 0
			for _, it := range items {
				switch it.file.Role {
				case backup.RoleKernel:
					def.Config.Kernel = it.target
				case backup.RoleInitrd:
					def.Config.Initrd = it.target
				case backup.RoleDisk:
					def.Config.Disks[i].Path = it.target
					i++
				}
			}
			err = l.Define(def)
		}
		if err != nil {
			undoRestore(items)
			return c.fail(err)
		}
		c.printf("%s restored from %s: %d files verified\n", name, src, len(m.Files))
		for _, it := range items {
			how := "restored"
			if it.reuse {
				how = "already in place, identical"
			}
			c.printf("  %s %s (%s)\n", it.file.Role, it.target, how)
		}
		return exitOK
	}
}

// readBackup reads the manifest and the definition of the backup in src,
// checking the definition's checksum and that both agree.
func readBackup(src string) (*backup.Manifest, *vmdef.Definition, error) {
	m, err := backup.ReadManifest(src)
	if err != nil {
		return nil, nil, err
	}
	if err := backup.CheckPresent(src, m); err != nil {
		return nil, nil, err
	}
	defFile := m.Files[0]
	defPath := filepath.Join(src, defFile.Path)
	data, err := os.ReadFile(defPath)
	if err != nil {
		return nil, nil, err
	}
	if err := defFile.Match(backup.Copied{Size: int64(len(data)), SHA256: fmt.Sprintf("%x", sha256.Sum256(data))}); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", defPath, err)
	}
	def, err := vmdef.Parse(defPath, data, src)
	if err != nil {
		return nil, nil, err
	}
	inconsistent := func(what string) error {
		return fmt.Errorf("%s: %w: %s", filepath.Join(src, backup.ManifestName), backup.ErrManifest, what)
	}
	switch {
	case len(m.Role(backup.RoleDisk)) != len(def.Config.Disks):
		return nil, nil, inconsistent(fmt.Sprintf("%d disk images for the definition's %d disks", len(m.Role(backup.RoleDisk)), len(def.Config.Disks)))
	case len(m.Role(backup.RoleInitrd)) != min(len(def.Config.Initrd), 1):
		return nil, nil, inconsistent("the initrd does not match the definition's")
	}
	return m, def, nil
}

// planRestore decides where each file goes: the folder diskDir, or the
// path the definition has. An identical kernel or initrd already there is
// used as it is; any other existing file is refused, never overwritten.
func planRestore(ctx context.Context, src string, m *backup.Manifest, def *vmdef.Definition, diskDir string) ([]*restoreItem, error) {
	var items []*restoreItem
	disk := 0
	for _, f := range m.Files[1:] {
		var orig string
		switch f.Role {
		case backup.RoleKernel:
			orig = def.Config.Kernel
		case backup.RoleInitrd:
			orig = def.Config.Initrd
		case backup.RoleDisk:
			orig = def.Config.Disks[disk].Path
			disk++
		}
		it := &restoreItem{file: f, target: orig}
		if f.Role != backup.RoleDisk {
			if c, err := backup.HashFile(ctx, orig, nil); err == nil && f.Match(c) == nil {
				it.reuse = true
				items = append(items, it)
				continue
			}
		}
		if diskDir != "" {
			it.target = filepath.Join(diskDir, filepath.Base(f.Path))
		}
		if _, err := os.Lstat(it.target); err == nil {
			return nil, fmt.Errorf("%s exists: a restore never overwrites a file; move it away or restore with --disk-dir", it.target)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		items = append(items, it)
	}
	return items, nil
}

// copyRestore copies every file to a temporary file next to its target,
// checking each against the manifest as it is read.
func copyRestore(ctx context.Context, src string, items []*restoreItem, p *progress, dirs *madeDirs) error {
	for _, it := range items {
		if it.reuse {
			continue
		}
		if err := copyOne(ctx, src, it, p, dirs); err != nil {
			return err
		}
	}
	return nil
}

func copyOne(ctx context.Context, src string, it *restoreItem, p *progress, dirs *madeDirs) error {
	if err := dirs.mkdirAll(filepath.Dir(it.target)); err != nil {
		return err
	}
	out, err := os.CreateTemp(filepath.Dir(it.target), "."+filepath.Base(it.target)+".restore-*")
	if err != nil {
		return err
	}
	defer out.Close()
	it.tmp = out.Name()
	if err := backup.CopyOut(ctx, out, src, it.file, p.event); err != nil {
		return err
	}
	if err := out.Chmod(0o600); err != nil {
		return err
	}
	return out.Close()
}

// placeRestore moves the verified copies into place; a hard link fails
// rather than replace a file that appeared meanwhile.
func placeRestore(items []*restoreItem) error {
	for _, it := range items {
		if it.reuse {
			continue
		}
		if err := os.Link(it.tmp, it.target); err != nil {
			return fmt.Errorf("placing %s: %w", it.target, err)
		}
		it.placed = true
		if err := os.Remove(it.tmp); err != nil {
			return err
		}
		it.tmp = ""
		if err := syncDir(filepath.Dir(it.target)); err != nil {
			return err
		}
	}
	return nil
}

// undoRestore removes what a failed restore copied or placed.
func undoRestore(items []*restoreItem) {
	for _, it := range items {
		if it.tmp != "" {
			os.Remove(it.tmp)
		}
		if it.placed {
			os.Remove(it.target)
		}
	}
}

// madeDirs are the folders a command created, in the order it did.
type madeDirs []string

// mkdirAll is os.MkdirAll, noting the folders it creates.
func (d *madeDirs) mkdirAll(path string) error {
	var missing []string // deepest first
	for p := path; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return err
	}
	slices.Reverse(missing)
	*d = append(*d, missing...)
	return nil
}

// removeEmpty removes the folders, deepest first, that are still empty:
// whatever someone else put in one keeps it.
func (d madeDirs) removeEmpty() {
	for _, p := range slices.Backward(d) {
		_ = os.Remove(p)
	}
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
