// Package backup writes and checks gvmm's backups: a folder with a VM's
// definition, its kernel, initrd and disk images (copied sparse-aware:
// holes stay holes) and a manifest with each file's size and SHA-256,
// written last so that its presence marks a complete backup.
//
//	DEST/manifest.json
//	DEST/vm.json
//	DEST/boot/vmlinuz, DEST/boot/initrd.img
//	DEST/disks/web1.img
//
// Pausing a running VM for a consistent copy is the caller's business.
package backup

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Names in a backup folder.
const (
	ManifestName   = "manifest.json"
	DefinitionName = "vm.json"
	// Format is the manifest's format tag; others are refused.
	Format = "gvmm-backup/1"
	// maxManifestBytes bounds the manifest read.
	maxManifestBytes = 1 << 20
)

// Errors a damaged backup is refused with, wrapped with the file's name.
var (
	ErrMissing  = errors.New("missing from the backup")
	ErrCorrupt  = errors.New("does not match the manifest: the backup is damaged")
	ErrManifest = errors.New("invalid backup manifest")
	ErrInUse    = errors.New("disk image in use by another process")
)

// Roles of the files in a backup.
const (
	RoleDefinition = "definition"
	RoleKernel     = "kernel"
	RoleInitrd     = "initrd"
	RoleDisk       = "disk"
)

// Manifest describes a backup.
type Manifest struct {
	Format  string    `json:"format"`
	Name    string    `json:"name"` // the VM's
	Created time.Time `json:"created"`
	// Files are the definition first, then the kernel, the initrd if
	// any, and the disks in the definition's order.
	Files []File `json:"files"`
}

// File is one file of a backup.
type File struct {
	Path   string `json:"path"` // relative to the backup folder
	Role   string `json:"role"` // RoleDefinition, RoleKernel, RoleInitrd or RoleDisk
	Source string `json:"source,omitempty"`
	Size   int64  `json:"size"`
	Data   int64  `json:"data_bytes"` // in data extents; the rest were holes
	SHA256 string `json:"sha256"`
}

// Source is a file to back up.
type Source struct {
	Role string
	Path string
	// LockShared takes a shared flock on the file while it is copied: a
	// VMM using the image writable holds an exclusive one, so this
	// refuses an image in use. Not for the images of a paused VM, whose
	// VMM holds them.
	LockShared bool
}

// Steps in Event.Step.
const (
	StepCopy   = "copied"   // Write: data extents copied
	StepHash   = "hashed"   // Write: the copy read back and hashed
	StepVerify = "verified" // CopyOut: copied and checked against the manifest
)

// Event reports progress: Done of Size bytes of Path are through Step;
// Finished is set once per file and step, with Copied when it is hashed.
type Event struct {
	Path     string
	Step     string
	Done     int64
	Size     int64
	Finished bool
	Copied   Copied
}

// Options are Write's optional hooks.
type Options struct {
	// Progress is called as files are copied and hashed.
	Progress func(Event)
	// BeforeDisks is called after the other files are copied and before
	// the first disk is, and AfterDisks after the last: the time to pause
	// a running VM, which changes only its disks. The copies are hashed
	// after AfterDisks, so the VM is paused only while its disks' data is
	// copied. AfterDisks is called once BeforeDisks succeeded, whatever
	// happens next.
	BeforeDisks, AfterDisks func() error
}

