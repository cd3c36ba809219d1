// Package hostfs serves a host folder as a 9P2000.L file tree to a hostile
// guest. A fid is an O_PATH descriptor, never a path: every walk step is
// one openat2 of a single name relative to its parent's descriptor with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS and
// O_NOFOLLOW, so nothing is resolved twice and no name, "..", symlink or
// rename race leads outside the folder. A symlink is handed to the guest
// as a symlink, to resolve in its own name space. Only regular files and
// folders are ever opened: device nodes, FIFOs and sockets can be listed
// and stat'ed, not opened or created. Files the guest creates belong to
// the VMM's user; ownership changes are ignored, as QEMU's
// security_model=none does.
package hostfs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/hugelgupf/p9/fsimpl/templatefs"
	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// resolve confines every lookup to the descriptor it starts from.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openFlags are the open(2) flags a guest may ask for; the rest (O_CREAT,
// O_NOCTTY, O_PATH, O_TMPFILE, ...) are dropped.
const openFlags = unix.O_ACCMODE | unix.O_TRUNC | unix.O_APPEND | unix.O_DSYNC | unix.O_SYNC |
	unix.O_DIRECT | unix.O_NOATIME | unix.O_NONBLOCK | unix.O_DIRECTORY

// Share is a host folder served to the guest.
type Share struct {
	root  *os.File // O_PATH|O_DIRECTORY
	opts  Options
	loans loans
}

// Options are a share's settings.
type Options struct {
	// ReadOnly refuses every change with EROFS.
	ReadOnly bool
	// SetID lets the guest's chmod set the set-user-ID and set-group-ID
	// bits, and keeps them when the guest writes a file, as a local file
	// system does for root. Without it a guest cannot leave a program in
	// the folder that runs as the VMM's user (root unless confined); with
	// it the folder must be out of other host users' reach, as a
	// container's root is in containerd's own folders.
	SetID bool
}

var _ p9.Attacher = (*Share)(nil)

// Open opens the folder at dir.
func Open(dir string, opts Options) (*Share, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, dir, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC})
	if err != nil {
		return nil, fmt.Errorf("share %s: %w", dir, err)
	}
	s := &Share{root: os.NewFile(uintptr(fd), dir), opts: opts}
	// Files are reopened through /proc/self/fd: without /proc no file
	// could be opened, which is better said now.
	if _, err := os.Stat("/proc/self/fd/" + strconv.Itoa(fd)); err != nil {
		s.Close()
		return nil, fmt.Errorf("share %s: files are opened through /proc/self/fd, which is missing (is /proc mounted?): %w", dir, err)
	}
	return s, nil
}

// Close releases the folder. Files still attached keep their own
// descriptors.
func (s *Share) Close() error { return s.root.Close() }

// RootQID is the QID path of the folder itself (inode and device, as
// every QID the share gives): a restore compares it to tell the same
// folder from a copy.
func (s *Share) RootQID() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(s.root.Fd()), &st); err != nil {
		return 0, fmt.Errorf("share %s: %w", s.root.Name(), err)
	}
	return qidOf(&st).Path, nil
}

// Attach implements p9.Attacher: a new reference to the folder.
func (s *Share) Attach() (p9.File, error) {
	fd, err := unix.Openat2(int(s.root.Fd()), ".", &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolve})
	if err != nil {
		return nil, err
	}
	return s.newFile(fd)
}

// File is one node of the share.
type File struct {
	p9.DefaultWalkGetAttr
	templatefs.NoopRenamed

	share *Share
	path  *os.File // O_PATH|O_NOFOLLOW: the node itself
	mode  uint32   // S_IFMT bits, fixed for the inode
	dev   uint64   // st_dev, for the QIDs of Readdir's entries
	ino   uint64

	mu   sync.Mutex // serializes Readdir's seek and read on open
	open *os.File   // after Open or Create
	lent []loanKey  // what open was lent for (see loans)
}

var _ p9.File = (*File)(nil)

func (s *Share) newFile(fd int) (*File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &File{share: s, path: os.NewFile(uintptr(fd), "share"), mode: st.Mode & unix.S_IFMT, dev: st.Dev, ino: st.Ino}, nil
}

