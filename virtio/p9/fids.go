package p9

import (
	"encoding/binary"
	"strings"
)

// maxPathLen bounds the path a fid's record keeps, as PATH_MAX bounds a
// host path: a fid deeper than that is lost to a snapshot (its record
// says so), which bounds the table's memory per fid the guest holds.
const maxPathLen = 4096

// fidRecord is what the device knows of one fid the server holds: where
// it is in the share and how it was opened. The server keeps its fids to
// itself; the device follows them from the requests it passes on and
// the answers it returns, which is all a snapshot needs.
type fidRecord struct {
	path  string // relative to the share's root, names joined by "/"; "" is the root
	lost  bool   // its file was removed or replaced, or its path is too long: not saved (path "")
	open  bool
	flags uint32 // the guest's Tlopen or Tlcreate flags
	dir   bool   // opened as a folder (Rlopen's QID)
	qid   uint64 // the opened file's QID path (inode and device)
}

// fidTable mirrors the server's fids. Its caller serializes access; the
// server sends answers one at a time, in the order it acted.
type fidTable map[uint32]*fidRecord

// join appends names to the record's path, marking the result lost when
// the path grows past maxPathLen.
func join(r *fidRecord, names ...string) *fidRecord {
	if r == nil {
		// The server knew the fid but the table did not: never
		// happens while the two agree; a fid of unknown path is lost.
		return &fidRecord{lost: true}
	}
	if r.lost {
		return &fidRecord{lost: true}
	}
	p := r.path
	for _, n := range names {
		if p == "" {
			p = n
		} else {
			p += "/" + n
		}
	}
	if len(p) > maxPathLen {
		// Kept no longer: walks from a lost fid must not grow it.
		return &fidRecord{lost: true}
	}
	return &fidRecord{path: p}
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// answered updates the table after the server answered req with resp:
// resp holds the answer's header and its first bytes (QIDs), as much as
// the session keeps.
func (t fidTable) answered(req, resp []byte) {
	if len(req) < HeaderSize || len(resp) < HeaderSize {
		return
	}
	le := binary.LittleEndian
	body := req[HeaderSize:]
	ok := resp[4] == req[4]+1 // R-messages are their T-message's type plus one
	u32 := func(off int) uint32 { return le.Uint32(body[off:]) }
	// str reads the 9P string at off; ParseRequest checked every field.
	str := func(off int) (string, int) {
		n := int(le.Uint16(body[off:]))
		return string(body[off+2 : off+2+n]), off + 2 + n
	}
	switch req[4] {
	case msgTattach:
		if ok {
			_, off := str(8)
			aname, _ := str(off)
			var names []string
			for n := range strings.SplitSeq(strings.Trim(aname, "/"), "/") {
				if n != "" {
					names = append(names, n)
				}
			}
			t[u32(0)] = join(&fidRecord{}, names...)
		}
	case msgTwalk:
		if ok {
			count := int(le.Uint16(body[8:]))
			names := make([]string, 0, count)
			off := 10
			for range count {
				var n string
				n, off = str(off)
				names = append(names, n)
			}
			t[u32(4)] = join(t[u32(0)], names...)
		}
	case msgTlopen:
		if r := t[u32(0)]; ok && r != nil {
			r.open, r.flags = true, u32(4)
			r.dir, r.qid = openedQID(resp)
		}
	case msgTlcreate:
		if ok {
			name, off := str(4)
			r := join(t[u32(0)], name)
			r.open, r.flags = true, u32(off)
			r.dir, r.qid = openedQID(resp)
			t[u32(0)] = r
		}
	case msgTclunk:
		delete(t, u32(0)) // the server drops the fid even when closing fails
	case msgTremove:
		// Removed or not, the fid is clunked.
		if r := t[u32(0)]; ok && r != nil {
			t.removed(r)
		}
		delete(t, u32(0))
	case msgTunlinkat:
		if r := t[u32(0)]; ok && r != nil {
			name, _ := str(4)
			t.removed(join(r, name))
		}
	case msgTrenameat:
		if ok {
			oldName, off := str(4)
			newName, _ := str(off + 4)
			t.renamed(join(t[u32(0)], oldName), join(t[u32(off)], newName))
		}
	case msgTrename:
		if ok {
			name, _ := str(8)
			if r := t[u32(0)]; r != nil {
				t.renamed(r, join(t[u32(4)], name))
			}
		}
	}
}

// openedQID reads the QID of an Rlopen or Rlcreate: whether it is a
// folder, and its path. The session keeps enough of the answer for it.
func openedQID(resp []byte) (dir bool, path uint64) {
	if len(resp) < HeaderSize+qidSize {
		return false, 0
	}
	return resp[HeaderSize]&qidTypeDir != 0, binary.LittleEndian.Uint64(resp[HeaderSize+5:])
}

// removed marks every fid at gone's path or below it lost: what they
// named is gone, and a file created there later is another. A lost gone
// has no path to compare ("" is the root's).
func (t fidTable) removed(gone *fidRecord) {
	if gone.lost {
		return
	}
	for _, r := range t {
		if within(r.path, gone.path) {
			r.lost = true
		}
	}
}

// renamed moves every fid at from or below it to the same place under to;
// those that were at to or below it name what the rename replaced.
func (t fidTable) renamed(from, to *fidRecord) {
	if from.lost || to.lost {
		// A path the table cannot follow: what it moved is lost, and so
		// is what it may have replaced.
		t.removed(from)
		t.removed(to)
		return
	}
	// from may be a fid's own record (Trename), which the loop moves:
	// compare with the paths as they were.
	fromPath, toPath := from.path, to.path
	for _, r := range t {
		switch {
		case r.lost: // no path to move
		case within(r.path, fromPath):
			r.path = toPath + r.path[len(fromPath):]
			if len(r.path) > maxPathLen {
				r.path, r.lost = "", true
			}
		case within(r.path, toPath):
			r.lost = true
		}
	}
}
