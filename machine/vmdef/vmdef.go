// Package vmdef is gvmm's VM definition: a JSON file with the options of
// "gvmm run", kept next to the disk images it names, as libvirt keeps a
// domain's XML.
//
//	{"name": "web1", "kernel": "/srv/vm/vmlinuz", "memory": "512M",
//	 "disks": [{"path": "web1.img", "serial": "web1-root"}]}
//
// Parsing is strict: a syntax error, an unknown or repeated field, a value
// of the wrong type and an invalid value are each an *Error with the file,
// line and column, and what was expected. The parsers of gvmm run's flags
// are here too, so that both forms accept the same values.
package vmdef

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/virtio/blk"
	vnet "github.com/gvmm-dev/gvmm/virtio/net"
)

// MaxFileBytes bounds a definition file.
const MaxFileBytes = 1 << 20

// Definition is a named machine configuration.
type Definition struct {
	Name string
	// Config has absolute paths; Console, ConsoleIn, Log and KVMDevice
	// are left for the caller.
	Config machine.Config
	// User is whom the VMM runs as, UID[:GID] (numbers or names), confined
	// (gvmm run --user); empty for the host's default.
	User string
	// Limits are the VMM's cgroup limits; zero values do not limit.
	Limits Limits

	file string
	locs map[string]loc // by machine.ConfigError.Field
}

// loc is where a value is in the file, and its JSON path.
type loc struct {
	line, col int
	field     string
}

