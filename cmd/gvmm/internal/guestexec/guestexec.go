// Package guestexec is gvmm exec's guest: the initramfs gvmm builds on
// the fly, the request it hands the guest, and the init that carries it
// out. The init is gvmm's own executable, copied into the initramfs as
// /init and run as PID 1: one static binary serves both sides, so a user
// needs nothing but gvmm, and the init always speaks its VMM's protocol.
//
// The guest mounts the host's / (share RootTag) read-only under a tmpfs
// overlay, or writable with Request.RW, with its own /proc, /sys, /dev
// and /tmp; the control folder (share ControlTag) brings the request in
// and takes COMMAND's exit status out.
package guestexec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gvmm-dev/gvmm/internal/guestimage"
	"github.com/gvmm-dev/gvmm/internal/kmod"
)

// Mount tags of the shares gvmm exec adds.
const (
	RootTag    = "gvmmroot"
	ControlTag = "gvmmexec"
)

// StderrPort is the host vsock port (CID 2) to which the guest init
// connects COMMAND's stderr: the serial console carries stdout alone, so
// that the two streams stay apart as on the host.
const StderrPort = 2

// Files of the control folder.
const (
	RequestFile = "request.json"
	StatusFile  = "status"
)

// Modules are what the guest needs for its root: the PCI transport, the
// 9p client, and overlayfs unless the root is writable.
func Modules(rw bool) []string {
	m := []string{"virtio_pci", "9pnet_virtio", "9p", "vmw_vsock_virtio_transport"}
	if !rw {
		m = append(m, "overlay")
	}
	return m
}

// Mount is a further share, mounted at its host path.
type Mount struct {
	Tag  string `json:"tag"`
	Path string `json:"path"`
}

// Request is what the guest runs, and how.
type Request struct {
	Args []string `json:"args"`
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
	RW   bool     `json:"rw"`
	// StdinPipe: COMMAND's stdin is a pipe that ends where the host's
	// stdin did (see StdinEOFFile); otherwise it is the console itself,
	// a terminal, which has no end.
	StdinPipe bool    `json:"stdin_pipe,omitempty"`
	Mounts    []Mount `json:"mounts,omitempty"`
}

// WriteRequest stores r in the control folder dir.
func WriteRequest(dir string, r Request) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, RequestFile), data, 0o600)
}

// Status reads the exit status the guest left in the control folder.
func Status(dir string) (int, error) {
	data, err := os.ReadFile(filepath.Join(dir, StatusFile))
	if err != nil {
		return 0, err
	}
	var st int
	if _, err := fmt.Sscanf(string(data), "%d\n", &st); err != nil || st < 0 || st > 255 {
		return 0, fmt.Errorf("status file %q: want a number from 0 to 255", data)
	}
	return st, nil
}

// envDropped are host variables that name what the guest does not have:
// the host's agents, displays, sessions and terminal multiplexers.
var envDropped = []string{"SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY",
	"DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR", "XDG_SESSION_ID", "DBUS_SESSION_BUS_ADDRESS",
	"TMUX", "TMUX_PANE", "STY", "WINDOWID", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "INVOCATION_ID", "JOURNAL_STREAM"}

// Env is env without what makes no sense in the guest, and with PWD set
// to dir.
func Env(env []string, dir string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == "PWD" || slices.Contains(envDropped, k) {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "PWD="+dir)
}

// ErrNotStatic refuses a gvmm that cannot be the guest's init.
var ErrNotStatic = errors.New("gvmm exec needs a statically linked gvmm (build it with CGO_ENABLED=0): its own executable is the guest's init")

// CheckStatic checks that the executable at path needs no dynamic loader.
func CheckStatic(path string) error {
	if err := guestimage.CheckStatic(path); err != nil {
		if errors.Is(err, guestimage.ErrNotStatic) {
			return fmt.Errorf("%s: %w", path, ErrNotStatic)
		}
		return err
	}
	return nil
}

// WriteInitramfs writes the guest's initramfs to path: a console node,
// init (gvmm's executable) as /init, and the modules under /lib/modules.
func WriteInitramfs(path, init string, mods []kmod.Module) error {
	return guestimage.Write(path, init, mods)
}