// Write creates the backup folder dest (which must not exist, or be an
// empty folder) with definition (a VM definition's JSON) and copies of
// sources, disks last, then hashes every copy, and writes the manifest.
// On failure, or when ctx is done, what it created is removed.
func Write(ctx context.Context, dest, name string, definition []byte, sources []Source, opts Options) (_ *Manifest, err error) {
	progress := opts.Progress
	if progress == nil {
		progress = func(Event) {}
	}
	sources = slices.Clone(sources)
	slices.SortStableFunc(sources, func(a, b Source) int {
		return cmp.Compare(boolInt(a.Role == RoleDisk), boolInt(b.Role == RoleDisk))
	})
	created, err := makeDest(dest)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			removeCreated(dest, created)
		}
	}()
	m := &Manifest{Format: Format, Name: name, Created: time.Now().UTC().Truncate(time.Second)}
	if err := writeSynced(filepath.Join(dest, DefinitionName), definition); err != nil {
		return nil, err
	}
	n := int64(len(definition))
	progress(Event{Path: DefinitionName, Step: StepCopy, Done: n, Size: n, Finished: true})
	m.Files = append(m.Files, File{Path: DefinitionName, Role: RoleDefinition})
	used := map[string]bool{}
	copyAll := func() (err error) {
		for _, src := range sources {
			if src.Role == RoleDisk && opts.BeforeDisks != nil {
				if err := opts.BeforeDisks(); err != nil {
					return err
				}
				if opts.AfterDisks != nil {
					defer func() {
						if aerr := opts.AfterDisks(); err == nil {
							err = aerr
						}
					}()
				}
				opts.BeforeDisks = nil
			}
			rel := backupName(src, used)
			if err := copyIn(ctx, filepath.Join(dest, rel), src, rel, progress); err != nil {
				return fmt.Errorf("backup: %s: %w", src.Path, err)
			}
			m.Files = append(m.Files, File{Path: rel, Role: src.Role, Source: src.Path})
		}
		return nil
	}
	if err := copyAll(); err != nil {
		return nil, err
	}
	for i := range m.Files {
		f := &m.Files[i]
		c, err := hashCopy(ctx, filepath.Join(dest, f.Path), f.Path, progress)
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		f.Size, f.Data, f.SHA256 = c.Size, c.Data, c.SHA256
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := writeSynced(filepath.Join(dest, ManifestName), append(data, '\n')); err != nil {
		return nil, err
	}
	for _, dir := range []string{filepath.Join(dest, "boot"), filepath.Join(dest, "disks"), dest} {
		if err := syncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return m, nil
}

// hashCopy hashes a file of the backup, reporting progress.
func hashCopy(ctx context.Context, path, rel string, progress func(Event)) (Copied, error) {
	done := int64(0)
	size, err := FileSize(path)
	if err != nil {
		return Copied{}, err
	}
	c, err := HashFile(ctx, path, func(n int64) {
		done += n
		progress(Event{Path: rel, Step: StepHash, Done: done, Size: size})
	})
	if err != nil {
		return Copied{}, err
	}
	progress(Event{Path: rel, Step: StepHash, Done: size, Size: size, Finished: true, Copied: c})
	return c, nil
}

// FileSize is the size of a file or block device.
func FileSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// makeDest creates dest, or accepts an empty folder; created says which.
func makeDest(dest string) (created bool, err error) {
	err = os.Mkdir(dest, 0o700)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("backup: %w", err)
	}
	ents, err := os.ReadDir(dest)
	if err != nil {
		return false, fmt.Errorf("backup: %w", err)
	}
	if len(ents) > 0 {
		return false, fmt.Errorf("backup: %s is not empty: a backup never overwrites files", dest)
	}
	return false, nil
}

// removeCreated undoes a failed Write.
func removeCreated(dest string, created bool) {
	if created {
		os.RemoveAll(dest)
		return
	}
	ents, _ := os.ReadDir(dest)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(dest, e.Name()))
	}
}

// backupName picks the file's path in the backup: its base name in boot/
// or disks/, with an index when two would share one.
func backupName(src Source, used map[string]bool) string {
	dir := "disks"
	if src.Role != RoleDisk {
		dir = "boot"
	}
	base := filepath.Base(src.Path)
	rel := dir + "/" + base
	for i := 1; used[rel]; i++ {
		rel = fmt.Sprintf("%s/%d-%s", dir, i, base)
	}
	used[rel] = true
	return rel
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return f.Close()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// copyIn copies src into the new file dst, without hashing it.
func copyIn(ctx context.Context, dst string, src Source, rel string, progress func(Event)) error {
	in, err := os.Open(src.Path)
	if err != nil {
		return err
	}
	defer in.Close()
	if src.LockShared {
		if err := lockShared(in); err != nil {
			return err
		}
	}
	size, err := in.Seek(0, io.SeekEnd) // also sizes block devices
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	done := int64(0)
	_, err = copySparse(ctx, out, in, size, nil, func(n int64) {
		done += n
		progress(Event{Path: rel, Step: StepCopy, Done: done, Size: size})
	})
	if err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	progress(Event{Path: rel, Step: StepCopy, Done: size, Size: size, Finished: true})
	return nil
}

// lockShared takes a shared flock on f, released when f is closed.
func lockShared(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = unix.Flock(int(fd), unix.LOCK_SH|unix.LOCK_NB) }); err != nil {
		return err
	}
	if errors.Is(lerr, unix.EWOULDBLOCK) {
		return ErrInUse
	}
	if lerr != nil {
		return fmt.Errorf("locking: %w", lerr)
	}
	return nil
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ReadManifest reads and checks the manifest of the backup in d.
func ReadManifest(d *Dir) (*Manifest, error) {
	path := filepath.Join(d.Path(), ManifestName)
	f, err := d.Open(ManifestName)
	if errors.Is(err, ErrMissing) {
		return nil, fmt.Errorf("%w: %s is not a complete backup", err, d.Path())
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", path, ErrManifest, maxManifestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrManifest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: %w: data after the JSON object", path, ErrManifest)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", path, ErrManifest, err)
	}
	return &m, nil
}