// toErrno hands the server an errno it sends as is: it maps Go's error
// classes first, which would turn EPERM into EACCES and ENOTEMPTY into
// EEXIST.
func toErrno(err *error) {
	if e, ok := errors.AsType[unix.Errno](*err); ok {
		*err = linux.Errno(e)
	}
}

func (f *File) fd() int { return int(f.path.Fd()) }

// procPath names the node through /proc for the calls that have no
// descriptor form (reopen, chmod, truncate, link): the magic link goes to
// this very inode, whatever happened to its name since.
func (f *File) procPath() string { return "/proc/self/fd/" + strconv.Itoa(f.fd()) }

// checkName refuses what is not one plain name: the p9 server checks it
// too, and RESOLVE_BENEATH would refuse "..", but a name is cheap to check.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > unix.NAME_MAX {
		return unix.EINVAL
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return unix.EINVAL
		}
	}
	return nil
}

func (f *File) writable() error {
	if f.share.opts.ReadOnly {
		return unix.EROFS
	}
	return nil
}

func (f *File) lookup(name string) (int, error) {
	if err := checkName(name); err != nil {
		return -1, err
	}
	return unix.Openat2(f.fd(), name, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: resolve})
}

// child opens name below f as a new File.
func (f *File) child(name string) (*File, error) {
	fd, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	return f.share.newFile(fd)
}

// Walk implements p9.File.
func (f *File) Walk(names []string) (_ []p9.QID, _ p9.File, err error) {
	defer toErrno(&err)
	if len(names) == 0 {
		// A copy of f: O_PATH descriptors carry no offset to share.
		fd, err := unix.FcntlInt(uintptr(f.fd()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, nil, err
		}
		c, err := f.share.newFile(fd)
		return nil, c, err
	}
	qids := make([]p9.QID, 0, len(names))
	cur := f
	for _, name := range names {
		next, err := cur.child(name)
		if cur != f {
			cur.Close()
		}
		if err != nil {
			return nil, nil, err
		}
		qid, _, err := next.stat()
		if err != nil {
			next.Close()
			return nil, nil, err
		}
		qids = append(qids, qid)
		cur = next
	}
	return qids, cur, nil
}

func (f *File) stat() (p9.QID, *unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(f.fd(), &st); err != nil {
		return p9.QID{}, nil, err
	}
	return qidOf(&st), &st, nil
}

// qidOf makes a QID from the inode number, folding in the device so that
// mounts below the share do not collide.
func qidOf(st *unix.Stat_t) p9.QID {
	return p9.QID{Type: p9.FileMode(st.Mode).QIDType(), Path: qidPath(st.Dev, st.Ino)}
}

func qidPath(dev, ino uint64) uint64 { return ino ^ dev<<48 }

// GetAttr implements p9.File.
func (f *File) GetAttr(req p9.AttrMask) (_ p9.QID, _ p9.AttrMask, _ p9.Attr, err error) {
	defer toErrno(&err)
	qid, st, err := f.stat()
	if err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, err
	}
	attr := p9.Attr{
		Mode:             p9.FileMode(st.Mode),
		UID:              p9.UID(st.Uid),
		GID:              p9.GID(st.Gid),
		NLink:            p9.NLink(st.Nlink),
		RDev:             p9.Dev(st.Rdev),
		Size:             uint64(st.Size),
		BlockSize:        uint64(st.Blksize),
		Blocks:           uint64(st.Blocks),
		ATimeSeconds:     uint64(st.Atim.Sec),
		ATimeNanoSeconds: uint64(st.Atim.Nsec),
		MTimeSeconds:     uint64(st.Mtim.Sec),
		MTimeNanoSeconds: uint64(st.Mtim.Nsec),
		CTimeSeconds:     uint64(st.Ctim.Sec),
		CTimeNanoSeconds: uint64(st.Ctim.Nsec),
	}
	valid := p9.AttrMask{Mode: true, NLink: true, UID: true, GID: true, RDev: true, ATime: true,
		MTime: true, CTime: true, INo: true, Size: true, Blocks: true}
	return qid, valid, attr, nil
}

