package backup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Errors a restore refuses a path with, wrapped with the path.
var (
	ErrSymlink = errors.New("a symlink on the path: a restore never follows one")
	ErrUnsafe  = errors.New("refused")
)

// OpenAt opens name without following a symlink anywhere on its path:
// beneath the folder dir, or, when dir is nil, name as it is (absolute or
// relative to the working directory). A symlink is refused with
// ErrSymlink, a path leaving dir with an error.
func OpenAt(dir *os.File, name string, flags int, mode uint32) (*os.File, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	if flags&unix.O_CREAT != 0 {
		how.Mode = uint64(mode)
	}
	dirfd, shown := unix.AT_FDCWD, name
	if dir != nil {
		how.Resolve |= unix.RESOLVE_BENEATH
		dirfd, shown = int(dir.Fd()), filepath.Join(dir.Name(), name)
	}
	for {
		fd, err := unix.Openat2(dirfd, name, &how)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), shown), nil
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			continue // a rename raced with the lookup
		case errors.Is(err, unix.ELOOP):
			return nil, fmt.Errorf("%s: %w", shown, ErrSymlink)
		case errors.Is(err, unix.EXDEV):
			return nil, fmt.Errorf("%s: leaves %s", shown, dir.Name())
		}
		return nil, &fs.PathError{Op: "open", Path: shown, Err: err}
	}
}

// checkStrict refuses a file or folder that someone other than root and
// this user could have written, as ssh's StrictModes does.
func checkStrict(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if perm := st.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%s: %w: writable by its group or others (mode %o)", f.Name(), ErrUnsafe, perm)
	}
	if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 0 && int(uid) != os.Geteuid() {
		return fmt.Errorf("%s: %w: owned by uid %d, neither root nor you", f.Name(), ErrUnsafe, uid)
	}
	return nil
}

// Dir is a backup folder opened for reading. Its files and folders are
// opened beneath it, never through a symlink, and refused when anyone
// but root or this user could have written them: a restore run by root
// must not take its orders from another user.
type Dir struct {
	f *os.File
}

// OpenDir opens the backup folder path.
func OpenDir(path string) (*Dir, error) {
	f, err := OpenAt(nil, filepath.Clean(path), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := checkStrict(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("backup: %w", err)
	}
	return &Dir{f: f}, nil
}

// Path is the folder's path.
func (d *Dir) Path() string { return d.f.Name() }

// Close closes the folder.
func (d *Dir) Close() error { return d.f.Close() }

// Open opens the file rel of the backup for reading, checking it and the
// folders it is in.
func (d *Dir) Open(rel string) (*os.File, error) {
	parts := strings.Split(filepath.Clean(rel), "/")
	for i := 1; i < len(parts); i++ {
		sub, err := OpenAt(d.f, filepath.Join(parts[:i]...), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return nil, d.openErr(rel, err)
		}
		err = checkStrict(sub)
		sub.Close()
		if err != nil {
			return nil, err
		}
	}
	// O_NONBLOCK: opening a FIFO must not wait for a writer; a regular
	// file reads the same.
	f, err := OpenAt(d.f, rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, d.openErr(rel, err)
	}
	if err := checkStrict(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openErr names the file, not the folder above it that failed.
func (d *Dir) openErr(rel string, err error) error {
	path := filepath.Join(d.Path(), rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w", path, ErrMissing)
	case errors.Is(err, ErrSymlink):
		return fmt.Errorf("%s: %w", path, ErrSymlink)
	}
	return fmt.Errorf("backup: %w", err)
}
