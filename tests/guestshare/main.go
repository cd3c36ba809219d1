// Command guestshare is the init of the share tests' guests. It mounts
// proc, sys and devtmpfs, loads the modules /etc/modules.order lists,
// mounts the virtio-9p share tagged "rw" at /mnt/rw and the one tagged
// "ro" at /mnt/ro with the kernel's own 9p client, and reports what it
// sees as "GVMMTEST key=value" lines, then powers off. Every failure is
// reported as "GVMMTEST error=..."; the last line is "GVMMTEST done=1".
//
// Reports, in order:
//
//	hostfile=TEXT           /mnt/rw/host.txt as the host wrote it
//	bigsum=HEX              SHA-256 of /mnt/rw/big.bin (read in parallel)
//	listing=a,b,...         the names in /mnt/rw, sorted
//	guestfile=written       /mnt/rw/guest.txt written with gvmm.token
//	renamed=ok              /mnt/rw/sub made, a file created, renamed and removed
//	escape=NAME:RESULT      each symlink under /mnt/rw/links: what reading
//	                        NAME/secret.txt through it gave ("ENOENT" or the text)
//	mknod=ERRNO             a FIFO made in the share: refused
//	rowrite=ERRNO           a file created in the read-only share: refused
//	roread=TEXT             /mnt/ro/host.txt
//
// With gvmm.mode=snapshot on the command line it keeps files open across
// a snapshot and restore instead (the test snapshots, kills and restores
// the VMM while the guest waits):
//
//	opened=1                /mnt/rw/sub is the cwd, keep.txt (written
//	                        "before") and doomed.txt open: snapshot now
//	                        then the guest waits for the host's sub/go
//	kept=TEXT               keep.txt read back through the fd kept open,
//	                        after "after" was written through it
//	doomed=TEXT|ERRNO       a read of doomed.txt's fd: its text, or the
//	                        errno if the host removed it before the restore
//	go=TEXT                 go, read relative to the cwd
//	cwdlisting=a,b,...      the names in the cwd, sorted
package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/internal/guest"
)

// mountOpts are the 9p options of both mounts: the defaults of
// "mount -t 9p -o trans=virtio", 9P2000.L spelled out.
const mountOpts = "trans=virtio,version=9p2000.L"

func main() {
	a := guest.Setup()
	if err := guest.LoadModules(); err != nil {
		guest.Report("error", err)
	}
	for _, m := range []struct{ tag, dir, opts string }{
		{"rw", "/mnt/rw", mountOpts},
		{"ro", "/mnt/ro", mountOpts},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			guest.Report("error", err)
		}
		if err := unix.Mount(m.tag, m.dir, "9p", 0, m.opts); err != nil {
			guest.Report("error", fmt.Sprintf("mount %s: %v", m.tag, err))
		}
	}
	steps := []func(map[string]string) error{
		readHost, readBig, list, writeGuest, renames, escapes, mknod, readOnly,
	}
	if a["gvmm.mode"] == "snapshot" {
		steps = []func(map[string]string) error{acrossSnapshot}
	}
	for _, step := range steps {
		if err := step(a); err != nil {
			guest.Report("error", err)
		}
	}
	for _, dir := range []string{"/mnt/rw", "/mnt/ro"} {
		if err := unix.Unmount(dir, 0); err != nil {
			guest.Report("error", fmt.Sprintf("umount %s: %v", dir, err))
		}
	}
	guest.Report("done", 1)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		guest.Report("error", fmt.Sprintf("power off: %v", err))
	}
	select {}
}

func readHost(map[string]string) error {
	b, err := os.ReadFile("/mnt/rw/host.txt")
	if err != nil {
		return err
	}
	guest.Report("hostfile", strings.TrimSpace(string(b)))
	return nil
}

