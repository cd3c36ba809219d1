package p9

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/devices"
	"github.com/gvmm-dev/gvmm/virtio/p9/p9test"
)

const stateMsize = 64 << 10

// Fids of the guest session saveSession builds.
const (
	fidRoot    = 1
	fidFile    = 2 // a.txt, open read-write
	fidDir     = 3 // sub, open as a folder
	fidWalked  = 4 // sub/b.txt, walked only
	fidCreated = 5 // sub/new, made by Tlcreate
)

func ok(t *testing.T, r *rig, msg []byte) []byte {
	t.Helper()
	resp := r.roundTrip(msg)
	require.Zero(t, lerrno(resp), "request of type %d", msg[4])
	return resp
}

func rread(t *testing.T, r *rig, fid uint32) ([]byte, uint32) {
	t.Helper()
	resp := r.roundTrip(p9test.Msg(msgTread, 40, fid, uint64(0), uint32(100)))
	if e := lerrno(resp); e != 0 {
		return nil, e
	}
	n := binary.LittleEndian.Uint32(resp[HeaderSize:])
	return resp[HeaderSize+4 : HeaderSize+4+n], 0
}

func snapshotOf(t *testing.T, r *rig) State {
	t.Helper()
	r.dev.Quiesce()
	defer r.dev.Release()
	st, err := r.dev.State()
	require.NoError(t, err)
	return st
}

// saveSession serves dir, opens the fids above and returns their state.
func saveSession(t *testing.T, dir string) State {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.txt"), []byte("hello"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sub", "b.txt"), []byte("bee"), 0o644))
	r := newRig(t, dir, false, stateMsize, 16<<20)
	ok(t, r, p9test.Msg(msgTversion, noTag, uint32(stateMsize), dotL))
	ok(t, r, p9test.Msg(msgTattach, 1, uint32(fidRoot), uint32(noFid), "", "", uint32(0)))
	ok(t, r, p9test.Msg(msgTwalk, 2, uint32(fidRoot), uint32(fidFile), uint16(1), "a.txt"))
	ok(t, r, p9test.Msg(msgTlopen, 3, uint32(fidFile), uint32(unix.O_RDWR|unix.O_TRUNC)))
	ok(t, r, p9test.Msg(msgTwrite, 4, uint32(fidFile), uint64(0), uint32(5), []byte("HELLO")))
	ok(t, r, p9test.Msg(msgTwalk, 5, uint32(fidRoot), uint32(fidDir), uint16(1), "sub"))
	ok(t, r, p9test.Msg(msgTlopen, 6, uint32(fidDir), uint32(unix.O_RDONLY|unix.O_DIRECTORY)))
	ok(t, r, p9test.Msg(msgTwalk, 7, uint32(fidRoot), uint32(fidWalked), uint16(2), "sub", "b.txt"))
	ok(t, r, p9test.Msg(msgTwalk, 8, uint32(fidRoot), uint32(fidCreated), uint16(1), "sub"))
	ok(t, r, p9test.Msg(msgTlcreate, 9, uint32(fidCreated), "new", uint32(unix.O_RDWR), uint32(0o644), uint32(0)))
	// A fid clunked, one walked from the root and clunked: neither saved.
	ok(t, r, p9test.Msg(msgTwalk, 10, uint32(fidRoot), uint32(9), uint16(0)))
	ok(t, r, p9test.Msg(msgTclunk, 11, uint32(9)))
	return snapshotOf(t, r)
}

func TestStateSaved(t *testing.T) {
	dir := t.TempDir()
	st := saveSession(t, dir)
	root := qidPath(t, dir)
	assert.Equal(t, "t", st.Tag)
	assert.Equal(t, uint32(stateMsize), st.MessageSize)
	assert.Equal(t, root, st.RootQID)
	assert.Equal(t, []FidState{
		{Fid: fidRoot},
		{Fid: fidFile, Path: "a.txt", Open: true, Flags: unix.O_RDWR | unix.O_TRUNC, QID: qidPath(t, filepath.Join(dir, "a.txt"))},
		{Fid: fidDir, Path: "sub", Open: true, Flags: unix.O_DIRECTORY, Dir: true, QID: qidPath(t, filepath.Join(dir, "sub"))},
		{Fid: fidWalked, Path: "sub/b.txt"},
		{Fid: fidCreated, Path: "sub/new", Open: true, Flags: unix.O_RDWR, QID: qidPath(t, filepath.Join(dir, "sub", "new"))},
	}, st.Fids)
}

