package vmdef

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gvmm-dev/gvmm/machine"
)

// parser walks a definition's JSON keeping byte offsets, which
// encoding/json does not report for values it rejects.
type parser struct {
	file string
	data []byte
	base string
	locs map[string]loc
}

// member is one key of an object and its value.
type member struct {
	key    string
	keyOff int
	val    json.RawMessage
	valOff int
}

// errAt is an *Error at the byte offset off of the file.
func (p *parser) errAt(off int, field, format string, a ...any) error {
	line, col := lineCol(p.data, off)
	return &Error{File: p.file, Line: line, Column: col, Field: field, Msg: fmt.Sprintf(format, a...)}
}

// lineCol turns a byte offset into a 1-based line and column.
func lineCol(data []byte, off int) (line, col int) {
	off = min(max(off, 0), len(data))
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	return line, off - (bytes.LastIndexByte(before, '\n') + 1) + 1
}

// skip returns the offset of the first byte at or after off that is not
// white space or one of the separators in seps.
func (p *parser) skip(off int, seps string) int {
	for off < len(p.data) && strings.IndexByte(" \t\r\n"+seps, p.data[off]) >= 0 {
		off++
	}
	return off
}

// remember records where the value of a machine.Config field is.
func (p *parser) remember(configField, jsonField string, off int) {
	line, col := lineCol(p.data, off)
	p.locs[configField] = loc{line, col, jsonField}
}

func (p *parser) definition() (*Definition, error) {
	p.locs = map[string]loc{}
	dec := json.NewDecoder(bytes.NewReader(p.data))
	var doc json.RawMessage
	if err := dec.Decode(&doc); err != nil {
		return nil, p.syntaxError(err)
	}
	end := int(dec.InputOffset())
	if _, err := dec.Token(); err != io.EOF {
		return nil, p.errAt(p.skip(end, ""), "", "unexpected data after the JSON object")
	}
	start := p.skip(0, "")
	members, err := p.object(doc, start, "")
	if err != nil {
		return nil, err
	}
	d := &Definition{}
	c := &d.Config
	seen := map[string]bool{}
	fields := map[string]func(m member) error{
		"name": func(m member) (err error) {
			if d.Name, err = p.str(m, "name"); err == nil {
				if err = CheckName(d.Name); err != nil {
					return p.errAt(m.valOff, "name", "%v", err)
				}
			}
			return err
		},
		"kernel":  func(m member) (err error) { c.Kernel, err = p.path(m, "kernel", "Kernel"); return err },
		"initrd":  func(m member) (err error) { c.Initrd, err = p.path(m, "initrd", "Initrd"); return err },
		"cmdline": func(m member) (err error) { c.Cmdline, err = p.str(m, "cmdline"); return err },
		"cpus": func(m member) error {
			p.remember("CPUs", "cpus", m.valOff)
			n, err := strconv.Atoi(string(m.val))
			switch {
			case err != nil && isNumber(m.val):
				return p.errAt(m.valOff, "cpus", "want a whole number of vCPUs from 1 to %d, got %s", machine.MaxCPUs, shown(m.val))
			case err != nil:
				return p.typeError(m, "cpus", "a whole number of vCPUs")
			case n < 1:
				return p.errAt(m.valOff, "cpus", "%d vCPUs: want 1 to %d", n, machine.MaxCPUs)
			}
			c.CPUs = n
			return nil
		},
		"memory": func(m member) error {
			p.remember("Memory", "memory", m.valOff)
			s, err := p.str(m, "memory")
			if err != nil {
				return err
			}
			if c.Memory, err = machine.ParseSize(s); err != nil {
				return p.errAt(m.valOff, "memory", "%v", err)
			}
			return nil
		},
		"disks": func(m member) error {
			p.remember("Disks", "disks", m.valOff)
			return p.disks(m, c)
		},
		"shares": func(m member) error {
			p.remember("Shares", "shares", m.valOff)
			return p.shares(m, c)
		},
		"balloon": func(m member) error {
			b, err := p.balloon(m)
			c.Balloon = b
			return err
		},
		"vsock": func(m member) (err error) { c.Vsock, err = p.vsock(m); return err },
		"nets": func(m member) error {
			p.remember("Nets", "nets", m.valOff)
			return p.nets(m, c)
		},
		"mergeable": func(m member) (err error) { c.Mergeable, err = p.boolean(m, "mergeable"); return err },
		"hugepages": func(m member) (err error) { c.HugePages, err = p.boolean(m, "hugepages"); return err },
		"allow_cpu_overcommit": func(m member) (err error) {
			c.AllowCPUOvercommit, err = p.boolean(m, "allow_cpu_overcommit")
			return err
		},
		"user": func(m member) (err error) {
			if d.User, err = p.str(m, "user"); err == nil && d.User == "" {
				err = p.errAt(m.valOff, "user", "want UID[:GID], numbers or names")
			}
			return err
		},
		"limits": func(m member) (err error) { d.Limits, err = p.limits(m); return err },
		"on_reboot": func(m member) error {
			s, err := p.str(m, "on_reboot")
			if err != nil {
				return err
			}
			if c.OnReboot, err = ParseOnReboot(s); err != nil {
				return p.errAt(m.valOff, "on_reboot", "%v", err)
			}
			return nil
		},
	}
	for _, m := range members {
		set, ok := fields[m.key]
		if !ok {
			return nil, p.unknownField(m, "", fields)
		}
		seen[m.key] = true
		if err := set(m); err != nil {
			return nil, err
		}
	}
	for _, req := range []struct{ key, what string }{
		{"name", "the VM's name"},
		{"kernel", "the kernel to boot: a bzImage or an ELF vmlinux"},
	} {
		if !seen[req.key] {
			return nil, p.errAt(start, "", "missing %q, %s", req.key, req.what)
		}
	}
	return d, nil
}