// readBig reads big.bin in four parallel quarters, so that several
// requests are in flight, and hashes it.
func readBig(map[string]string) error {
	f, err := os.Open("/mnt/rw/big.bin")
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	data := make([]byte, st.Size())
	const parts = 4
	chunk := (len(data) + parts - 1) / parts
	var wg sync.WaitGroup
	errs := make([]error, parts)
	for i := range parts {
		lo, hi := min(i*chunk, len(data)), min((i+1)*chunk, len(data))
		wg.Go(func() {
			_, errs[i] = io.ReadFull(io.NewSectionReader(f, int64(lo), int64(hi-lo)), data[lo:hi])
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	guest.Report("bigsum", fmt.Sprintf("%x", sha256.Sum256(data)))
	return nil
}

func list(map[string]string) error { return reportListing("listing", "/mnt/rw") }

// reportListing reports the names in dir, sorted, as key.
func reportListing(key, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	guest.Report(key, strings.Join(names, ","))
	return nil
}

func writeGuest(a map[string]string) error {
	if err := os.WriteFile("/mnt/rw/guest.txt", []byte("written by the guest: "+a["gvmm.token"]+"\n"), 0o640); err != nil {
		return err
	}
	guest.Report("guestfile", "written")
	return nil
}

func renames(map[string]string) error {
	if err := os.Mkdir("/mnt/rw/sub", 0o755); err != nil {
		return err
	}
	if err := os.WriteFile("/mnt/rw/sub/a", []byte("a"), 0o644); err != nil {
		return err
	}
	if err := os.Rename("/mnt/rw/sub/a", "/mnt/rw/sub/b"); err != nil {
		return err
	}
	if err := os.WriteFile("/mnt/rw/sub/gone", nil, 0o644); err != nil {
		return err
	}
	if err := os.Remove("/mnt/rw/sub/gone"); err != nil {
		return err
	}
	guest.Report("renamed", "ok")
	return nil
}

// escapes follows each symlink the host planted towards files outside
// the share: the guest resolves them in its own name space, where the
// host's files are not.
func escapes(map[string]string) error {
	ents, err := os.ReadDir("/mnt/rw/links")
	if err != nil {
		return err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/mnt/rw/links", e.Name(), "secret.txt"))
		result := strings.TrimSpace(string(b))
		if err != nil {
			result = errnoName(err)
		}
		guest.Report("escape", e.Name()+":"+result)
	}
	return nil
}

func mknod(map[string]string) error {
	err := unix.Mknod("/mnt/rw/fifo", unix.S_IFIFO|0o644, 0)
	guest.Report("mknod", errnoName(err))
	return nil
}

func readOnly(map[string]string) error {
	err := os.WriteFile("/mnt/ro/new.txt", []byte("x"), 0o644)
	guest.Report("rowrite", errnoName(err))
	b, err := os.ReadFile("/mnt/ro/host.txt")
	if err != nil {
		return err
	}
	guest.Report("roread", strings.TrimSpace(string(b)))
	return nil
}

// errnoName is "ok" for no error, the errno's name (ENOENT) for one, and
// the message otherwise.
func errnoName(err error) string {
	if err == nil {
		return "ok"
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// acrossSnapshot keeps a cwd and two files open in the share while the
// host snapshots the VM, kills the VMM and restores it, then uses them.
// The host's sub/go says the restore is done: each look for it is a new
// walk over 9P.
func acrossSnapshot(map[string]string) error {
	if err := os.Chdir("/mnt/rw/sub"); err != nil {
		return err
	}
	keep, err := os.OpenFile("keep.txt", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer keep.Close()
	if _, err := keep.WriteString("before\n"); err != nil {
		return err
	}
	doomed, err := os.Open("doomed.txt")
	if err != nil {
		return err
	}
	defer doomed.Close()
	guest.Report("opened", 1)
	for {
		if _, err := os.Stat("go"); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := keep.WriteString("after\n"); err != nil {
		return fmt.Errorf("write through the kept fd: %w", err)
	}
	if err := keep.Sync(); err != nil {
		return fmt.Errorf("fsync of the kept fd: %w", err)
	}
	b := make([]byte, 64)
	n, err := keep.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read through the kept fd: %w", err)
	}
	guest.Report("kept", strings.ReplaceAll(strings.TrimSpace(string(b[:n])), "\n", "|"))
	n, err = doomed.ReadAt(b, 0)
	if n > 0 && errors.Is(err, io.EOF) {
		guest.Report("doomed", strings.TrimSpace(string(b[:n])))
	} else {
		guest.Report("doomed", errnoName(err))
	}
	g, err := os.ReadFile("go")
	if err != nil {
		return err
	}
	guest.Report("go", strings.TrimSpace(string(g)))
	if err := reportListing("cwdlisting", "."); err != nil {
		return err
	}
	return os.Chdir("/") // for the unmount
}