func qidPath(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(p, &st))
	return st.Ino ^ st.Dev<<48
}

// TestStateRestored restores saveSession's state in a new device after
// the host changed the folder, or onto a copy of it: what is still
// there works as before (reads, writes, the listing, no O_TRUNC again),
// what is gone or replaced answers EBADF, and the restore goes on.
func TestStateRestored(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, dir string) string // returns the folder to restore onto
		gone   []uint32                              // fids that answer EBADF
	}{
		{"unchanged", func(*testing.T, string) string { return "" }, nil},
		{"file removed on the host", func(t *testing.T, dir string) string {
			require.NoError(t, os.Remove(filepath.Join(dir, "a.txt")))
			return ""
		}, []uint32{fidFile}},
		{"file renamed on the host", func(t *testing.T, dir string) string {
			require.NoError(t, os.Rename(filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt")))
			return ""
		}, []uint32{fidFile}},
		{"file replaced on the host", func(t *testing.T, dir string) string {
			tmp := filepath.Join(dir, "a.tmp")
			require.NoError(t, os.WriteFile(tmp, []byte("other"), 0o644))
			require.NoError(t, os.Rename(tmp, filepath.Join(dir, "a.txt")))
			return ""
		}, []uint32{fidFile}},
		{"folder replaced by a symlink out of the share", func(t *testing.T, dir string) string {
			out := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(out, "b.txt"), []byte("outside"), 0o644))
			require.NoError(t, os.WriteFile(filepath.Join(out, "new"), []byte("outside"), 0o644))
			require.NoError(t, os.Rename(filepath.Join(dir, "sub"), filepath.Join(dir, "sub.old")))
			require.NoError(t, os.Symlink(out, filepath.Join(dir, "sub")))
			return ""
		}, []uint32{fidDir, fidWalked, fidCreated}},
		{"a copy of the folder", func(t *testing.T, dir string) string {
			cp := filepath.Join(t.TempDir(), "copy")
			require.NoError(t, os.CopyFS(cp, os.DirFS(dir)))
			return cp
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			st := saveSession(t, dir)
			onto := tt.change(t, dir)
			if onto == "" {
				onto = dir
			}
			r := newRigWith(t, onto, false, stateMsize, 16<<20, func(d *Device) { require.NoError(t, d.Restore(st)) })
			gone := map[uint32]bool{}
			for _, f := range tt.gone {
				gone[f] = true
				_, e := rread(t, r, f)
				assert.Equal(t, unix.ErrnoName(unix.EBADF), unix.ErrnoName(unix.Errno(e)), "fid %d", f)
			}
			if !gone[fidFile] {
				data, e := rread(t, r, fidFile)
				require.Zero(t, e)
				assert.Equal(t, "HELLO", string(data), "the reopened file was not truncated again")
				ok(t, r, p9test.Msg(msgTwrite, 41, uint32(fidFile), uint64(5), uint32(6), []byte(" again")))
				b, err := os.ReadFile(filepath.Join(onto, "a.txt"))
				require.NoError(t, err)
				assert.Equal(t, "HELLO again", string(b))
			}
			if !gone[fidDir] {
				resp := ok(t, r, p9test.Msg(msgTreaddir, 42, uint32(fidDir), uint64(0), uint32(4096)))
				assert.Contains(t, string(resp), "b.txt")
				assert.Contains(t, string(resp), "new")
			}
			if !gone[fidWalked] {
				ok(t, r, p9test.Msg(msgTlopen, 43, uint32(fidWalked), uint32(unix.O_RDONLY)))
				data, e := rread(t, r, fidWalked)
				require.Zero(t, e)
				assert.Equal(t, "bee", string(data))
			}
			if !gone[fidCreated] {
				ok(t, r, p9test.Msg(msgTwrite, 44, uint32(fidCreated), uint64(0), uint32(3), []byte("new")))
				b, err := os.ReadFile(filepath.Join(onto, "sub", "new"))
				require.NoError(t, err)
				assert.Equal(t, "new", string(b))
			}
			// The root fid came back: a new walk from it works.
			ok(t, r, p9test.Msg(msgTwalk, 45, uint32(fidRoot), uint32(20), uint16(1), "sub"))
			// A restored state is saved again as it was, less what is gone.
			again := snapshotOf(t, r)
			assert.Len(t, again.Fids, len(st.Fids)+1-len(tt.gone))
		})
	}
}

