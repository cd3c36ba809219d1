package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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

// pauseLease is how long a backup's pause outlives the backup: if gvmm
// backup dies while the VM is paused, the VMM resumes it then. The
// backup renews it every third of it.
const pauseLease = 30 * time.Second

// pauseForBackup pauses a running VM through its API: the VMM then has
// no disk request in progress and its images synced. resume undoes it,
// unless the VM was already paused, and fails if the pause ended before
// (its lease ran out, or someone resumed it): the copy is then not
// consistent.
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
	if err := call(func(ctx context.Context) error { return cl.PauseLease(ctx, pauseLease) }); err != nil {
		// A timeout or a signal loses the answer, not the pause: undo
		// it in case it happened.
		if rerr := resumeVM(cl); rerr != nil && !isConflict(rerr) {
			err = fmt.Errorf("%w; resuming it: %w", err, rerr)
		}
		cl.Close()
		return nil, err
	}
	renewing, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { renewLease(renewing, cl) })
	return func() error {
		stop()
		wg.Wait()
		defer cl.Close()
		err := resumeVM(cl)
		if isConflict(err) {
			return fmt.Errorf("the pause ended before the copy did (its lease of %s ran out, or the VM was resumed): the copy is not consistent", pauseLease)
		}
		return err
	}, nil
}

// renewLease renews the pause's lease until ctx is done. A renewal that
// fails is tried again at the next tick; a pause that ended is found by
// the resume.
func renewLease(ctx context.Context, cl *api.Client) {
	tick := time.NewTicker(pauseLease / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, apiTimeout)
		_ = cl.RenewLease(rctx, pauseLease)
		cancel()
	}
}

// resumeVM resumes the VM with a context of its own: an interrupted
// backup must still resume it.
func resumeVM(cl *api.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	return cl.Resume(ctx)
}

func isConflict(err error) bool {
	apiErr, ok := errors.AsType[*api.Error](err)
	return ok && apiErr.StatusCode == http.StatusConflict
}

// restoreItem is a file of the backup and where it goes.
type restoreItem struct {
	file   backup.File
	target string   // absolute
	reuse  bool     // the target already holds exactly this file
	dir    *os.File // the target's folder, once open
	tmp    string   // the copy's name in dir before it is moved into place
	placed bool
}

