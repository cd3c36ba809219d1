package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const mib = 1 << 20

// sparseImage writes a 64 MiB image that is mostly a hole: 1 MiB of data
// at 0, 4 KiB at 10 MiB, 2 MiB of written zeros at 20 MiB and 512 bytes
// at 63 MiB. It returns the path and the image's bytes.
func sparseImage(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	path := filepath.Join(dir, "web1.img")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	want := make([]byte, 64*mib)
	put := func(off int64, p []byte) {
		_, err := f.WriteAt(p, off)
		require.NoError(t, err)
		copy(want[off:], p)
	}
	put(0, bytes.Repeat([]byte("gvmm"), mib/4))
	put(10*mib, bytes.Repeat([]byte{0xa5}, 4096))
	put(20*mib, make([]byte, 2*mib))
	put(63*mib, bytes.Repeat([]byte{7}, 512))
	require.NoError(t, f.Truncate(64*mib))
	require.NoError(t, f.Close())
	return path, want
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	return st.Blocks * 512
}

func TestCopySparseKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src, want := sparseImage(t, dir)
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.Create(filepath.Join(dir, "copy.img"))
	require.NoError(t, err)
	defer out.Close()

	var progress int64
	c, err := CopySparse(context.Background(), out, in, 64*mib, func(n int64) { progress += n })
	require.NoError(t, err)
	assert.Equal(t, int64(64*mib), progress, "progress covers holes too")
	assert.Equal(t, fmt.Sprintf("%x", sha256.Sum256(want)), c.SHA256)
	assert.Equal(t, int64(64*mib), c.Size)
	if allocated(t, src) < 8*mib { // the file system keeps holes
		assert.LessOrEqual(t, c.Data, int64(4*mib), "only data extents are read")
		assert.LessOrEqual(t, allocated(t, out.Name()), int64(2*mib), "holes and zeros stay holes")
	}
	got, err := os.ReadFile(out.Name())
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "the copy differs")

	h, err := HashFile(context.Background(), src, nil)
	require.NoError(t, err)
	assert.Equal(t, c, h)
}

func TestCopySparseEmptyAndAllHole(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int64{0, 3 * mib} {
		src := filepath.Join(dir, fmt.Sprintf("src%d", size))
		require.NoError(t, os.WriteFile(src, nil, 0o600))
		require.NoError(t, os.Truncate(src, size))
		c, err := HashFile(context.Background(), src, nil)
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("%x", sha256.Sum256(make([]byte, size))), c.SHA256)
		assert.Zero(t, c.Data)
	}
}

// newBackup writes a backup of a definition, a kernel and two disks with
// the same base name.
func newBackup(t *testing.T) (string, *Manifest) {
	t.Helper()
	dir := t.TempDir()
	img, _ := sparseImage(t, dir)
	require.NoError(t, os.Mkdir(filepath.Join(dir, "b"), 0o700))
	img2 := filepath.Join(dir, "b", "web1.img")
	require.NoError(t, os.WriteFile(img2, []byte("second disk"), 0o600))
	kernel := filepath.Join(dir, "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("kernel"), 0o600))
	dest := filepath.Join(dir, "backup")
	var finished []string
	m, err := Write(context.Background(), dest, "web1", []byte(`{"name":"web1"}`), []Source{
		{Role: RoleDisk, Path: img, LockShared: true},
		{Role: RoleKernel, Path: kernel},
		{Role: RoleDisk, Path: img2},
	}, Options{
		Progress: func(e Event) {
			if e.Finished {
				finished = append(finished, e.Step+" "+e.Path)
			}
		},
		BeforeDisks: func() error { finished = append(finished, "(pause)"); return nil },
		AfterDisks:  func() error { finished = append(finished, "(resume)"); return nil },
	})
	require.NoError(t, err)
	assert.Equal(t, []string{
		"copied vm.json", "copied boot/vmlinuz",
		"(pause)", "copied disks/web1.img", "copied disks/1-web1.img", "(resume)",
		"hashed vm.json", "hashed boot/vmlinuz", "hashed disks/web1.img", "hashed disks/1-web1.img",
	}, finished, "only the disks are copied while paused; nothing is hashed then")
	return dest, m
}

func TestWriteReadVerify(t *testing.T) {
	dest, m := newBackup(t)
	read, err := ReadManifest(openDir(t, dest))
	require.NoError(t, err)
	assert.Equal(t, m, read)
	require.Len(t, read.Role(RoleDisk), 2)
	assert.Equal(t, int64(64*mib), read.Role(RoleDisk)[0].Size)
	require.NoError(t, copyAllOut(t, dest, read))
	st, err := os.Stat(dest)
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|0o700, st.Mode())

	_, err = Write(context.Background(), dest, "web1", []byte("{}"), nil, Options{})
	assert.ErrorContains(t, err, "is not empty")
}

