// Package hostproto is what the KVM test host's launcher and its init
// agree on: the configuration file and the lines reported on the console.
package hostproto

import "time"

// ConfigPath is where the launcher puts Config in the initramfs.
const ConfigPath = "/kvmhost.json"

// Lines the init writes to the kernel console (the first serial port).
const (
	ExitMarker  = "GVMM-KVMHOST-EXIT "
	ErrorMarker = "GVMM-KVMHOST-ERROR "
	// AliveMarker is written every AliveEvery while the host runs: a
	// host whose user space stops being scheduled is frozen.
	AliveMarker = "GVMM-KVMHOST-ALIVE"
	// ReadyMarker is written once the payload's port is open and raw:
	// the port drops what arrives before, so the launcher holds piped
	// input until then.
	ReadyMarker = "GVMM-KVMHOST-READY"
)

// AliveEvery is the period of the AliveMarker lines.
const AliveEvery = 5 * time.Second

// StatusSetupFailed is reported when the payload could not be run.
const StatusSetupFailed = 125

// Config tells the init what to do.
type Config struct {
	Modules []string // module files to load, in order
	TTY     string   // device the payload's stdio is attached to
	Args    []string // payload command line
	Env     []string
	Dir     string
}