func restoreCmd(c *vmCommand) func() int {
	newName := c.fs.String("name", "", "define the VM as `NEW` instead of the backup's name")
	diskDir := c.fs.String("disk-dir", "", "restore the images into `DIR` instead of where the definition had them")
	yes := c.fs.Bool("yes", false, "without --disk-dir: write the files to the paths the backup's definition names, which restore shows and otherwise refuses")
	return func() (code int) {
		src := c.args[0]
		if *newName != "" {
			if err := vmdef.CheckName(*newName); err != nil {
				return c.usageErr("--name: %v", err)
			}
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		bd, err := backup.OpenDir(src)
		if err != nil {
			return c.fail(err)
		}
		defer bd.Close()
		m, def, err := readBackup(bd)
		if err != nil {
			return c.fail(err)
		}
		name := def.Name
		if *newName != "" {
			name = *newName
		}
		if *diskDir != "" {
			if *diskDir, err = filepath.Abs(*diskDir); err != nil {
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
		items, err := planRestore(ctx, m, def, *diskDir)
		if err != nil {
			return c.fail(err)
		}
		defer closeItems(items)
		if *diskDir == "" && !*yes {
			if shown := writtenTo(items); shown != "" {
				return c.usageErr("the backup's definition would have these files written:\n%srestore there with --yes, or into a folder of your choosing with --disk-dir DIR", shown)
			}
		}
		// A failed restore leaves no folder of its own behind.
		var dirs madeDirs
		defer func() {
			if code != exitOK {
				dirs.removeEmpty()
			}
		}()
		var total int64
		for _, it := range items {
			if !it.reuse {
				total += it.file.Size
			}
		}
		p := newProgress(c.env.stderr, c.env.progressBar, total)
		err = copyRestore(ctx, bd, items, p, &dirs)
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

// writtenTo lists the files a restore would write, one a line.
func writtenTo(items []*restoreItem) string {
	var b strings.Builder
	for _, it := range items {
		if !it.reuse {
			fmt.Fprintf(&b, "  %s %s\n", it.file.Role, it.target)
		}
	}
	return b.String()
}

// readBackup reads the manifest and the definition of the backup in bd,
// checking the definition's checksum and that both agree.
func readBackup(bd *backup.Dir) (*backup.Manifest, *vmdef.Definition, error) {
	m, err := backup.ReadManifest(bd)
	if err != nil {
		return nil, nil, err
	}
	if err := backup.CheckPresent(bd, m); err != nil {
		return nil, nil, err
	}
	defFile := m.Files[0]
	f, err := bd.Open(defFile.Path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	defPath := f.Name()
	data, err := io.ReadAll(io.LimitReader(f, defFile.Size+1))
	if err != nil {
		return nil, nil, err
	}
	if err := defFile.Match(backup.Copied{Size: int64(len(data)), SHA256: fmt.Sprintf("%x", sha256.Sum256(data))}); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", defPath, err)
	}
	def, err := vmdef.Parse(defPath, data, "")
	if err != nil {
		return nil, nil, err
	}
	if err := checkSpelledPaths(defPath, data); err != nil {
		return nil, nil, err
	}
	inconsistent := func(what string) error {
		return fmt.Errorf("%s: %w: %s", filepath.Join(bd.Path(), backup.ManifestName), backup.ErrManifest, what)
	}
	switch {
	case len(m.Role(backup.RoleDisk)) != len(def.Config.Disks):
		return nil, nil, inconsistent(fmt.Sprintf("%d disk images for the definition's %d disks", len(m.Role(backup.RoleDisk)), len(def.Config.Disks)))
	case len(m.Role(backup.RoleInitrd)) != min(len(def.Config.Initrd), 1):
		return nil, nil, inconsistent("the initrd does not match the definition's")
	}
	return m, def, nil
}

// checkSpelledPaths refuses a definition whose kernel, initrd or disk
// path is relative or has a .. element as vm.json spells it (vmdef
// cleans them): gvmm stores absolute, clean paths, so such a backup was
// made by hand or forged, and its paths would not be what they seem.
func checkSpelledPaths(defPath string, data []byte) error {
	var spelled struct {
		Kernel string `json:"kernel"`
		Initrd string `json:"initrd"`
		Disks  []struct {
			Path string `json:"path"`
		} `json:"disks"`
	}
	if err := json.Unmarshal(data, &spelled); err != nil {
		return fmt.Errorf("%s: %w", defPath, err) // vmdef.Parse took it: not reached
	}
	paths := []string{spelled.Kernel, spelled.Initrd}
	for _, d := range spelled.Disks {
		paths = append(paths, d.Path)
	}
	for _, p := range paths {
		switch {
		case p == "":
		case !filepath.IsAbs(p):
			return fmt.Errorf("%s names %q: not an absolute path; a backup of gvmm's has only absolute ones", defPath, p)
		case slices.Contains(strings.Split(p, "/"), ".."):
			return fmt.Errorf("%s names %q: a path with ..; a backup of gvmm's has only clean ones", defPath, p)
		}
	}
	return nil
}

// planRestore decides where each file goes: the folder diskDir, or the
// path the definition has (absolute: readBackup checked). An identical kernel or initrd already
// there is used as it is; any other existing file is refused, never
// overwritten. Nothing is created yet.
func planRestore(ctx context.Context, m *backup.Manifest, def *vmdef.Definition, diskDir string) ([]*restoreItem, error) {
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
		if f.Role != backup.RoleDisk && holds(ctx, orig, f) {
			it.reuse = true
			items = append(items, it)
			continue
		}
		if diskDir != "" {
			it.target = filepath.Join(diskDir, filepath.Base(f.Path))
		}
		if err := absent(it.target); err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return items, nil
}

// holds says whether the regular file at path, reached without a symlink,
// is f.
func holds(ctx context.Context, path string, f backup.File) bool {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	in, err := backup.OpenAt(nil, path, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer in.Close()
	if st, err := in.Stat(); err != nil || !st.Mode().IsRegular() {
		return false
	}
	c, err := backup.Hash(ctx, in, nil)
	return err == nil && f.Match(c) == nil
}

// absent checks that nothing is at path, and that no symlink leads there.
func absent(path string) error {
	dir, err := backup.OpenAt(nil, filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // created by the restore
	case errors.Is(err, backup.ErrSymlink):
		return fmt.Errorf("%s: %w", path, backup.ErrSymlink)
	case err != nil:
		return err
	}
	defer dir.Close()
	var st unix.Stat_t
	err = unix.Fstatat(int(dir.Fd()), filepath.Base(path), &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		return fmt.Errorf("%s exists: a restore never overwrites a file; move it away or restore with --disk-dir", path)
	case !errors.Is(err, unix.ENOENT):
		return &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return nil
}

// copyRestore copies every file to a temporary file next to its target,
// checking each against the manifest as it is read.
func copyRestore(ctx context.Context, bd *backup.Dir, items []*restoreItem, p *progress, dirs *madeDirs) error {
	for _, it := range items {
		if it.reuse {
			continue
		}
		if err := copyOne(ctx, bd, it, p, dirs); err != nil {
			return err
		}
	}
	return nil
}

func copyOne(ctx context.Context, bd *backup.Dir, it *restoreItem, p *progress, dirs *madeDirs) (err error) {
	if it.dir, err = dirs.open(filepath.Dir(it.target)); err != nil {
		return err
	}
	tmp := "." + filepath.Base(it.target) + ".restore-" + rand.Text()
	out, err := backup.OpenAt(it.dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	it.tmp = tmp
	if err := backup.CopyOut(ctx, out, bd, it.file, p.event); err != nil {
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
		fd := int(it.dir.Fd())
		if err := unix.Linkat(fd, it.tmp, fd, filepath.Base(it.target), 0); err != nil {
			return fmt.Errorf("placing %s: %w", it.target, err)
		}
		it.placed = true
		if err := unix.Unlinkat(fd, it.tmp, 0); err != nil {
			return fmt.Errorf("removing %s: %w", filepath.Join(it.dir.Name(), it.tmp), err)
		}
		it.tmp = ""
		if err := it.dir.Sync(); err != nil {
			return err
		}
	}
	return nil
}

// undoRestore removes what a failed restore copied or placed.
func undoRestore(items []*restoreItem) {
	for _, it := range items {
		if it.dir == nil {
			continue
		}
		if it.tmp != "" {
			_ = unix.Unlinkat(int(it.dir.Fd()), it.tmp, 0)
		}
		if it.placed {
			_ = unix.Unlinkat(int(it.dir.Fd()), filepath.Base(it.target), 0)
		}
	}
}

func closeItems(items []*restoreItem) {
	for _, it := range items {
		if it.dir != nil {
			it.dir.Close()
		}
	}
}

// madeDirs are the folders a command created, in the order it did.
type madeDirs []string

// open opens the folder path (absolute), creating the folders missing
// and noting them, never through a symlink.
func (d *madeDirs) open(path string) (*os.File, error) {
	dir, err := backup.OpenAt(nil, "/", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	for name := range strings.SplitSeq(strings.TrimPrefix(filepath.Clean(path), "/"), "/") {
		if name == "" {
			continue // path is /
		}
		next, err := backup.OpenAt(dir, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			if err = unix.Mkdirat(int(dir.Fd()), name, 0o700); err != nil {
				err = &fs.PathError{Op: "mkdir", Path: filepath.Join(dir.Name(), name), Err: err}
			} else {
				*d = append(*d, filepath.Join(dir.Name(), name))
				next, err = backup.OpenAt(dir, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			}
		}
		dir.Close()
		if errors.Is(err, backup.ErrSymlink) {
			return nil, fmt.Errorf("%s: %w", path, backup.ErrSymlink)
		}
		if err != nil {
			return nil, err
		}
		dir = next
	}
	return dir, nil
}

// removeEmpty removes the folders, deepest first, that are still empty:
// whatever someone else put in one keeps it.
func (d madeDirs) removeEmpty() {
	for _, p := range slices.Backward(d) {
		_ = os.Remove(p)
	}
}
