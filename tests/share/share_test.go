// Package share_test boots the stock Debian kernel with gvmm and two
// host folders as virtio-9p shares, one read-only, and checks end to end
// what the guest's own 9p and 9pnet_virtio modules see and do: a host
// file read, a large file read in parallel, a listing, a file written
// that the host then sees (owned by the VMM's user), a folder made and a
// rename, symlinks planted towards files outside the share that reach
// nothing, a FIFO refused, and every write to the read-only share
// refused with EROFS; and open files and a cwd in a share kept across a
// snapshot and a restore in a new VMM. The guest's init is
// tests/guestshare.
package share_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/machine/snapshot"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/internal/vmmproc"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// guestModules are what the guest loads, dependencies resolved by
// debkernel: the PCI transport and the 9p client with its virtio
// transport.
var guestModules = []string{"virtio_pci", "9pnet_virtio", "9p"}

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guestshare", "github.com/gvmm-dev/gvmm/tests/guestshare"),
		kvmhost.WithModules(guestModules...),
	)
}

// bootTimeout bounds one gvmm run; a stuck guest fails the test.
const bootTimeout = 4 * time.Minute

// bigSize is the file the guest reads in parallel: many msize requests.
const bigSize = 8 << 20

func guestInitrd(t *testing.T) string {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	mods, err := k.Modules(guestModules...)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "guest.cpio")
	require.NoError(t, initramfs.WriteGuest(p, kvmhost.Asset("guestshare"), mods))
	return p
}

// TestShares boots once with a writable and a read-only share and checks
// the guest's reports, then the folders on the host.
func TestShares(t *testing.T) {
	root := t.TempDir()
	rw, ro, outside := filepath.Join(root, "rw"), filepath.Join(root, "ro"), filepath.Join(root, "outside")
	for _, d := range []string{rw, ro, outside, filepath.Join(rw, "links")} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(rw, "host.txt"), []byte("hello from the host\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(ro, "host.txt"), []byte("read-only host file\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("SECRET\n"), 0o644))
	big := make([]byte, bigSize)
	for i := range big {
		big[i] = byte(i*7 + i>>12)
	}
	require.NoError(t, os.WriteFile(filepath.Join(rw, "big.bin"), big, 0o644))
	// Symlinks the guest follows looking for secret.txt: relative out of
	// the share, absolute to the folder outside, and to the host's /etc.
	for name, target := range map[string]string{"rel": "../../outside", "abs": outside, "etc": "/etc"} {
		require.NoError(t, os.Symlink(target, filepath.Join(rw, "links", name)))
	}

	k, err := debkernel.Get()
	require.NoError(t, err)
	const token = "t0k3n"
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvmhost.Asset("gvmm"), "run", "--kernel", k.Vmlinuz, "--initrd", guestInitrd(t),
		"--memory", "256M", "--cmdline", "console=ttyS0 reboot=k panic=1 quiet gvmm.token="+token,
		"--share", rw+",tag=rw", "--share", ro+",tag=ro,readonly")
	out, errb := &guest.Recorder{}, &guest.Recorder{}
	cmd.Stdout, cmd.Stderr = out, errb
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	logs := "--- gvmm stdout (guest console) ---\n" + out.String() + "--- gvmm stderr ---\n" + errb.String()
	require.NoError(t, ctx.Err(), "gvmm did not finish in %s\n%s", bootTimeout, logs)
	require.NoError(t, err, "gvmm's exit\n%s", logs)
	require.Equal(t, []string{"1"}, out.Values("done"), "the guest did not finish\n%s", logs)
	assert.Empty(t, out.Values("error"), "the guest reported errors\n%s", logs)

	assert.Equal(t, []string{"hello from the host"}, out.Values("hostfile"))
	assert.Equal(t, []string{fmt.Sprintf("%x", sha256.Sum256(big))}, out.Values("bigsum"), "big.bin as the guest read it")
	assert.Equal(t, []string{"big.bin,host.txt,links"}, out.Values("listing"))
	assert.Equal(t, []string{"written"}, out.Values("guestfile"))
	assert.Equal(t, []string{"ok"}, out.Values("renamed"))
	assert.ElementsMatch(t, []string{"abs:ENOENT", "etc:ENOENT", "rel:ENOENT"}, out.Values("escape"),
		"a symlink led the guest to a file outside the share")
	assert.NotContains(t, out.String(), "SECRET")
	assert.Equal(t, []string{"EPERM"}, out.Values("mknod"), "a FIFO made on the host")
	assert.Equal(t, []string{"EROFS"}, out.Values("rowrite"))
	assert.Equal(t, []string{"read-only host file"}, out.Values("roread"))

	// What the guest left on the host.
	got, err := os.ReadFile(filepath.Join(rw, "guest.txt"))
	require.NoError(t, err)
	assert.Equal(t, "written by the guest: "+token+"\n", string(got))
	st, err := os.Stat(filepath.Join(rw, "guest.txt"))
	require.NoError(t, err)
	assert.Equal(t, uint32(os.Getuid()), st.Sys().(*syscall.Stat_t).Uid, "guest.txt belongs to the VMM's user")
	got, err = os.ReadFile(filepath.Join(rw, "sub", "b"))
	require.NoError(t, err)
	assert.Equal(t, "a", string(got))
	for _, gone := range []string{filepath.Join(rw, "sub", "a"), filepath.Join(rw, "sub", "gone"), filepath.Join(rw, "fifo"), filepath.Join(ro, "new.txt")} {
		_, err := os.Lstat(gone)
		assert.True(t, errors.Is(err, os.ErrNotExist), "%s exists (%v)", gone, err)
	}
	assert.False(t, strings.Contains(errb.String(), "level=ERROR"), "gvmm logged an error\n%s", logs)
}