func TestVerifyRefusesDamage(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dest string)
		want   error
		file   string
	}{
		{"flipped byte", func(t *testing.T, dest string) {
			f, err := os.OpenFile(filepath.Join(dest, "disks/web1.img"), os.O_RDWR, 0)
			require.NoError(t, err)
			defer f.Close()
			b := make([]byte, 1)
			_, err = f.ReadAt(b, 10*mib+100)
			require.NoError(t, err)
			b[0] ^= 0x01
			_, err = f.WriteAt(b, 10*mib+100)
			require.NoError(t, err)
		}, ErrCorrupt, "disks/web1.img"},
		{"byte in a hole", func(t *testing.T, dest string) {
			f, err := os.OpenFile(filepath.Join(dest, "disks/web1.img"), os.O_RDWR, 0)
			require.NoError(t, err)
			defer f.Close()
			_, err = f.WriteAt([]byte{1}, 40*mib)
			require.NoError(t, err)
		}, ErrCorrupt, "disks/web1.img"},
		{"missing image", func(t *testing.T, dest string) {
			require.NoError(t, os.Remove(filepath.Join(dest, "disks/1-web1.img")))
		}, ErrMissing, "disks/1-web1.img"},
		{"truncated image", func(t *testing.T, dest string) {
			require.NoError(t, os.Truncate(filepath.Join(dest, "disks/web1.img"), 32*mib))
		}, ErrCorrupt, "disks/web1.img"},
		{"edited definition", func(t *testing.T, dest string) {
			require.NoError(t, os.WriteFile(filepath.Join(dest, "vm.json"), []byte(`{"name":"web2"}`), 0o600))
		}, ErrCorrupt, "vm.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest, m := newBackup(t)
			tt.damage(t, dest)
			err := CheckPresent(openDir(t, dest), m)
			if err == nil {
				err = copyAllOut(t, dest, m)
			}
			assert.ErrorIs(t, err, tt.want)
			assert.ErrorContains(t, err, filepath.Join(dest, tt.file)+":")
		})
	}
}

// copyAllOut restores every file of a backup as gvmm restore does and
// checks that the copies are the backup's files.
func copyAllOut(t *testing.T, dir string, m *Manifest) error {
	t.Helper()
	out := t.TempDir()
	for i, f := range m.Files {
		dst, err := os.Create(filepath.Join(out, fmt.Sprint(i)))
		require.NoError(t, err)
		var finished *Event
		err = CopyOut(context.Background(), dst, openDir(t, dir), f, func(e Event) {
			if e.Finished {
				finished = &e
			}
		})
		dst.Close()
		if err != nil {
			return err
		}
		require.NotNil(t, finished)
		assert.Equal(t, f.SHA256, finished.Copied.SHA256)
		want, err := os.ReadFile(filepath.Join(dir, f.Path))
		require.NoError(t, err)
		got, err := os.ReadFile(dst.Name())
		require.NoError(t, err)
		assert.True(t, bytes.Equal(want, got), "%s", f.Path)
	}
	return nil
}

func TestReadManifestRefuses(t *testing.T) {
	dest, m := newBackup(t)
	good, err := os.ReadFile(filepath.Join(dest, ManifestName))
	require.NoError(t, err)
	edit := func(f func(m *Manifest)) []byte {
		c := *m
		c.Files = append([]File(nil), m.Files...)
		f(&c)
		b, err := json.Marshal(&c)
		require.NoError(t, err)
		return b
	}
	tests := []struct {
		name, manifest, want string
	}{
		{"truncated", string(good[:len(good)/2]), "unexpected EOF"},
		{"empty", "", "EOF"},
		{"unknown field", `{"format":"gvmm-backup/1","extra":1}`, `unknown field "extra"`},
		{"other format", string(edit(func(m *Manifest) { m.Format = "gvmm-backup/2" })), `format "gvmm-backup/2"`},
		{"path outside", string(edit(func(m *Manifest) { m.Files[2].Path = "../../etc/passwd" })), "not a plain path"},
		{"absolute path", string(edit(func(m *Manifest) { m.Files[2].Path = "/etc/passwd" })), "not a plain path"},
		{"bad sum", string(edit(func(m *Manifest) { m.Files[1].SHA256 = "abc" })), "not 64 lowercase hex"},
		{"no kernel", string(edit(func(m *Manifest) { m.Files = append(m.Files[:1], m.Files[2:]...) })), "0 kernels"},
		{"no definition", string(edit(func(m *Manifest) { m.Files = m.Files[1:] })), "first file must be the definition"},
		{"listed twice", string(edit(func(m *Manifest) { m.Files[3].Path = m.Files[2].Path })), "listed twice"},
		{"trailing", string(good) + "{}", "data after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(filepath.Join(dest, ManifestName), []byte(tt.manifest), 0o600))
			_, err := ReadManifest(openDir(t, dest))
			assert.ErrorIs(t, err, ErrManifest)
			assert.ErrorContains(t, err, tt.want)
			assert.ErrorContains(t, err, filepath.Join(dest, ManifestName))
		})
	}
	require.NoError(t, os.Remove(filepath.Join(dest, ManifestName)))
	_, err = ReadManifest(openDir(t, dest))
	assert.ErrorIs(t, err, ErrMissing)
}