// killPriv drops a regular file's set-user-ID bit, and its set-group-ID
// bit where group execute is set, before the guest may change the file's
// content (unless the share keeps them, Options.SetID): Linux does so
// for a writer without CAP_FSETID, which a root VMM has, so a guest could
// otherwise rewrite a set-user-ID program a host user left in the share
// and keep it set-user-ID. mode is the file's st_mode. Unlike Linux, it
// happens on opening for writing, not on the first write: one place for
// both of a Twrite's paths.
func (f *File) killPriv(mode uint32) error {
	if f.share.opts.SetID {
		return nil
	}
	kill := mode & unix.S_ISUID
	if mode&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
		kill |= unix.S_ISGID
	}
	if kill == 0 {
		return nil
	}
	return unix.Fchmodat(unix.AT_FDCWD, f.procPath(), mode&07777&^kill, 0)
}

// SetAttr implements p9.File. Ownership changes are accepted and ignored:
// the share's files belong to the VMM's user.
func (f *File) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) (err error) {
	defer toErrno(&err)
	if valid.Permissions || valid.Size || valid.ATime || valid.MTime {
		if err := f.writable(); err != nil {
			return err
		}
	}
	if valid.Permissions {
		perm := uint32(attr.Permissions) & 07777
		if !f.share.opts.SetID {
			// The share's files belong to the VMM's user, root unless
			// confined: a guest must not make set-user-ID or
			// set-group-ID programs on the host. A folder keeps
			// set-group-ID, which only passes its group to new entries.
			perm &^= unix.S_ISUID
			if f.mode != unix.S_IFDIR {
				perm &^= unix.S_ISGID
			}
		}
		// Linux refuses a symlink's mode itself, EOPNOTSUPP.
		if err := unix.Fchmodat(unix.AT_FDCWD, f.procPath(), perm, 0); err != nil {
			return err
		}
	}
	if valid.Size {
		if f.mode != unix.S_IFREG {
			return unix.EINVAL
		}
		_, st, err := f.stat()
		if err != nil {
			return err
		}
		if err := f.killPriv(st.Mode); err != nil {
			return err
		}
		if err := unix.Truncate(f.procPath(), int64(attr.Size)); err != nil {
			return err
		}
	}
	if valid.ATime || valid.MTime {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if valid.ATime {
			ts[0] = timespec(valid.ATimeNotSystemTime, attr.ATimeSeconds, attr.ATimeNanoSeconds)
		}
		if valid.MTime {
			ts[1] = timespec(valid.MTimeNotSystemTime, attr.MTimeSeconds, attr.MTimeNanoSeconds)
		}
		if err := unix.UtimesNanoAt(f.fd(), "", ts, unix.AT_EMPTY_PATH); err != nil {
			return err
		}
	}
	return nil
}

