// Package api is gvmm's control socket: HTTP with JSON bodies over a unix
// socket, in the manner of Firecracker's and Cloud Hypervisor's APIs.
//
//	GET /vm                 Info
//	PUT /vm/balloon         {"size_mib": N}
//	GET /vm/balloon/stats   BalloonStats
//	PATCH /vm/net/{id}      RateLimit (id: the TAP's name)
//	PATCH /vm/disk/{id}     DiskRateLimit (id: the disk's index or serial)
//	PUT /vm/pause           {"lease_s": N, "renew": bool}, both optional
//	PUT /vm/resume
//	PUT /vm/snapshot        {"path": DIR}, on a paused machine
//	PUT /vm/shutdown        ACPI power button
//	PUT /vm/stop            immediate
//	GET /metrics            Prometheus text format
//
// Successful actions answer 204 with no body; every error answers a JSON
// object {"error": "message"} with a status that says its class (see
// openapi.yaml). The server reaches the machine only through the VM
// interface, so it is tested without KVM; Client is the other end.
package api

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MiB is the unit of the API's memory sizes.
const MiB = 1 << 20

// VM is what the server controls. Its methods may be called from several
// goroutines; the server serialises the ones that change state.
//
// Errors the server turns into a status: ErrInvalid (400), ErrNoBalloon,
// ErrNotRunning and ErrConflict (409), matched with errors.Is; anything
// else is a 500. The error's text is sent to the client.
type VM interface {
	// Info describes the machine as it is now.
	Info() Info
	// SetBalloon asks the guest to give up bytes of its memory to the
	// balloon; 0 deflates it completely. The server has already checked
	// that the size is at most the guest's memory.
	SetBalloon(bytes uint64) error
	// BalloonStats returns the guest's latest memory statistics.
	BalloonStats() (BalloonStats, error)
	// SetNetRateLimit changes the rate limits of the network device on
	// the TAP id; a direction l leaves nil keeps its limits.
	// ErrNotFound if there is no such device.
	SetNetRateLimit(id string, l RateLimit) error
	// SetDiskRateLimit changes the rate limit of disk id, its index or
	// its serial; a bucket l leaves nil keeps its limit. ErrNotFound if
	// there is no such disk.
	SetDiskRateLimit(id string, l DiskRateLimit) error
	// Pause stops the vCPUs and quiesces the disks (nothing in flight,
	// images synced); ErrConflict if already paused.
	Pause() error
	// Resume restarts paused vCPUs; ErrConflict if not paused.
	Resume() error
	// Snapshot saves the paused machine into the folder dir, an absolute
	// path; ErrConflict if not paused or if a device cannot be saved.
	Snapshot(dir string) error
	// Shutdown presses the ACPI power button: a cooperating guest
	// shuts down cleanly. It returns once the press is delivered.
	Shutdown() error
	// Stop ends the machine at once.
	Stop()
	// Gatherer collects the machine's metrics for GET /metrics.
	Gatherer() prometheus.Gatherer
}

// Machine states reported in Info.State.
const (
	StateRunning = "running"
	StatePaused  = "paused"
	StateStopped = "stopped"
)

// Info is the answer to GET /vm.
type Info struct {
	State         string       `json:"state"` // StateRunning, StatePaused or StateStopped
	VCPUs         int          `json:"vcpus"`
	MemoryMiB     uint64       `json:"memory_mib"`
	Balloon       *BalloonInfo `json:"balloon,omitempty"` // nil without a balloon device
	Disks         []DiskInfo   `json:"disks,omitempty"`
	Shares        []ShareInfo  `json:"shares,omitempty"`
	Vsock         *VsockInfo   `json:"vsock,omitempty"` // nil without a vsock device
	Nets          []NetInfo    `json:"nets,omitempty"`
	UptimeSeconds float64      `json:"uptime_s"`
}

// DiskInfo describes a disk.
type DiskInfo struct {
	ID        string        `json:"id"` // the index among the disks, "0", "1", ...
	Path      string        `json:"path"`
	ReadOnly  bool          `json:"readonly,omitempty"`
	Serial    string        `json:"serial,omitempty"`
	RateLimit DiskRateLimit `json:"rate_limit"`
}

// DiskRateLimit is a disk's token buckets, the body of PATCH
// /vm/disk/{id}: a request needs one token of Ops and one of Bytes for
// each byte it reads or writes.
type DiskRateLimit struct {
	Bytes *Bucket `json:"bytes,omitempty"`
	Ops   *Bucket `json:"ops,omitempty"`
}

// ShareInfo is a host folder served to the guest over virtio-9p.
type ShareInfo struct {
	Path     string `json:"path"`
	Tag      string `json:"tag"`
	ReadOnly bool   `json:"readonly,omitempty"`
	SetID    bool   `json:"setid,omitempty"`
}

// VsockInfo describes the vsock device.
type VsockInfo struct {
	CID         uint64 `json:"cid"`
	Socket      string `json:"socket,omitempty"`
	Connections int    `json:"connections"`
	Accepted    uint64 `json:"accepted"`
	Refused     uint64 `json:"refused"`
}

// NetInfo describes a network device and what it moved: rx is host to
// guest, tx guest to host.
type NetInfo struct {
	ID        string    `json:"id"` // the TAP's name
	MAC       string    `json:"mac"`
	RateLimit RateLimit `json:"rate_limit"`
	RxBytes   uint64    `json:"rx_bytes"`
	RxPackets uint64    `json:"rx_packets"`
	RxDropped uint64    `json:"rx_dropped"`
	TxBytes   uint64    `json:"tx_bytes"`
	TxPackets uint64    `json:"tx_packets"`
	TxDropped uint64    `json:"tx_dropped"`
}

// RateLimit is a network device's token buckets per direction, the body
// of PATCH /vm/net/{id}.
type RateLimit struct {
	RX *Limit `json:"rx,omitempty"`
	TX *Limit `json:"tx,omitempty"`
}

// Limit bounds one direction in bytes and in packets; a frame needs
// tokens of both.
type Limit struct {
	Bytes   Bucket `json:"bytes"`
	Packets Bucket `json:"packets"`
}

// Bucket is a token bucket: Rate a second, up to Burst saved while
// idle. Rate 0 is no limit; Burst 0 is one second's worth.
type Bucket struct {
	Rate  uint64 `json:"rate"`
	Burst uint64 `json:"burst"`
}

// BalloonInfo is the balloon's target and the size the guest reports.
type BalloonInfo struct {
	RequestedMiB uint64 `json:"size_mib"`
	ActualMiB    uint64 `json:"actual_mib"`
}

// BalloonStats is the answer to GET /vm/balloon/stats: the guest's
// virtio-balloon statistics by name (e.g. "free_memory", "swap_in"), when
// it last sent them (zero if never), and the host's view of the VMM.
type BalloonStats struct {
	Stats        map[string]uint64 `json:"stats"`
	UpdatedAt    time.Time         `json:"updated_at,omitzero"`
	HostRSSBytes uint64            `json:"host_rss_bytes"`
}

// Errors a VM returns, wrapped or not, for the server to map to a status.
var (
	ErrInvalid    = errors.New("invalid value")                           // 400
	ErrNoBalloon  = errors.New("the machine has no balloon device")       // 409
	ErrNotRunning = errors.New("the machine is not running")              // 409
	ErrConflict   = errors.New("the machine's state does not allow this") // 409
	ErrNotFound   = errors.New("no such device")                          // 404
)
