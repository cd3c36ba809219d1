package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

const (
	// shareDir is where the VM's share is mounted in the guest: each
	// container's root is its folder there, named by the container's id.
	shareDir = "/share"
	// p9Options: msize the most 9pnet_virtio posts in one chain.
	p9Options = "trans=virtio,version=9p2000.L,msize=512000"
)

// mountShare mounts the VM's share, once, at the agent's start.
func mountShare() error { return mount(agent.ShareTag, shareDir, "9p", 0, p9Options) }

// setupRoot sets container id's root up and returns it: its folder in
// the share, bound on itself (read-only if asked) so that the container's
// mounts and the root go in one detach at its end, and its mounts.
func setupRoot(id string, c *agent.Container, log *slog.Logger) (string, error) {
	root := filepath.Join(shareDir, id)
	st, err := os.Stat(root)
	if err != nil {
		return "", fmt.Errorf("container %s's root: %w", id, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("container %s's root %s is no folder", id, root)
	}
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return "", fmt.Errorf("binding %s: %w", root, err)
	}
	if c.Readonly {
		if err := unix.Mount("", root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = teardownRoot(root)
			return "", fmt.Errorf("making %s read-only: %w", root, err)
		}
	}
	if c.Hostname != "" {
		if err := unix.Sethostname([]byte(c.Hostname)); err != nil {
			_ = teardownRoot(root)
			return "", fmt.Errorf("hostname: %w", err)
		}
	}
	for _, m := range c.Mounts {
		fstype := m.Type
		// The VM is the container's whole machine: its /dev is the
		// guest's devtmpfs (null, zero, tty, ptmx...), where runc fills a
		// tmpfs with the host's nodes.
		if m.Destination == "/dev" && fstype == "tmpfs" {
			fstype = "devtmpfs"
		}
		flags, data := mountOptions(m.Options)
		switch fstype {
		case "devtmpfs":
			data = "" // one instance, the guest's: a tmpfs's size is not for it
		case "devpts":
			// Its own instance, whose ptmx the container's /dev/ptmx opens.
			for _, o := range []string{"newinstance", "ptmxmode=0666"} {
				if !slices.Contains(m.Options, o) {
					data += "," + o
				}
			}
		}
		dst := filepath.Join(root, filepath.Clean("/"+m.Destination))
		if err := mount(m.Source, dst, fstype, flags, strings.Trim(data, ",")); err != nil {
			log.Warn("a container mount failed", "destination", m.Destination, "type", m.Type, "err", err)
		}
	}
	return root, nil
}

// teardownRoot detaches a container's root and every mount beneath it,
// so that the shim can unmount its root file system on the host.
func teardownRoot(root string) error {
	if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmounting %s: %w", root, err)
	}
	return nil
}

// mountFlags are the mount(8) options that are flags; the others are
// the file system's data.
var mountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
	"sync": unix.MS_SYNCHRONOUS, "dirsync": unix.MS_DIRSYNC, "noatime": unix.MS_NOATIME,
	"nodiratime": unix.MS_NODIRATIME, "relatime": unix.MS_RELATIME, "strictatime": unix.MS_STRICTATIME,
}

// mountIgnored are options that set nothing at mount time.
var mountIgnored = map[string]bool{"rw": true, "defaults": true, "rbind": true, "bind": true, "rprivate": true, "private": true}

func mountOptions(opts []string) (uintptr, string) {
	var (
		flags uintptr
		data  []string
	)
	for _, o := range opts {
		if f, ok := mountFlags[o]; ok {
			flags |= f
		} else if !mountIgnored[o] {
			data = append(data, o)
		}
	}
	return flags, strings.Join(data, ",")
}
