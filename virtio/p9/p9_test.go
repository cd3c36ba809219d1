package p9

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	p9srv "github.com/hugelgupf/p9/p9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/virtio"
	"github.com/gvmm-dev/gvmm/virtio/p9/p9test"
)

// clientMsize is what the library client asks for; the kernel asks
// 128 KiB by default.
const clientMsize = 64 << 10

func newClient(t *testing.T, r *rig) (*p9srv.Client, p9srv.File) {
	t.Helper()
	c, err := p9srv.NewClient(r.conn(), p9srv.WithMessageSize(clientMsize))
	require.NoError(t, err)
	root, err := c.Attach("")
	require.NoError(t, err)
	return c, root
}

// assertErrno checks the errno a client call failed with: the client
// returns the library's own errno type.
func assertErrno(t *testing.T, err error, want unix.Errno, msgAndArgs ...any) {
	t.Helper()
	var got linux.Errno
	if assert.ErrorAs(t, err, &got, msgAndArgs...) {
		assert.Equal(t, unix.ErrnoName(want), unix.ErrnoName(unix.Errno(got)), msgAndArgs...)
	}
}

func walk(t *testing.T, f p9srv.File, names ...string) p9srv.File {
	t.Helper()
	_, c, err := f.Walk(names)
	require.NoError(t, err, "walk %v", names)
	return c
}

func TestConfigAndFeatures(t *testing.T) {
	d, err := New(t.TempDir(), Options{Tag: "share0"})
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, virtio.Device9P, d.Type())
	assert.Equal(t, uint64(FeatureMountTag), d.Features())
	cfg := make([]byte, 16)
	d.ReadConfig(0, cfg)
	assert.Equal(t, []byte{6, 0, 's', 'h', 'a', 'r', 'e', '0', 0, 0, 0, 0, 0, 0, 0, 0}, cfg)
	for _, tag := range []string{"", "a b", "a,b", "x/y", string(make([]byte, MaxTagLen+1))} {
		_, err := New(t.TempDir(), Options{Tag: tag})
		assert.ErrorIs(t, err, ErrInvalidTag, "tag %q", tag)
	}
	_, err = New(filepath.Join(t.TempDir(), "missing"), Options{Tag: "t"})
	assert.ErrorIs(t, err, unix.ENOENT)
}

