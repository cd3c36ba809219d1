package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

const (
	// rootDir is where the container's root is mounted in the guest.
	rootDir = "/rootfs"
	// p9Options: msize the most 9pnet_virtio posts in one chain.
	p9Options = "trans=virtio,version=9p2000.L,msize=512000"
)

// setupRoot mounts the container's root file system and its mounts.
func setupRoot(c *agent.Container, log *slog.Logger) error {
	var flags uintptr
	if c.Readonly {
		flags = unix.MS_RDONLY
	}
	if err := mount(agent.RootfsTag, rootDir, "9p", flags, p9Options); err != nil {
		return err
	}
	if c.Hostname != "" {
		if err := unix.Sethostname([]byte(c.Hostname)); err != nil {
			return fmt.Errorf("hostname: %w", err)
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
		dst := filepath.Join(rootDir, filepath.Clean("/"+m.Destination))
		if err := mount(m.Source, dst, fstype, flags, strings.Trim(data, ",")); err != nil {
			log.Warn("a container mount failed", "destination", m.Destination, "type", m.Type, "err", err)
		}
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