// list calls each for every object of the JSON list in m, with its
// index, file offset, field name and members.
func (p *parser) list(m member, field, what string, each func(i, off int, field string, members []member) error) error {
	if len(m.val) == 0 || m.val[0] != '[' {
		return p.typeError(m, field, what)
	}
	dec := json.NewDecoder(bytes.NewReader(m.val))
	if _, err := dec.Token(); err != nil { // '['; the document is valid
		return p.syntaxError(err)
	}
	for i := 0; dec.More(); i++ {
		off := p.skip(m.valOff+int(dec.InputOffset()), ",")
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return p.syntaxError(err)
		}
		item := fmt.Sprintf("%s[%d]", field, i)
		members, err := p.object(raw, off, item)
		if err != nil {
			return err
		}
		if err := each(i, off, item, members); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) disks(m member, c *machine.Config) error {
	return p.list(m, "disks", "a list of disks", func(i, off int, field string, members []member) error {
		var disk machine.Disk
		hasPath := false
		for _, dm := range members {
			var err error
			sub := field + "." + dm.key
			switch dm.key {
			case "path":
				hasPath = true
				disk.Path, err = p.path(dm, sub, fmt.Sprintf("Disks[%d].Path", i))
			case "readonly":
				disk.ReadOnly, err = p.boolean(dm, sub)
			case "serial":
				p.remember(fmt.Sprintf("Disks[%d].Serial", i), sub, dm.valOff)
				disk.Serial, err = p.str(dm, sub)
			case "rate_limit":
				p.remember(fmt.Sprintf("Disks[%d].Limit", i), sub, dm.valOff)
				err = p.rateLimit(dm, sub, &disk.Limit, `{"bytes": {"rate": N, "burst": N}, "ops": {...}}`)
			default:
				err = p.unknownField(dm, field, map[string]func(member) error{"path": nil, "readonly": nil, "serial": nil, "rate_limit": nil})
			}
			if err != nil {
				return err
			}
		}
		if !hasPath {
			return p.errAt(off, field, `missing "path", the disk's raw image`)
		}
		c.Disks = append(c.Disks, disk)
		return nil
	})
}

// rateLimit decodes a device's "rate_limit" into dst, refusing unknown
// fields and numbers that are not whole and from 0; want shows its form.
func (p *parser) rateLimit(m member, field string, dst any, want string) error {
	dec := json.NewDecoder(bytes.NewReader(m.val))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return p.errAt(m.valOff, field, "%v: want %s", err, want)
	}
	return nil
}