func TestWriteRefusesAnImageInUse(t *testing.T) {
	dir := t.TempDir()
	img, _ := sparseImage(t, dir)
	holder, err := os.Open(img)
	require.NoError(t, err)
	defer holder.Close()
	require.NoError(t, unix.Flock(int(holder.Fd()), unix.LOCK_EX)) // as a VMM does
	kernel := filepath.Join(dir, "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("kernel"), 0o600))
	dest := filepath.Join(dir, "backup")
	_, err = Write(context.Background(), dest, "web1", []byte("{}"), []Source{{Role: RoleKernel, Path: kernel}, {Role: RoleDisk, Path: img, LockShared: true}}, Options{})
	assert.ErrorIs(t, err, ErrInUse)
	assert.NoDirExists(t, dest, "a failed backup leaves nothing")
}

func TestWriteStopsWhenCancelled(t *testing.T) {
	dir := t.TempDir()
	img, _ := sparseImage(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	dest := filepath.Join(dir, "backup")
	_, err := Write(ctx, dest, "web1", []byte("{}"), []Source{{Role: RoleDisk, Path: img}}, Options{
		Progress: func(e Event) {
			if e.Path == "disks/web1.img" && e.Done > 0 {
				cancel() // as SIGINT does
			}
		},
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.NoDirExists(t, dest)

	require.NoError(t, os.Mkdir(dest, 0o700)) // an empty folder given is kept, emptied
	_, err = Write(context.Background(), dest, "web1", []byte("{}"), []Source{{Role: RoleDisk, Path: img}},
		Options{BeforeDisks: func() error { return fmt.Errorf("cannot pause") }})
	assert.ErrorContains(t, err, "cannot pause")
	ents, err := os.ReadDir(dest)
	require.NoError(t, err)
	assert.Empty(t, ents)

	// A copy that fails while paused still resumes.
	resumed := false
	_, err = Write(context.Background(), dest, "web1", []byte("{}"), []Source{{Role: RoleDisk, Path: img}, {Role: RoleDisk, Path: filepath.Join(dir, "gone.img")}},
		Options{BeforeDisks: func() error { return nil }, AfterDisks: func() error { resumed = true; return nil }})
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.True(t, resumed)
}

// openDir opens a backup folder for the test's duration.
func openDir(t *testing.T, path string) *Dir {
	t.Helper()
	d, err := OpenDir(path)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

func TestDirRefusesSymlinksAndWritableFiles(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dest string)
		want  error
		msg   string
	}{
		{"file is a symlink", func(t *testing.T, dest string) {
			require.NoError(t, os.Rename(filepath.Join(dest, "disks/web1.img"), filepath.Join(dest, "moved")))
			require.NoError(t, os.Symlink("../moved", filepath.Join(dest, "disks/web1.img")))
		}, ErrSymlink, "disks/web1.img: a symlink"},
		{"folder is a symlink", func(t *testing.T, dest string) {
			require.NoError(t, os.Rename(filepath.Join(dest, "disks"), filepath.Join(dest, "moved")))
			require.NoError(t, os.Symlink("moved", filepath.Join(dest, "disks")))
		}, ErrSymlink, "disks/web1.img: a symlink"},
		{"group-writable file", func(t *testing.T, dest string) {
			require.NoError(t, os.Chmod(filepath.Join(dest, "disks/web1.img"), 0o660))
		}, ErrUnsafe, "disks/web1.img: refused: writable by its group or others (mode 660)"},
		{"world-writable folder", func(t *testing.T, dest string) {
			require.NoError(t, os.Chmod(filepath.Join(dest, "disks"), 0o703))
		}, ErrUnsafe, "disks: refused: writable by its group or others (mode 703)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest, m := newBackup(t)
			tt.setup(t, dest)
			err := CheckPresent(openDir(t, dest), m)
			assert.ErrorIs(t, err, tt.want)
			assert.ErrorContains(t, err, filepath.Join(dest, tt.msg))
		})
	}

	dest, _ := newBackup(t)
	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(dest, link))
	_, err := OpenDir(link)
	assert.ErrorIs(t, err, ErrSymlink)
	require.NoError(t, os.Chmod(dest, 0o770))
	_, err = OpenDir(dest)
	assert.ErrorIs(t, err, ErrUnsafe)
}