// TestSnapshotKeepsOpenFiles snapshots a guest that has its cwd in a
// share and files open there, kills the VMM and restores the snapshot in
// a new one: the guest's kept fd reads and writes on (the host sees the
// write, and what was written before is not truncated by the reopen), a
// file the host removed meanwhile fails with EBADF while the rest goes
// on, and the cwd is read and listed after the restore. The snapshot is
// then restored again with --share pointing its share at a copy of the
// folder.
func TestSnapshotKeepsOpenFiles(t *testing.T) {
	// Unix socket paths are short: not under t.TempDir's long names.
	root, err := os.MkdirTemp("", "gvmm-share-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	rw, ro, snap := filepath.Join(root, "rw"), filepath.Join(root, "ro"), filepath.Join(root, "snap")
	sub := filepath.Join(rw, "sub")
	for _, d := range []string{sub, ro} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(sub, "doomed.txt"), []byte("doomed\n"), 0o644))
	k, err := debkernel.Get()
	require.NoError(t, err)

	a := vmmproc.Start(t, 10*time.Minute, kvmhost.Asset("gvmm"), "run", "--kernel", k.Vmlinuz, "--initrd", guestInitrd(t),
		"--memory", "256M", "--cmdline", "console=ttyS0 reboot=k panic=1 gvmm.mode=snapshot",
		"--share", rw+",tag=rw", "--share", ro+",tag=ro,readonly", "--api-socket", filepath.Join(root, "a.sock"))
	a.WaitFor(t, "opened", bootTimeout)
	c := api.NewClient(filepath.Join(root, "a.sock"))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	require.NoError(t, c.Pause(ctx))
	require.NoError(t, c.Snapshot(ctx, snap))
	a.Kill()
	got, err := os.ReadFile(filepath.Join(sub, "keep.txt"))
	require.NoError(t, err)
	require.Equal(t, "before\n", string(got), "keep.txt when the snapshot was taken")

	// The snapshot saved both shares' fids, the rw one's by path.
	data, err := os.ReadFile(filepath.Join(snap, snapshot.StateFile))
	require.NoError(t, err)
	st, err := snapshot.Parse(data)
	require.NoError(t, err)
	assert.Equal(t, []snapshot.Share{{Path: rw, Tag: "rw"}, {Path: ro, Tag: "ro", ReadOnly: true}}, st.Config.Shares)
	paths := map[string]bool{}
	for _, d := range st.Devices.Virtio {
		if d.P9 != nil && d.P9.Tag == "rw" {
			for _, f := range d.P9.Fids {
				if f.Open {
					paths[f.Path] = true
				}
			}
		}
	}
	t.Logf("open fids of the rw share: %v", paths)
	assert.True(t, paths["sub/keep.txt"] && paths["sub/doomed.txt"], "the open files are saved by path: %v", paths)

	// A copy of the folder as it was, for a second restore.
	copied := filepath.Join(root, "copy")
	require.NoError(t, os.CopyFS(copied, os.DirFS(rw)))

	require.NoError(t, os.Remove(filepath.Join(sub, "doomed.txt")))
	b := resume(t, ctx, snap, filepath.Join(root, "b.sock"), sub)
	assert.Equal(t, []string{"before|after"}, b.Out.Values("kept"))
	assert.Equal(t, []string{"EBADF"}, b.Out.Values("doomed"), "the fd of a file removed on the host")
	assert.Equal(t, []string{"restored"}, b.Out.Values("go"))
	assert.Equal(t, []string{"go,keep.txt"}, b.Out.Values("cwdlisting"))
	got, err = os.ReadFile(filepath.Join(sub, "keep.txt"))
	require.NoError(t, err)
	assert.Equal(t, "before\nafter\n", string(got), "the host sees the write through the restored fd")
	assert.Contains(t, b.Err.String(), "fids not restored", "the removed file's fid is logged")

	// The same snapshot again, its rw share served from the copy: every
	// fid is found there, and the writes land in the copy alone.
	c2 := resume(t, ctx, snap, filepath.Join(root, "c.sock"), filepath.Join(copied, "sub"), "--share", copied+",tag=rw")
	assert.Equal(t, []string{"before|after"}, c2.Out.Values("kept"))
	assert.Equal(t, []string{"doomed"}, c2.Out.Values("doomed"), "doomed.txt is in the copy")
	assert.Equal(t, []string{"doomed.txt,go,keep.txt"}, c2.Out.Values("cwdlisting"))
	got, err = os.ReadFile(filepath.Join(copied, "sub", "keep.txt"))
	require.NoError(t, err)
	assert.Equal(t, "before\nafter\n", string(got))
	got, err = os.ReadFile(filepath.Join(sub, "keep.txt"))
	require.NoError(t, err)
	assert.Equal(t, "before\nafter\n", string(got), "the first folder is not written by the second restore")
	assert.NotContains(t, c2.Err.String(), "fids not restored")
}

