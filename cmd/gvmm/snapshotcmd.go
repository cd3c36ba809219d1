package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/backup"
	"github.com/gvmm-dev/gvmm/machine/api"
)

// snapshotTimeout bounds the snapshot call, which writes all of guest
// RAM that is not zero.
const snapshotTimeout = 10 * time.Minute

// snapshotCmd saves a running VM into a new folder: pause, snapshot,
// resume. A VM that was paused already is snapshotted and left paused.
func snapshotCmd(c *vmCommand) func() int {
	return func() int {
		dest, err := filepath.Abs(c.args[1])
		if err != nil {
			return c.usageErr("%v", err)
		}
		dir, l, _, code, ok := c.running(c.args[0])
		if !ok {
			return code
		}
		defer l.Unlock()
		// A VMM gvmm start confined saves snapshots only in its run
		// folder's snapshot folder: the snapshot goes there, then here.
		p := dir.Paths(l.Name())
		target := dest
		if fi, err := os.Stat(p.Snapshots); err == nil && fi.IsDir() {
			if err := checkEmptyOrAbsent(dest); err != nil {
				return c.fail(err)
			}
			target = filepath.Join(p.Snapshots, fmt.Sprintf("snapshot-%d", time.Now().UnixNano()))
		}
		cl := api.NewClient(p.API)
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
		defer cancel()
		wasPaused := false
		if err := cl.Pause(ctx); err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict {
				return c.fail(fmt.Errorf("pausing %s: %w", l.Name(), err))
			}
			wasPaused = true
		}
		err = cl.Snapshot(ctx, target)
		if !wasPaused {
			if rerr := cl.Resume(ctx); rerr != nil {
				c.warn("resuming %s: %v", l.Name(), rerr)
			}
		}
		if target != dest {
			if err == nil {
				err = moveSnapshot(ctx, target, dest)
			}
			if rerr := os.RemoveAll(target); err != nil && rerr != nil {
				c.warn("removing %s: %v", target, rerr)
			}
		}
		if err != nil {
			return c.fail(fmt.Errorf("snapshot of %s: %w", l.Name(), err))
		}
		c.printf("%s saved in %s (gvmm run --restore %s resumes it)\n", l.Name(), dest, dest)
		return exitOK
	}
}

// checkEmptyOrAbsent refuses a destination a snapshot cannot be moved
// to, before the VM is paused for it.
func checkEmptyOrAbsent(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case len(ents) > 0:
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

// moveSnapshot moves the snapshot folder src, which a confined VMM wrote
// as its user, to dst (absent or empty), as the caller's: renamed where
// both are on one file system, else copied (holes kept) and removed.
// src's entries are the VMM's doing, so none is followed if a symlink.
func moveSnapshot(ctx context.Context, src, dst string) error {
	// rename(2) replaces an empty folder, os.Rename refuses to; rmdir
	// removes nothing else.
	if err := syscall.Rmdir(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", dst, err)
	}
	err := os.Rename(src, dst)
	if errors.Is(err, syscall.EXDEV) {
		err = copySnapshot(ctx, src, dst)
	}
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(dst)
	if err != nil {
		return err
	}
	uid, gid := os.Getuid(), os.Getgid()
	for _, e := range ents {
		if err := os.Lchown(filepath.Join(dst, e.Name()), uid, gid); err != nil {
			return err
		}
	}
	return os.Lchown(dst, uid, gid)
}

// copySnapshot copies src's regular files into dst and removes src.
func copySnapshot(ctx context.Context, src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", filepath.Join(src, e.Name()))
		}
		if err := copyFile(ctx, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return os.RemoveAll(src)
}

func copyFile(ctx context.Context, src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := backup.CopySparse(ctx, out, in, fi.Size(), nil); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return errors.Join(out.Sync(), out.Close())
}