// TestStateFollowsTheGuest checks that the fids' paths follow the
// guest's renames, and that a file the guest removed, or renamed
// another over, is left out rather than reopened at its old path.
func TestStateFollowsTheGuest(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"d/f", "d/g", "h", "k"} {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, n)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644))
	}
	r := newRig(t, dir, false, stateMsize, 16<<20)
	ok(t, r, p9test.Msg(msgTversion, noTag, uint32(stateMsize), dotL))
	ok(t, r, p9test.Msg(msgTattach, 1, uint32(1), uint32(noFid), "", "", uint32(0)))
	ok(t, r, p9test.Msg(msgTwalk, 2, uint32(1), uint32(2), uint16(2), "d", "f"))
	ok(t, r, p9test.Msg(msgTlopen, 3, uint32(2), uint32(unix.O_RDONLY)))
	ok(t, r, p9test.Msg(msgTwalk, 4, uint32(1), uint32(3), uint16(1), "d"))
	ok(t, r, p9test.Msg(msgTwalk, 5, uint32(1), uint32(4), uint16(1), "h"))
	ok(t, r, p9test.Msg(msgTlopen, 6, uint32(4), uint32(unix.O_RDONLY)))
	ok(t, r, p9test.Msg(msgTwalk, 7, uint32(1), uint32(5), uint16(1), "k"))
	ok(t, r, p9test.Msg(msgTwalk, 8, uint32(1), uint32(6), uint16(2), "d", "g"))
	// d -> e moves fids 2 and 3; h is removed; e/g is renamed over k.
	ok(t, r, p9test.Msg(msgTrenameat, 9, uint32(1), "d", uint32(1), "e"))
	ok(t, r, p9test.Msg(msgTunlinkat, 10, uint32(1), "h", uint32(0)))
	ok(t, r, p9test.Msg(msgTrename, 11, uint32(6), uint32(1), "k"))
	st := snapshotOf(t, r)
	paths := map[uint32]string{}
	for _, f := range st.Fids {
		paths[f.Fid] = f.Path
	}
	assert.Equal(t, map[uint32]string{1: "", 2: "e/f", 3: "e", 6: "k"}, paths)
}

func TestFidTableBounds(t *testing.T) {
	tbl := fidTable{1: {}}
	long := strings.Repeat("n", 255)
	walk := func(from, to uint32) []byte {
		fields := []any{from, to, uint16(maxWalkNames)}
		for range maxWalkNames {
			fields = append(fields, long)
		}
		return p9test.Msg(msgTwalk, 1, fields...)
	}
	rwalk := p9test.Msg(msgTwalk+1, 1)
	tbl.answered(walk(1, 2), rwalk)
	require.NotNil(t, tbl[2])
	assert.False(t, tbl[2].lost, "16 names of 255 bytes fit PATH_MAX")
	tbl.answered(walk(2, 3), rwalk)
	assert.True(t, tbl[3].lost, "a path past PATH_MAX is lost")
	tbl.answered(walk(3, 3), rwalk)
	assert.True(t, tbl[3].lost, "a walk from a lost fid is lost")
	assert.Empty(t, tbl[3].path, "and keeps no path that could grow")
	tbl.answered(p9test.Msg(msgTwalk, 1, uint32(9), uint32(4), uint16(0)), rwalk)
	assert.True(t, tbl[4].lost, "a walk from a fid the table does not know is lost")
	tbl.answered(p9test.Msg(msgTclunk, 1, uint32(4)), p9test.Msg(msgRlerror, 1, uint32(unix.EIO)))
	assert.NotContains(t, tbl, uint32(4), "a clunk drops the fid even when it fails")
	tbl.answered(p9test.Msg(msgTlopen, 1, uint32(2), uint32(0)), p9test.Msg(msgRlerror, 1, uint32(unix.EIO)))
	assert.False(t, tbl[2].open, "a failed open opens nothing")
}

// TestLostFidKeepsTheRoot: what a fid of unknown path (lost) removes or
// renames cannot be told, and marks no other fid lost, least of all the
// root's, whose path is empty as a lost fid's is.
func TestLostFidKeepsTheRoot(t *testing.T) {
	for name, req := range map[string][]byte{
		"remove":   p9test.Msg(msgTremove, 1, uint32(3)),
		"unlinkat": p9test.Msg(msgTunlinkat, 1, uint32(3), "x", uint32(0)),
		"renameat": p9test.Msg(msgTrenameat, 1, uint32(3), "x", uint32(2), "y"),
	} {
		t.Run(name, func(t *testing.T) {
			tbl := fidTable{1: {}, 2: {path: "a"}, 3: {lost: true}}
			tbl.answered(req, p9test.Msg(req[4]+1, 1))
			assert.False(t, tbl[1].lost, "the root's fid")
		})
	}
}