// TestClientSession drives the device with the library's own 9P client:
// reads, a large parallel read, writes, folders, renames, the listing.
func TestClientSession(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 256<<10) // 4 MiB
	require.NoError(t, os.WriteFile(filepath.Join(dir, "big"), big, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hello"), []byte("hello\n"), 0o644))
	r := newRig(t, dir, false, clientMsize, 256<<20)
	c, root := newClient(t, r)
	defer c.Close()

	f := walk(t, root, "big")
	_, _, err := f.Open(p9srv.ReadOnly)
	require.NoError(t, err)
	got := make([]byte, len(big))
	var wg sync.WaitGroup
	const parts = 32 // more than MaxInFlight
	chunk := len(big) / parts
	for i := range parts {
		wg.Go(func() {
			for off := i * chunk; off < (i+1)*chunk; {
				n, err := f.ReadAt(got[off:(i+1)*chunk], int64(off))
				if !assert.NoError(t, err) || !assert.NotZero(t, n) {
					return
				}
				off += n
			}
		})
	}
	wg.Wait()
	assert.True(t, bytes.Equal(big, got), "the file as read over 9p differs")
	require.NoError(t, f.Close())

	// A created fid becomes the new file: create through a copy of root.
	nf, _, _, err := walk(t, root).Create("new", p9srv.ReadWrite, 0o640, p9srv.NoUID, p9srv.NoGID)
	require.NoError(t, err)
	_, err = nf.WriteAt([]byte("from the guest"), 0)
	require.NoError(t, err)
	require.NoError(t, nf.Close())
	data, err := os.ReadFile(filepath.Join(dir, "new"))
	require.NoError(t, err)
	assert.Equal(t, "from the guest", string(data))

	_, err = root.Mkdir("sub", 0o755, p9srv.NoUID, p9srv.NoGID)
	require.NoError(t, err)
	sub := walk(t, root, "sub")
	require.NoError(t, root.RenameAt("new", sub, "moved"))
	assert.FileExists(t, filepath.Join(dir, "sub", "moved"))
	require.NoError(t, sub.UnlinkAt("moved", 0))
	assert.NoFileExists(t, filepath.Join(dir, "sub", "moved"))

	d := walk(t, root)
	_, _, err = d.Open(p9srv.ReadOnly)
	require.NoError(t, err)
	ents, err := d.Readdir(0, 4096)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	assert.Subset(t, names, []string{"big", "hello", "sub"})
}

// TestConfinement: nothing outside the folder is reached, whatever the
// names or symlinks, and no device node is opened.
func TestConfinement(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "share")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "secret"), []byte("secret"), 0o644))
	require.NoError(t, os.Symlink("../secret", filepath.Join(dir, "rel")))
	require.NoError(t, os.Symlink(filepath.Join(root, "secret"), filepath.Join(dir, "abs")))
	require.NoError(t, os.Symlink("/etc", filepath.Join(dir, "etc")))
	r := newRig(t, dir, false, clientMsize, 256<<20)
	c, top := newClient(t, r)
	defer c.Close()

	for _, names := range [][]string{{".."}, {"."}, {"a/b"}, {"etc", "passwd"}, {"rel", ""}} {
		_, _, err := top.Walk(names)
		assert.Error(t, err, "walk %q", names)
	}
	for _, name := range []string{"rel", "abs", "etc"} {
		f := walk(t, top, name)
		_, _, err := f.Open(p9srv.ReadOnly)
		assert.Error(t, err, "%s: a symlink is never opened on the host", name)
		target, err := f.Readlink()
		require.NoError(t, err)
		assert.NotEmpty(t, target, "the guest gets the link's text to resolve itself")
	}
	_, err := top.Mknod("null", p9srv.ModeCharacterDevice|0o666, 1, 3, p9srv.NoUID, p9srv.NoGID)
	assertErrno(t, err, unix.EPERM)
	_, err = top.Mknod("fifo", p9srv.ModeNamedPipe|0o666, 0, 0, p9srv.NoUID, p9srv.NoGID)
	assertErrno(t, err, unix.EPERM)
	// A device node the host put there can be listed, not opened.
	if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err == nil {
		f := walk(t, top, "null")
		_, _, err = f.Open(p9srv.ReadWrite)
		assertErrno(t, err, unix.EPERM)
	}
}

// TestReadOnly: every change is EROFS, reads work.
func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	r := newRig(t, dir, true, clientMsize, 64<<20)
	c, top := newClient(t, r)
	defer c.Close()

	f := walk(t, top, "f")
	_, _, err := f.Open(p9srv.WriteOnly)
	assertErrno(t, err, unix.EROFS)
	_, _, err = f.Open(p9srv.OpenFlags(unix.O_TRUNC))
	assertErrno(t, err, unix.EROFS)
	assertErrno(t, f.SetAttr(p9srv.SetAttrMask{Size: true}, p9srv.SetAttr{}), unix.EROFS)
	assertErrno(t, f.SetAttr(p9srv.SetAttrMask{Permissions: true}, p9srv.SetAttr{Permissions: 0o777}), unix.EROFS)
	_, _, _, err = walk(t, top).Create("n", p9srv.ReadWrite, 0o644, p9srv.NoUID, p9srv.NoGID)
	assertErrno(t, err, unix.EROFS)
	_, err = top.Mkdir("m", 0o755, p9srv.NoUID, p9srv.NoGID)
	assertErrno(t, err, unix.EROFS)
	_, err = top.Symlink("f", "l", p9srv.NoUID, p9srv.NoGID)
	assertErrno(t, err, unix.EROFS)
	assertErrno(t, top.Link(f, "h"), unix.EROFS)
	assertErrno(t, top.RenameAt("f", top, "g"), unix.EROFS)
	assertErrno(t, top.UnlinkAt("f", 0), unix.EROFS)
	assertErrno(t, top.UnlinkAt("d", unix.AT_REMOVEDIR), unix.EROFS)

	_, _, err = f.Open(p9srv.ReadOnly)
	require.NoError(t, err)
	buf := make([]byte, 16)
	n, err := f.ReadAt(buf, 0)
	require.NoError(t, err)
	assert.Equal(t, "data", string(buf[:n]))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "the read-only folder changed")
}

// rflushed stands for an Rflush answer in TestHostileMessages.
const rflushed = ^uint32(0)