func (p *parser) shares(m member, c *machine.Config) error {
	return p.list(m, "shares", "a list of shares", func(i, off int, field string, members []member) error {
		var share machine.Share
		seen := map[string]bool{}
		for _, sm := range members {
			var err error
			sub := field + "." + sm.key
			seen[sm.key] = true
			switch sm.key {
			case "path":
				share.Path, err = p.path(sm, sub, fmt.Sprintf("Shares[%d].Path", i))
			case "tag":
				p.remember(fmt.Sprintf("Shares[%d].Tag", i), sub, sm.valOff)
				share.Tag, err = p.str(sm, sub)
			case "readonly":
				share.ReadOnly, err = p.boolean(sm, sub)
			case "setid":
				share.SetID, err = p.boolean(sm, sub)
			default:
				err = p.unknownField(sm, field, map[string]func(member) error{"path": nil, "tag": nil, "readonly": nil, "setid": nil})
			}
			if err != nil {
				return err
			}
		}
		if !seen["path"] {
			return p.errAt(off, field, `missing "path", the host folder`)
		}
		if !seen["tag"] {
			return p.errAt(off, field, `missing "tag", the guest's mount tag`)
		}
		c.Shares = append(c.Shares, share)
		return nil
	})
}

func (p *parser) nets(m member, c *machine.Config) error {
	return p.list(m, "nets", "a list of network devices", func(i, off int, field string, members []member) error {
		var n machine.Net
		for _, nm := range members {
			var err error
			sub := field + "." + nm.key
			switch nm.key {
			case "tap":
				p.remember(fmt.Sprintf("Nets[%d].Tap", i), sub, nm.valOff)
				n.Tap, err = p.str(nm, sub)
				if err == nil && n.Tap == "" {
					err = p.errAt(nm.valOff, sub, "an empty TAP name")
				}
			case "mac":
				p.remember(fmt.Sprintf("Nets[%d].MAC", i), sub, nm.valOff)
				var s string
				if s, err = p.str(nm, sub); err == nil {
					if n.MAC, err = net.ParseMAC(s); err != nil || len(n.MAC) != 6 {
						err = p.errAt(nm.valOff, sub, "%q: want six hex bytes as 52:54:00:12:34:56", s)
					}
				}
			case "rate_limit":
				p.remember(fmt.Sprintf("Nets[%d].Limits", i), sub, nm.valOff)
				err = p.rateLimit(nm, sub, &n.Limits, `{"rx": {"bytes": {"rate": N, "burst": N}, "packets": {...}}, "tx": {...}}`)
			default:
				err = p.unknownField(nm, field, map[string]func(member) error{"tap": nil, "mac": nil, "rate_limit": nil})
			}
			if err != nil {
				return err
			}
		}
		if n.Tap == "" {
			return p.errAt(off, field, `missing "tap", the TAP interface's name`)
		}
		c.Nets = append(c.Nets, n)
		return nil
	})
}

func (p *parser) balloon(m member) (*machine.BalloonConfig, error) {
	members, err := p.object(m.val, m.valOff, "balloon")
	if err != nil {
		return nil, err
	}
	b := &machine.BalloonConfig{}
	for _, bm := range members {
		if bm.key != "size" {
			return nil, p.unknownField(bm, "balloon", map[string]func(member) error{"size": nil})
		}
		s, err := p.str(bm, "balloon.size")
		if err != nil {
			return nil, err
		}
		if b, err = ParseBalloonSize(s); err != nil {
			return nil, p.errAt(bm.valOff, "balloon.size", "%v", err)
		}
	}
	return b, nil
}

func (p *parser) limits(m member) (Limits, error) {
	var l Limits
	members, err := p.object(m.val, m.valOff, "limits")
	if err != nil {
		return l, err
	}
	for _, lm := range members {
		switch lm.key {
		case "cpus":
			if err := json.Unmarshal(lm.val, &l.CPUs); err != nil {
				return l, p.typeError(lm, "limits.cpus", "a number of CPUs")
			}
			if err := ParseCPULimit(l.CPUs); err != nil {
				return l, p.errAt(lm.valOff, "limits.cpus", "%v", err)
			}
		case "memory":
			s, err := p.str(lm, "limits.memory")
			if err != nil {
				return l, err
			}
			if l.Memory, err = machine.ParseSize(s); err != nil {
				return l, p.errAt(lm.valOff, "limits.memory", "%v", err)
			}
		default:
			return l, p.unknownField(lm, "limits", map[string]func(member) error{"cpus": nil, "memory": nil})
		}
	}
	return l, nil
}

