package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/containerd/containerd/mount"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

// mounterArg starts the binary as a pod's mounter (see mounter).
const mounterArg = "gvmm-pod-mounter"

// mounterTypes are the root file systems containerd's snapshotters
// hand a shim (overlayfs's and native's); the mounter mounts no other.
var mounterTypes = map[string]bool{"overlay": true, "bind": true}

// mountRequest asks the mounter to mount a container's root file
// system beneath the pod's share (Mounts set) or to unmount it.
type mountRequest struct {
	ID     string        `json:"id"`
	Mounts []mount.Mount `json:"mounts,omitempty"`
}

type mountResponse struct {
	Error string `json:"error,omitempty"`
}

// mounter is the helper process of a pod sandbox's shim: the root file
// systems of the pod's later containers are mounted after the shim's
// seccomp filter is on, which has no mount. The shim starts it before
// the filter, from its own binary, and it mounts and unmounts only
// containerd's root file system types on a folder beneath the pod's
// share, named by a container id. It ends when the shim's end of its
// pipe closes, the shim's exit included.
type mounter struct {
	mu  sync.Mutex
	in  io.WriteCloser
	out *bufio.Reader
}

// startMounter starts the mounter of share.
func startMounter(share string) (*mounter, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, mounterArg, share)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the pod's mounter: %w", err)
	}
	// The shim library's reaper may reap it first; its status says
	// nothing the pipe did not.
	go func() { _ = cmd.Wait() }()
	return &mounter{in: in, out: bufio.NewReader(out)}, nil
}

// mount mounts container id's root file system at its folder.
func (m *mounter) mount(id string, mounts []mount.Mount) error {
	return m.call(mountRequest{ID: id, Mounts: mounts})
}

// unmount detaches container id's root file system.
func (m *mounter) unmount(id string) error { return m.call(mountRequest{ID: id}) }

func (m *mounter) call(req mountRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := agent.Write(m.in, req); err != nil {
		return fmt.Errorf("the pod's mounter: %w", err)
	}
	var resp mountResponse
	if err := agent.Read(m.out, &resp); err != nil {
		return fmt.Errorf("the pod's mounter: %w", err)
	}
	if resp.Error != "" {
		return errors.New(resp.Error)
	}
	return nil
}

// close ends the mounter and waits for its end: the end of its output.
func (m *mounter) close() {
	m.in.Close()
	_, _ = io.Copy(io.Discard, m.out)
}

// runMounter is the mounter's process: it serves requests on stdin until
// its end.
func runMounter(share string, in io.Reader, out io.Writer) error {
	r := bufio.NewReader(in)
	for {
		var req mountRequest
		if err := agent.Read(r, &req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var resp mountResponse
		if err := serveMount(share, req); err != nil {
			resp.Error = err.Error()
		}
		if err := agent.Write(out, resp); err != nil {
			return err
		}
	}
}

func serveMount(share string, req mountRequest) error {
	if err := agent.CheckID(req.ID); err != nil {
		return err
	}
	target := filepath.Join(share, req.ID)
	if req.Mounts == nil {
		return unmountRoot(target, unix.MNT_DETACH)
	}
	for _, m := range req.Mounts {
		if !mounterTypes[m.Type] {
			return fmt.Errorf("container %s: a root file system of type %q", req.ID, m.Type)
		}
	}
	if err := os.Mkdir(target, 0o700); err != nil {
		return fmt.Errorf("container %s's root: %w", req.ID, err)
	}
	if err := mount.All(req.Mounts, target); err != nil {
		_ = os.Remove(target)
		return fmt.Errorf("mounting container %s's root file system: %w", req.ID, err)
	}
	return nil
}

// unmountRoot unmounts what is mounted at target and removes the
// folder. MNT_DETACH lets a VM's share that still holds it open go on;
// the shim's own seccomp filter allows flags 0 only, which serve once
// its VM has ended.
func unmountRoot(target string, flags int) error {
	if _, err := os.Lstat(target); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := mount.UnmountAll(target, flags); err != nil {
		return fmt.Errorf("unmounting %s: %w", target, err)
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