// TestHostileMessages sends what no kernel sends: each gets an Rlerror
// or an empty answer, and the session goes on.
func TestHostileMessages(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644))
	r := newRig(t, dir, false, 4096, 4<<20)
	resp := r.roundTrip(p9test.Msg(msgTversion, noTag, uint32(1<<30), "9P2000.L"))
	require.Equal(t, uint8(msgRversion), resp[4])
	assert.Equal(t, uint32(MaxMessageSize), binary.LittleEndian.Uint32(resp[HeaderSize:]), "msize capped")
	require.Zero(t, lerrno(r.roundTrip(p9test.Msg(msgTattach, 1, uint32(1), uint32(0xffffffff), "", "", uint32(0)))))

	tests := []struct {
		name  string
		msg   []byte
		errno uint32 // 0: an empty answer
	}{
		{"short header", []byte{1, 2, 3}, 0},
		{"size field lies", append(p9test.Msg(msgTclunk, 2, uint32(9)), 0), uint32(unix.EINVAL)},
		{"unknown type", p9test.Msg(200, 3), uint32(unix.EOPNOTSUPP)},
		{"R-message as request", p9test.Msg(msgRlerror, 4, uint32(5)), uint32(unix.EOPNOTSUPP)},
		{"string past the end", p9test.Msg(msgTwalk, 5, uint32(1), uint32(2), uint16(1), uint16(200)), uint32(unix.EINVAL)},
		{"walk count past the end", p9test.Msg(msgTwalk, 6, uint32(1), uint32(2), uint16(60000)), uint32(unix.EINVAL)},
		{"Twrite count lies", p9test.Msg(msgTwrite, 7, uint32(1), uint64(0), uint32(100), []byte("abc")), uint32(unix.EINVAL)},
		{"NOTAG on Tclunk", p9test.Msg(msgTclunk, noTag, uint32(1)), uint32(unix.EINVAL)},
		{"walk to ..", p9test.Msg(msgTwalk, 8, uint32(1), uint32(2), uint16(1), ".."), uint32(unix.EINVAL)},
		{"walk through a slash", p9test.Msg(msgTwalk, 9, uint32(1), uint32(2), uint16(1), "../etc"), uint32(unix.EINVAL)},
		{"unknown fid", p9test.Msg(msgTlopen, 10, uint32(77), uint32(0)), uint32(unix.EBADF)},
		{"huge read count", p9test.Msg(msgTread, 11, uint32(1), uint64(0), uint32(0xffffffff)), uint32(unix.EINVAL)},
		{"Tflush of itself", p9test.Msg(msgTflush, 12, uint16(12)), rflushed},
		// No extended attributes: "not supported", which execve's file
		// capabilities check takes as none.
		{"Txattrwalk", p9test.Msg(msgTxattrwalk, 14, uint32(1), uint32(4), "security.capability"), uint32(unix.EOPNOTSUPP)},
		{"Txattrcreate", p9test.Msg(msgTxattrcreate, 15, uint32(1), "user.x", uint64(1), uint32(0)), uint32(unix.EOPNOTSUPP)},
		{"Tflush of nothing", p9test.Msg(msgTflush, 13, uint16(999)), rflushed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := r.roundTrip(tt.msg)
			switch tt.errno {
			case 0:
				assert.Empty(t, resp)
				return
			case rflushed:
				assert.Equal(t, rflush(binary.LittleEndian.Uint16(tt.msg[5:])), resp)
				return
			}
			assert.Equal(t, tt.errno, lerrno(resp), "answer %x", resp)
		})
	}
	// Two Tflush naming each other, posted together: both answered.
	a, b := r.submit(p9test.Msg(msgTflush, 30, uint16(31))), r.submit(p9test.Msg(msgTflush, 31, uint16(30)))
	for _, ch := range []<-chan []byte{a, b} {
		select {
		case resp := <-ch:
			assert.Equal(t, uint8(msgRflush), resp[4])
		case <-time.After(waitFor):
			t.Fatal("a Tflush naming another Tflush was never answered")
		}
	}
	// The session still works: walk to f, open and read it.
	require.Zero(t, lerrno(r.roundTrip(p9test.Msg(msgTwalk, 20, uint32(1), uint32(3), uint16(1), "f"))))
	require.Zero(t, lerrno(r.roundTrip(p9test.Msg(msgTlopen, 21, uint32(3), uint32(0)))))
	resp = r.roundTrip(p9test.Msg(msgTread, 22, uint32(3), uint64(0), uint32(100)))
	require.Zero(t, lerrno(resp))
	assert.Equal(t, "data", string(resp[HeaderSize+4:]))
}