// Error is a definition that cannot be used.
type Error struct {
	File   string
	Line   int    // 1-based; with Column, 0 when not about one place
	Column int    // 1-based, in bytes
	Field  string // JSON path of the value, like "disks[1].serial"; "" for the whole file
	Msg    string
	Err    error // the cause, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// namePattern keeps names usable as file names everywhere.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckName reports whether name can name a VM.
func CheckName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("name %q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// ParseFile reads and parses the definition at path; relative paths in
// it are relative to the file's folder.
func ParseFile(path string) (*Definition, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("vmdef: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("vmdef: reading %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, &Error{File: path, Msg: fmt.Sprintf("larger than %d bytes", MaxFileBytes)}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("vmdef: %w", err)
	}
	return Parse(path, data, filepath.Dir(abs))
}

// Parse parses a definition read from file (named in errors), resolving
// relative paths against baseDir, and validates its values as
// machine.New would, except for the host-dependent vCPU guard (see
// CheckHost). It does not look at the files named.
func Parse(file string, data []byte, baseDir string) (*Definition, error) {
	p := &parser{file: file, data: data, base: baseDir}
	d, err := p.definition()
	if err != nil {
		return nil, err
	}
	d.file, d.locs = file, p.locs
	c := d.Config
	c.AllowCPUOvercommit = true // a definition may move to a larger host
	if err := d.located(c.Validate()); err != nil {
		return nil, err
	}
	return d, nil
}

// CheckHost applies the checks that depend on this host: more vCPUs than
// it has CPUs is refused unless allow_cpu_overcommit is set.
func (d *Definition) CheckHost() error { return d.located(d.Config.Validate()) }

// CheckFiles checks that the kernel, initrd and disk images exist.
func (d *Definition) CheckFiles() error {
	c := d.Config
	check := func(field, path string, dev bool) error {
		st, err := os.Stat(path)
		switch {
		case err != nil:
			return d.errorFor(field, err, "%v", err)
		case st.Mode().IsRegular(), dev && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
			return nil
		}
		return d.errorFor(field, nil, "%s is not a regular file", path)
	}
	if err := check("Kernel", c.Kernel, false); err != nil {
		return err
	}
	if c.Initrd != "" {
		if err := check("Initrd", c.Initrd, false); err != nil {
			return err
		}
	}
	for i, disk := range c.Disks {
		if err := check(fmt.Sprintf("Disks[%d].Path", i), disk.Path, true); err != nil {
			return err
		}
	}
	for i, share := range c.Shares {
		field := fmt.Sprintf("Shares[%d].Path", i)
		if st, err := os.Stat(share.Path); err != nil {
			return d.errorFor(field, err, "%v", err)
		} else if !st.IsDir() {
			return d.errorFor(field, nil, "%s is not a folder", share.Path)
		}
	}
	return nil
}

// located turns a machine.ConfigError into an *Error at its value.
func (d *Definition) located(err error) error {
	ce, ok := errors.AsType[*machine.ConfigError](err)
	if !ok {
		return err
	}
	return d.errorFor(ce.Field, err, "%s", ce.Reason)
}

// errorFor is an *Error at the value of the machine.Config field.
func (d *Definition) errorFor(field string, cause error, format string, a ...any) error {
	e := &Error{File: d.file, Msg: fmt.Sprintf(format, a...), Err: cause}
	if l, ok := d.locs[field]; ok {
		e.Line, e.Column, e.Field = l.line, l.col, l.field
	}
	return e
}

// FormatSize writes a byte count as ParseSize reads it, in the largest
// unit that divides it.
func FormatSize(n uint64) string {
	for _, u := range []struct {
		suffix string
		size   uint64
	}{{"T", 1 << 40}, {"G", machine.GiB}, {"M", machine.MiB}, {"K", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.suffix)
		}
	}
	return fmt.Sprintf("%dK", n>>10) // machine sizes are whole pages
}

// Limits bound what the VMM process takes of the host (cgroup v2).
type Limits struct {
	CPUs   float64 // cpu.max, in CPUs: 1.5 is 150 ms of CPU time every 100 ms
	Memory uint64  // memory.max, in bytes: guest RAM and the VMM's own
}

// ParseCPULimit checks a CPU limit: more than 0, at most machine.MaxCPUs.
func ParseCPULimit(cpus float64) error {
	if !(cpus > 0 && cpus <= machine.MaxCPUs) {
		return fmt.Errorf("%v CPUs: want more than 0 and at most %d", cpus, machine.MaxCPUs)
	}
	return nil
}

type fileLimits struct {
	CPUs   float64 `json:"cpus,omitempty"`
	Memory string  `json:"memory,omitempty"`
}

// fileDisk and fileBalloon are the JSON forms of disks and the balloon.
type fileDisk struct {
	Path     string    `json:"path"`
	ReadOnly bool      `json:"readonly,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	Limit    blk.Limit `json:"rate_limit,omitzero"`
}

type fileShare struct {
	Path     string `json:"path"`
	Tag      string `json:"tag"`
	ReadOnly bool   `json:"readonly,omitempty"`
	SetID    bool   `json:"setid,omitempty"`
}

type fileBalloon struct {
	Size string `json:"size"`
}

type fileNet struct {
	Tap    string      `json:"tap"`
	MAC    string      `json:"mac,omitempty"`
	Limits vnet.Limits `json:"rate_limit,omitzero"`
}

type fileVsock struct {
	CID    uint64 `json:"cid"`
	Socket string `json:"socket,omitempty"`
}

// MarshalJSON writes the definition in its documented form, with every
// path absolute and only the fields that differ from the defaults.
func (d *Definition) MarshalJSON() ([]byte, error) {
	c := d.Config
	out := struct {
		Name               string       `json:"name"`
		Kernel             string       `json:"kernel"`
		Initrd             string       `json:"initrd,omitempty"`
		Cmdline            string       `json:"cmdline,omitempty"`
		CPUs               int          `json:"cpus,omitempty"`
		Memory             string       `json:"memory,omitempty"`
		Disks              []fileDisk   `json:"disks,omitempty"`
		Shares             []fileShare  `json:"shares,omitempty"`
		Balloon            *fileBalloon `json:"balloon,omitempty"`
		Vsock              *fileVsock   `json:"vsock,omitempty"`
		Nets               []fileNet    `json:"nets,omitempty"`
		Mergeable          bool         `json:"mergeable,omitempty"`
		HugePages          bool         `json:"hugepages,omitempty"`
		AllowCPUOvercommit bool         `json:"allow_cpu_overcommit,omitempty"`
		OnReboot           string       `json:"on_reboot,omitempty"`
		User               string       `json:"user,omitempty"`
		Limits             *fileLimits  `json:"limits,omitempty"`
	}{
		Name: d.Name, Kernel: c.Kernel, Initrd: c.Initrd, Cmdline: c.Cmdline, CPUs: c.CPUs,
		Mergeable: c.Mergeable, HugePages: c.HugePages, AllowCPUOvercommit: c.AllowCPUOvercommit,
		User: d.User,
	}
	if d.Limits != (Limits{}) {
		out.Limits = &fileLimits{CPUs: d.Limits.CPUs}
		if d.Limits.Memory != 0 {
			out.Limits.Memory = FormatSize(d.Limits.Memory)
		}
	}
	if c.Memory != 0 {
		out.Memory = FormatSize(c.Memory)
	}
	for _, disk := range c.Disks {
		out.Disks = append(out.Disks, fileDisk{disk.Path, disk.ReadOnly, disk.Serial, disk.Limit})
	}
	for _, share := range c.Shares {
		out.Shares = append(out.Shares, fileShare{share.Path, share.Tag, share.ReadOnly, share.SetID})
	}
	if c.Balloon != nil {
		out.Balloon = &fileBalloon{"0"}
		if c.Balloon.Size != 0 {
			out.Balloon.Size = FormatSize(c.Balloon.Size)
		}
	}
	if v := c.Vsock; v != nil {
		out.Vsock = &fileVsock{v.CID, v.Socket}
	}
	for _, n := range c.Nets {
		f := fileNet{Tap: n.Tap, Limits: n.Limits}
		if n.MAC != nil {
			f.MAC = n.MAC.String()
		}
		out.Nets = append(out.Nets, f)
	}
	if c.OnReboot == machine.RebootRestart {
		out.OnReboot = "restart"
	}
	return json.Marshal(out)
}

// Marshal is the definition as it is stored: indented JSON and a newline.
func (d *Definition) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("vmdef: %w", err)
	}
	return append(b, '\n'), nil
}