// check validates what ReadManifest cannot leave to the decoder.
func (m *Manifest) check() error {
	if m.Format != Format {
		return fmt.Errorf("format %q, want %q", m.Format, Format)
	}
	if len(m.Files) == 0 || m.Files[0].Role != RoleDefinition || m.Files[0].Path != DefinitionName {
		return fmt.Errorf("the first file must be the definition, %s", DefinitionName)
	}
	seen := map[string]bool{}
	kernels := 0
	for i, f := range m.Files {
		switch {
		case !filepath.IsLocal(f.Path) || strings.Contains(f.Path, `\`) || f.Path != filepath.Clean(f.Path):
			return fmt.Errorf("files[%d]: path %q is not a plain path inside the backup", i, f.Path)
		case seen[f.Path]:
			return fmt.Errorf("files[%d]: %s is listed twice", i, f.Path)
		case f.Size < 0 || f.Data < 0 || f.Data > f.Size:
			return fmt.Errorf("files[%d]: %s: impossible sizes", i, f.Path)
		case !sha256Hex.MatchString(f.SHA256):
			return fmt.Errorf("files[%d]: %s: sha256 %q is not 64 lowercase hex digits", i, f.Path, f.SHA256)
		case i > 0 && f.Role == RoleDefinition:
			return fmt.Errorf("files[%d]: a second definition", i)
		case f.Role == RoleKernel:
			kernels++
		case f.Role != RoleDefinition && f.Role != RoleInitrd && f.Role != RoleDisk:
			return fmt.Errorf("files[%d]: unknown role %q", i, f.Role)
		}
		seen[f.Path] = true
	}
	if kernels != 1 {
		return fmt.Errorf("%d kernels, want 1", kernels)
	}
	return nil
}

// Role returns the files of one role, in order.
func (m *Manifest) Role(role string) []File {
	var out []File
	for _, f := range m.Files {
		if f.Role == role {
			out = append(out, f)
		}
	}
	return out
}

// CheckPresent checks that every file of the backup in d exists with
// its size, without reading it: what is cheap to find wrong first.
func CheckPresent(d *Dir, m *Manifest) error {
	for _, f := range m.Files {
		in, err := d.Open(f.Path)
		if err != nil {
			return err
		}
		st, err := in.Stat()
		in.Close()
		switch {
		case err != nil:
			return fmt.Errorf("backup: %w", err)
		case !st.Mode().IsRegular():
			return fmt.Errorf("%s: %w: not a regular file", in.Name(), ErrCorrupt)
		case st.Size() != f.Size:
			return fmt.Errorf("%s: %w: %d bytes, the manifest says %d", in.Name(), ErrCorrupt, st.Size(), f.Size)
		}
	}
	return nil
}

// CopyOut copies the file f of the backup in d into dst, which must be
// empty, checking it against the manifest as it is read: a file changed
// after a check cannot slip through.
func CopyOut(ctx context.Context, dst *os.File, d *Dir, f File, progress func(Event)) error {
	in, err := d.Open(f.Path)
	if err != nil {
		return err
	}
	defer in.Close()
	path := in.Name()
	if size, err := in.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("backup: %w", err)
	} else if size != f.Size {
		return fmt.Errorf("%s: %w: %d bytes, the manifest says %d", path, ErrCorrupt, size, f.Size)
	}
	if progress == nil {
		progress = func(Event) {}
	}
	done := int64(0)
	c, err := CopySparse(ctx, dst, in, f.Size, func(n int64) {
		done += n
		progress(Event{Path: f.Path, Step: StepVerify, Done: done, Size: f.Size})
	})
	if err != nil {
		return fmt.Errorf("backup: %s: %w", path, err)
	}
	if err := f.Match(c); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	progress(Event{Path: f.Path, Step: StepVerify, Done: f.Size, Size: f.Size, Finished: true, Copied: c})
	return nil
}

// Match checks what was read of a file against its manifest entry.
func (f File) Match(c Copied) error {
	switch {
	case c.Size != f.Size:
		return fmt.Errorf("%w: %d bytes, the manifest says %d", ErrCorrupt, c.Size, f.Size)
	case c.SHA256 != f.SHA256:
		return fmt.Errorf("%w: SHA-256 %s, the manifest says %s", ErrCorrupt, c.SHA256, f.SHA256)
	}
	return nil
}