// TestRestoreRefuses loads hostile states: each is refused whole, and the
// device starts a fresh session as if nothing was restored.
func TestRestoreRefuses(t *testing.T) {
	good := func() State {
		return State{Tag: "t", MessageSize: stateMsize, Fids: []FidState{{Fid: 1}, {Fid: 2, Path: "a/b", Open: true}}}
	}
	many := good()
	for i := range MaxFids + 1 {
		many.Fids = append(many.Fids, FidState{Fid: uint32(10 + i)})
	}
	tests := map[string]func(*State){
		"other tag":          func(s *State) { s.Tag = "u" },
		"fids without msize": func(s *State) { s.MessageSize = 0 },
		"msize too large":    func(s *State) { s.MessageSize = MaxMessageSize + 1 },
		"msize too small":    func(s *State) { s.MessageSize = rreadHeader },
		"too many fids":      func(s *State) { *s = many },
		"fid twice":          func(s *State) { s.Fids[1].Fid = 1 },
		"NOFID":              func(s *State) { s.Fids[0].Fid = noFid },
		"dot dot":            func(s *State) { s.Fids[1].Path = "a/../../etc" },
		"absolute":           func(s *State) { s.Fids[1].Path = "/etc/passwd" },
		"empty name":         func(s *State) { s.Fids[1].Path = "a//b" },
		"trailing slash":     func(s *State) { s.Fids[1].Path = "a/" },
		"dot":                func(s *State) { s.Fids[1].Path = "./a" },
		"NUL":                func(s *State) { s.Fids[1].Path = "a\x00b" },
		"name past NAME_MAX": func(s *State) { s.Fids[1].Path = strings.Repeat("x", 256) },
		"path past PATH_MAX": func(s *State) { s.Fids[1].Path = strings.Repeat("x/", 2049) + "x" },
	}
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			d, err := New(t.TempDir(), Options{Tag: "t"})
			require.NoError(t, err)
			defer d.Close()
			s := good()
			edit(&s)
			assert.ErrorIs(t, d.Restore(s), devices.ErrBadState)
			assert.Nil(t, d.restored)
		})
	}
}

// TestStateWithoutSession saves a share whose driver never sent
// Tversion: nothing to bring back, and a restore of it is accepted.
func TestStateWithoutSession(t *testing.T) {
	r := newRig(t, t.TempDir(), false, stateMsize, 1<<20)
	r.roundTrip(p9test.Msg(msgTattach, 1, uint32(1), uint32(noFid), "", "", uint32(0)))
	st := snapshotOf(t, r)
	assert.Zero(t, st.MessageSize)
	assert.Empty(t, st.Fids)
	newRigWith(t, t.TempDir(), false, stateMsize, 1<<20, func(d *Device) { require.NoError(t, d.Restore(State{Tag: "t"})) })
}

// TestFidsBounded fills a session's fids to the bound: a walk or attach
// to a new fid is refused with ENFILE, one that replaces a fid is not.
func TestFidsBounded(t *testing.T) {
	r := newRig(t, t.TempDir(), false, stateMsize, 1<<20)
	ok(t, r, p9test.Msg(msgTversion, noTag, uint32(stateMsize), dotL))
	ok(t, r, p9test.Msg(msgTattach, 1, uint32(1), uint32(noFid), "", "", uint32(0)))
	s := r.dev.sess
	s.mu.Lock()
	for fid := uint32(100); len(s.fids) < maxLiveFids; fid++ {
		s.fids[fid] = &fidRecord{}
	}
	s.mu.Unlock()
	for _, msg := range [][]byte{
		p9test.Msg(msgTwalk, 2, uint32(1), uint32(2), uint16(0)),
		p9test.Msg(msgTattach, 3, uint32(3), uint32(noFid), "", "", uint32(0)),
	} {
		assert.Equal(t, unix.ErrnoName(unix.ENFILE), unix.ErrnoName(unix.Errno(lerrno(r.roundTrip(msg)))), "type %d", msg[4])
	}
	ok(t, r, p9test.Msg(msgTwalk, 4, uint32(1), uint32(100), uint16(0)))
	ok(t, r, p9test.Msg(msgTwalk, 5, uint32(1), uint32(1), uint16(0)))
	st := snapshotOf(t, r)
	assert.LessOrEqual(t, len(st.Fids), MaxFids)
}