func timespec(given bool, sec, nsec uint64) unix.Timespec {
	if !given {
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// Close implements p9.File.
func (f *File) Close() (err error) {
	defer toErrno(&err)
	for _, key := range f.lent {
		f.share.loans.giveBack(key)
	}
	if f.open != nil {
		f.open.Close()
	}
	return f.path.Close()
}

// Open implements p9.File: only regular files and folders.
func (f *File) Open(mode p9.OpenFlags) (_ p9.QID, _ uint32, err error) {
	defer toErrno(&err)
	qid, st, err := f.stat()
	if err != nil {
		return p9.QID{}, 0, err
	}
	flags := int(mode) & openFlags
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
		if err := f.writable(); err != nil {
			return p9.QID{}, 0, err
		}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && (flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0) {
		if err := f.killPriv(st.Mode); err != nil {
			return p9.QID{}, 0, err
		}
	}
	var fd int
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		fd, err = unix.Openat2(f.fd(), ".", &unix.OpenHow{Flags: uint64(flags | unix.O_DIRECTORY | unix.O_CLOEXEC), Resolve: resolve})
	case unix.S_IFREG:
		fd, err = unix.Openat2(unix.AT_FDCWD, f.procPath(), &unix.OpenHow{Flags: uint64(flags&^unix.O_DIRECTORY | unix.O_CLOEXEC | unix.O_NOCTTY)})
	default:
		return p9.QID{}, 0, unix.EPERM
	}
	if err != nil {
		return p9.QID{}, 0, err
	}
	f.setOpen(os.NewFile(uintptr(fd), "share"), flags)
	return qid, 0, nil
}

// setOpen keeps the File's open descriptor, opened with flags, and lends
// it for the device's reads and writes, as far as it can serve them (see
// loans).
func (f *File) setOpen(open *os.File, flags int) {
	f.open = open
	if f.mode != unix.S_IFREG || flags&unix.O_DIRECT != 0 {
		return
	}
	qid := qidPath(f.dev, f.ino)
	var keys []loanKey
	if flags&unix.O_ACCMODE != unix.O_WRONLY {
		keys = append(keys, loanKey{qid: qid})
	}
	if flags&unix.O_ACCMODE != unix.O_RDONLY && !f.share.opts.ReadOnly {
		keys = append(keys, loanKey{qid: qid, write: true, flags: flags & writeFlags})
	}
	for _, key := range keys {
		if f.share.loans.lend(key, int(open.Fd()), f.dev, f.ino) {
			f.lent = append(f.lent, key)
		}
	}
}

// ReadAt implements p9.File.
func (f *File) ReadAt(p []byte, off int64) (_ int, err error) {
	defer toErrno(&err)
	if f.open == nil {
		return 0, unix.EBADF
	}
	n, err := unix.Pread(int(f.open.Fd()), p, off)
	return max(n, 0), err
}

// WriteAt implements p9.File.
func (f *File) WriteAt(p []byte, off int64) (_ int, err error) {
	defer toErrno(&err)
	if err := f.writable(); err != nil {
		return 0, err
	}
	if f.open == nil {
		return 0, unix.EBADF
	}
	n, err := unix.Pwrite(int(f.open.Fd()), p, off)
	return max(n, 0), err
}

// FSync implements p9.File.
func (f *File) FSync() (err error) {
	defer toErrno(&err)
	if f.open == nil {
		return unix.EBADF
	}
	return unix.Fsync(int(f.open.Fd()))
}

// StatFS implements p9.File.
func (f *File) StatFS() (_ p9.FSStat, err error) {
	defer toErrno(&err)
	var s unix.Statfs_t
	if err := unix.Fstatfs(f.fd(), &s); err != nil {
		return p9.FSStat{}, err
	}
	return p9.FSStat{
		Type: uint32(s.Type), BlockSize: uint32(s.Bsize), Blocks: s.Blocks, BlocksFree: s.Bfree,
		BlocksAvailable: s.Bavail, Files: s.Files, FilesFree: s.Ffree, NameLength: uint32(s.Namelen),
	}, nil
}

// Lock implements p9.File. Locks are the guest's own business, as with
// QEMU's local back end: granted, not taken on the host.
func (f *File) Lock(int, p9.LockType, p9.LockFlags, uint64, uint64, string) (_ p9.LockStatus, err error) {
	defer toErrno(&err)
	return p9.LockStatusOK, nil
}

// Create implements p9.File: a new regular file, opened.
func (f *File) Create(name string, mode p9.OpenFlags, perm p9.FileMode, _ p9.UID, _ p9.GID) (_ p9.File, _ p9.QID, _ uint32, err error) {
	defer toErrno(&err)
	if err := f.writable(); err != nil {
		return nil, p9.QID{}, 0, err
	}
	if err := checkName(name); err != nil {
		return nil, p9.QID{}, 0, err
	}
	flags := int(mode)&openFlags&^unix.O_DIRECTORY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat2(f.fd(), name, &unix.OpenHow{Flags: uint64(flags), Mode: uint64(perm.Permissions() & 0777), Resolve: resolve})
	if err != nil {
		return nil, p9.QID{}, 0, err
	}
	opened := os.NewFile(uintptr(fd), "share")
	c, err := f.child(name)
	if err != nil {
		opened.Close()
		return nil, p9.QID{}, 0, err
	}
	c.setOpen(opened, flags)
	qid, _, err := c.stat()
	if err != nil {
		c.Close()
		return nil, p9.QID{}, 0, err
	}
	return c, qid, 0, nil
}

// made stats the node just made as name.
func (f *File) made(name string) (p9.QID, error) {
	c, err := f.child(name)
	if err != nil {
		return p9.QID{}, err
	}
	defer c.Close()
	qid, _, err := c.stat()
	return qid, err
}

// Mkdir implements p9.File.
func (f *File) Mkdir(name string, perm p9.FileMode, _ p9.UID, _ p9.GID) (_ p9.QID, err error) {
	defer toErrno(&err)
	if err := f.writable(); err != nil {
		return p9.QID{}, err
	}
	if err := checkName(name); err != nil {
		return p9.QID{}, err
	}
	if err := unix.Mkdirat(f.fd(), name, uint32(perm.Permissions()&01777)); err != nil {
		return p9.QID{}, err
	}
	return f.made(name)
}

// Symlink implements p9.File. The target is only text: the server never
// follows it.
func (f *File) Symlink(target, name string, _ p9.UID, _ p9.GID) (_ p9.QID, err error) {
	defer toErrno(&err)
	if err := f.writable(); err != nil {
		return p9.QID{}, err
	}
	if err := checkName(name); err != nil {
		return p9.QID{}, err
	}
	if err := unix.Symlinkat(target, f.fd(), name); err != nil {
		return p9.QID{}, err
	}
	return f.made(name)
}

// Link implements p9.File.
func (f *File) Link(target p9.File, name string) (err error) {
	defer toErrno(&err)
	if err := f.writable(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	t, ok := target.(*File)
	if !ok || t.share != f.share {
		return unix.EXDEV
	}
	if t.mode == unix.S_IFDIR {
		return unix.EPERM
	}
	return unix.Linkat(unix.AT_FDCWD, t.procPath(), f.fd(), name, unix.AT_SYMLINK_FOLLOW)
}

// Mknod implements p9.File: no device nodes, FIFOs or sockets are made
// on the host.
func (f *File) Mknod(string, p9.FileMode, uint32, uint32, p9.UID, p9.GID) (_ p9.QID, err error) {
	defer toErrno(&err)
	if err := f.writable(); err != nil {
		return p9.QID{}, err
	}
	return p9.QID{}, unix.EPERM
}

// Rename implements p9.File; the server uses RenameAt.
func (f *File) Rename(p9.File, string) error { return unix.ENOSYS }

// RenameAt implements p9.File.
func (f *File) RenameAt(oldName string, newDir p9.File, newName string) (err error) {
	defer toErrno(&err)
	if err := f.writable(); err != nil {
		return err
	}
	d, ok := newDir.(*File)
	if !ok || d.share != f.share {
		return unix.EXDEV
	}
	if err := errors.Join(checkName(oldName), checkName(newName)); err != nil {
		return unix.EINVAL
	}
	return unix.Renameat(f.fd(), oldName, d.fd(), newName)
}

// UnlinkAt implements p9.File.
func (f *File) UnlinkAt(name string, flags uint32) (err error) {
	defer toErrno(&err)
	if err := f.writable(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	return unix.Unlinkat(f.fd(), name, int(flags)&unix.AT_REMOVEDIR)
}

// Readlink implements p9.File.
func (f *File) Readlink() (_ string, err error) {
	defer toErrno(&err)
	if f.mode != unix.S_IFLNK {
		return "", unix.EINVAL
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(f.fd(), "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Extended attributes are not served (the device answers their
// requests itself): EOPNOTSUPP, what a file system without them answers.

// GetXattr implements p9.File.
func (f *File) GetXattr(string) ([]byte, error) { return nil, linux.EOPNOTSUPP }

// SetXattr implements p9.File.
func (f *File) SetXattr(string, []byte, p9.XattrFlags) error { return linux.EOPNOTSUPP }

// ListXattrs implements p9.File: none.
func (f *File) ListXattrs() ([]string, error) { return nil, nil }

// RemoveXattr implements p9.File.
func (f *File) RemoveXattr(string) error { return linux.EOPNOTSUPP }