// resume restores snap in a new VMM with extra flags, waits until its API
// answers, puts go into goDir (the guest's cwd) and waits for the guest
// to finish and power off; the VMM ends with status 0, the guest did not
// boot again and reported no error.
func resume(t *testing.T, ctx context.Context, snap, apiSock, goDir string, extra ...string) *vmmproc.Proc {
	t.Helper()
	start := time.Now()
	vm := vmmproc.Start(t, 10*time.Minute, kvmhost.Asset("gvmm"),
		append([]string{"run", "--restore", snap, "--api-socket", apiSock}, extra...)...)
	c := api.NewClient(apiSock)
	defer c.Close()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if _, err := c.Info(ctx); err == nil {
			break
		}
		select {
		case <-vm.Exited:
			t.Fatalf("the restore ended early\n%s", vm.Err.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "the restored VMM's API did not answer")
	}
	t.Logf("restored VMM answering after %v", time.Since(start).Round(time.Millisecond))
	require.NoError(t, os.WriteFile(filepath.Join(goDir, "go"), []byte("restored\n"), 0o644))
	vm.WaitFor(t, "done", bootTimeout)
	select {
	case <-vm.Exited:
	case <-time.After(time.Minute):
		t.Fatal("the restored guest did not power off")
	}
	assert.True(t, vm.Cmd.ProcessState.Success(), "the restored VMM's exit\n%s", vm.Err.String())
	assert.Empty(t, vm.Out.Values("error"), "the guest reported errors")
	assert.NotContains(t, vm.Out.String(), "Linux version", "the restored guest did not boot again")
	assert.NotContains(t, vm.Err.String(), "level=ERROR")
	return vm
}