func (p *parser) vsock(m member) (*machine.VsockConfig, error) {
	members, err := p.object(m.val, m.valOff, "vsock")
	if err != nil {
		return nil, err
	}
	v := &machine.VsockConfig{}
	hasCID := false
	for _, vm := range members {
		switch vm.key {
		case "cid":
			hasCID = true
			p.remember("Vsock.CID", "vsock.cid", vm.valOff)
			if v.CID, err = strconv.ParseUint(string(vm.val), 10, 64); err != nil {
				return nil, p.typeError(vm, "vsock.cid", "the guest's CID, a whole number from 3")
			}
		case "socket":
			v.Socket, err = p.path(vm, "vsock.socket", "Vsock.Socket")
		default:
			err = p.unknownField(vm, "vsock", map[string]func(member) error{"cid": nil, "socket": nil})
		}
		if err != nil {
			return nil, err
		}
	}
	if !hasCID {
		return nil, p.errAt(m.valOff, "vsock", `missing "cid", the guest's address (3 or more)`)
	}
	return v, nil
}

// object decodes the members of the JSON object raw, which starts at the
// file offset off; field names it in errors.
func (p *parser) object(raw json.RawMessage, off int, field string) ([]member, error) {
	if len(raw) == 0 || raw[0] != '{' {
		what := "the definition must be a JSON object"
		if field != "" {
			what = "want an object"
		}
		return nil, p.errAt(off, field, "%s, got %s", what, shown(raw))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil, p.syntaxError(err)
	}
	var out []member
	seen := map[string]bool{}
	for dec.More() {
		keyOff := p.skip(off+int(dec.InputOffset()), ",")
		tok, err := dec.Token()
		if err != nil {
			return nil, p.syntaxError(err)
		}
		key, _ := tok.(string) // keys are strings in valid JSON
		if seen[key] {
			return nil, p.errAt(keyOff, field, "field %q appears twice", key)
		}
		seen[key] = true
		m := member{key: key, keyOff: keyOff, valOff: p.skip(off+int(dec.InputOffset()), ":")}
		if err := dec.Decode(&m.val); err != nil {
			return nil, p.syntaxError(err)
		}
		out = append(out, m)
	}
	return out, nil
}

func (p *parser) unknownField(m member, parent string, known map[string]func(member) error) error {
	names := make([]string, 0, len(known))
	for k := range known {
		names = append(names, strconv.Quote(k))
	}
	slices.Sort(names)
	return p.errAt(m.keyOff, parent, "unknown field %q (known: %s)", m.key, strings.Join(names, ", "))
}

func (p *parser) syntaxError(err error) error {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		// The offset is just past the byte that broke the syntax.
		return p.errAt(max(int(se.Offset)-1, 0), "", "invalid JSON: %v", err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return p.errAt(len(p.data), "", "invalid JSON: the file ends early")
	}
	return &Error{File: p.file, Msg: fmt.Sprintf("invalid JSON: %v", err), Err: err}
}

func (p *parser) typeError(m member, field, want string) error {
	return p.errAt(m.valOff, field, "want %s, got %s", want, shown(m.val))
}

func (p *parser) str(m member, field string) (string, error) {
	var s string
	if len(m.val) == 0 || m.val[0] != '"' || json.Unmarshal(m.val, &s) != nil {
		return "", p.typeError(m, field, "a string")
	}
	if strings.ContainsRune(s, 0) {
		return "", p.errAt(m.valOff, field, "a NUL byte in the string")
	}
	return s, nil
}

func (p *parser) boolean(m member, field string) (bool, error) {
	switch string(m.val) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, p.typeError(m, field, "true or false")
}

// path reads a file path, made absolute against the definition's folder.
func (p *parser) path(m member, field, configField string) (string, error) {
	p.remember(configField, field, m.valOff)
	s, err := p.str(m, field)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", p.errAt(m.valOff, field, "want a file path, got an empty string")
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(p.base, s)
	}
	return filepath.Clean(s), nil
}

func isNumber(v json.RawMessage) bool {
	return len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9')
}

// shown describes a JSON value for an error message.
func shown(v json.RawMessage) string {
	switch {
	case len(v) == 0:
		return "nothing"
	case v[0] == '{':
		return "an object"
	case v[0] == '[':
		return "a list"
	case string(v) == "null":
		return "null"
	case len(v) > 40:
		return string(v[:40]) + "..."
	}
	return string(v)
}
