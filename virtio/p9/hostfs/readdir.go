package hostfs

import (
	"encoding/binary"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// Bounds of one getdents64 buffer: room for the longest name, and no more
// than a guest could ask for in one Treaddir.
const (
	minDirentBuf = 512
	maxDirentBuf = 64 << 10
)

// struct linux_dirent64 offsets.
const (
	direntIno    = 0
	direntOff    = 8
	direntReclen = 16
	direntType   = 18
	direntName   = 19
)

// Readdir implements p9.File: the entries from offset, a cookie the host
// file system gave as d_off (0 for the start), for about count bytes.
func (f *File) Readdir(offset uint64, count uint32) (_ p9.Dirents, err error) {
	defer toErrno(&err)
	if f.open == nil || f.mode != unix.S_IFDIR {
		return nil, unix.EBADF
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fd := int(f.open.Fd())
	if _, err := unix.Seek(fd, int64(offset), 0); err != nil {
		return nil, err
	}
	buf := make([]byte, min(max(int(count), minDirentBuf), maxDirentBuf))
	n, err := unix.Getdents(fd, buf)
	if err != nil {
		return nil, err
	}
	return parseDirents(buf[:n], f.dev), nil
}

// parseDirents decodes what getdents64 wrote; it stops at a record the
// kernel would never write rather than trust it. dev is the folder's
// device, folded into QIDs as qidOf does.
func parseDirents(b []byte, dev uint64) p9.Dirents {
	var out p9.Dirents
	for len(b) >= direntName {
		reclen := int(binary.LittleEndian.Uint16(b[direntReclen:]))
		if reclen < direntName || reclen > len(b) {
			break
		}
		name := b[direntName:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		typ := p9.QIDType(0)
		switch b[direntType] {
		case unix.DT_DIR:
			typ = p9.TypeDir
		case unix.DT_LNK:
			typ = p9.TypeSymlink
		}
		out = append(out, p9.Dirent{
			QID:    p9.QID{Type: typ, Path: binary.LittleEndian.Uint64(b[direntIno:]) ^ dev<<48},
			Offset: binary.LittleEndian.Uint64(b[direntOff:]),
			// 9P2000.L carries the d_type itself (DT_REG, DT_DIR, ...).
			Type: p9.QIDType(b[direntType]),
			Name: string(name),
		})
		b = b[reclen:]
	}
	return out
}
