// Package agent is the protocol between the containerd shim and
// gvmm-agent, the guest's PID 1, over vsock: the shim dials the agent's
// Port once per call. Each connection carries one Request as a JSON line
// and one Response as a JSON line; a stdio Op then carries the raw
// stream of one process's stdin, stdout or stderr, until its end. One
// connection per call keeps a blocking Wait from holding the others up
// and needs no multiplexing of our own.
package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Port is the guest's vsock port on which the agent listens.
const Port = 1024

// ShareTag is the 9p mount tag of the folder the VM shares: each
// container's root file system is mounted beneath it, under the
// container's id (one container, or those of a pod sandbox).
const ShareTag = "rootfs"

// MaxMessage bounds a request or response line; a peer sending more is
// broken or hostile.
const MaxMessage = 1 << 20

// Ops.
const (
	OpCreate = "create" // prepare a process: Process (and Container for the init)
	OpStdin  = "stdin"  // the stream to the process's stdin; its end closes it
	OpStdout = "stdout" // the stream of its stdout (the terminal's output with a TTY)
	OpStderr = "stderr"
	OpStart  = "start"  // start it: Response.Pid
	OpWait   = "wait"   // block until it exits: Response.Status, ExitedAt
	OpSignal = "signal" // Signal; All: every process of the container
	OpResize = "resize" // the terminal's Width and Height
	OpClose  = "closeio"
	OpDelete = "delete" // forget an exited process; the init's takes its container's root down
	OpPids   = "pids"   // Response.Pids: the container's processes
	OpStats  = "stats"  // Response.Stats
	// OpNetwork configures the guest's interface: Network. The shim
	// sends it before any container's create.
	OpNetwork = "network"
)

// Request is one call. ContainerID names the container (OpPids and
// OpSignal's All are the container's processes), ID the process in it:
// "" is the container's init, others are execs.
type Request struct {
	Op          string     `json:"op"`
	ContainerID string     `json:"container_id"`
	ID          string     `json:"id,omitempty"`
	Process     *Process   `json:"process,omitempty"`
	Container   *Container `json:"container,omitempty"`
	Signal      int        `json:"signal,omitempty"`
	All         bool       `json:"all,omitempty"`
	Width       uint16     `json:"width,omitempty"`
	Height      uint16     `json:"height,omitempty"`
	Network     *Network   `json:"network,omitempty"`
}

// Network is the pod's network interface as the guest takes it over:
// the guest's interface with MAC gets the MTU, addresses and routes of
// the namespace's interface whose frames the shim carries to it.
type Network struct {
	MAC    string   `json:"mac"`
	MTU    int      `json:"mtu"`
	Addrs  []string `json:"addrs,omitempty"` // CIDR: 10.0.0.2/24
	Routes []Route  `json:"routes,omitempty"`
}

// Route is one route of the interface: Dst a CIDR ("" the default
// route), Gw an address ("" for a route on the link).
type Route struct {
	Dst string `json:"dst,omitempty"`
	Gw  string `json:"gw,omitempty"`
}

// Process is what to run: the OCI spec's process, as the guest needs it.
type Process struct {
	Args           []string `json:"args"`
	Env            []string `json:"env,omitempty"`
	Cwd            string   `json:"cwd"`
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGIDs []uint32 `json:"additional_gids,omitempty"`
	Terminal       bool     `json:"terminal,omitempty"`
	// Stdin, Stdout, Stderr: the shim attaches a stream; otherwise the
	// process gets /dev/null.
	Stdin  bool `json:"stdin,omitempty"`
	Stdout bool `json:"stdout,omitempty"`
	Stderr bool `json:"stderr,omitempty"`
	// Rlimits are set on the process before it runs.
	Rlimits []Rlimit `json:"rlimits,omitempty"`
}

// Rlimit is one resource limit (RLIMIT_ number).
type Rlimit struct {
	Resource int    `json:"resource"`
	Soft     uint64 `json:"soft"`
	Hard     uint64 `json:"hard"`
}

// Container is how the guest sets the container's root up: its folder
// beneath the share ShareTag, then Mounts on it, in order.
type Container struct {
	Hostname string  `json:"hostname,omitempty"`
	Readonly bool    `json:"readonly,omitempty"`
	Mounts   []Mount `json:"mounts,omitempty"`
}

// Mount is an OCI spec mount of a kernel file system (proc, sysfs,
// tmpfs, devpts, mqueue...): host binds cannot reach the guest.
type Mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options,omitempty"`
}

// Response answers a Request. Error is set when it failed.
type Response struct {
	Error    string    `json:"error,omitempty"`
	NotFound bool      `json:"not_found,omitempty"`
	Pid      int       `json:"pid,omitempty"`
	Status   int       `json:"status,omitempty"`
	ExitedAt time.Time `json:"exited_at,omitzero"`
	Pids     []int     `json:"pids,omitempty"`
	Stats    *Stats    `json:"stats,omitempty"`
}

// Stats are the guest's, as the container's.
type Stats struct {
	MemTotal     uint64 `json:"mem_total"` // bytes
	MemAvailable uint64 `json:"mem_available"`
	CPUUsec      uint64 `json:"cpu_usec"` // time the guest's CPUs were busy
	Processes    uint64 `json:"processes"`
}

// ErrNotFound is a Response's NotFound: no such process.
var ErrNotFound = errors.New("no such process")

// CheckID refuses a container id that is not one name of a folder: the
// container's root is the share's folder of that name, on both sides.
func CheckID(id string) error {
	if id == "" || id == "." || id == ".." || len(id) > 255 || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("container id %q: want one file name", id)
	}
	return nil
}

// Err is the Response's error, or nil.
func (r *Response) Err() error {
	switch {
	case r.NotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, r.Error)
	case r.Error != "":
		return errors.New(r.Error)
	}
	return nil
}

// Write sends one message (a Request or a Response) as a JSON line.
func Write(w io.Writer, msg any) error {
	data, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if len(data) >= MaxMessage {
		return fmt.Errorf("agent: message of %d bytes, over %d", len(data), MaxMessage)
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

// Read reads one message into msg from r. It reads byte by byte up to
// the line's end, so that a stream following the message stays unread.
func Read(r io.Reader, msg any) error {
	var (
		line []byte
		b    [1]byte
	)
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			if len(line) >= MaxMessage {
				return fmt.Errorf("agent: message over %d bytes", MaxMessage)
			}
			line = append(line, b[0])
			continue
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fmt.Errorf("agent: reading a message: %w", err)
		}
	}
	if err := json.Unmarshal(line, msg); err != nil {
		return fmt.Errorf("agent: a malformed message: %w", err)
	}
	return nil
}
