package vmdef

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/machine"
)

// ParseDisk parses gvmm run's --disk value FILE[,readonly][,serial=ID].
// As in QEMU's options, ",," is a comma within the file name or the ID.
func ParseDisk(v string) (machine.Disk, error) {
	parts := splitOptions(v)
	d := machine.Disk{Path: parts[0]}
	if d.Path == "" {
		return d, fmt.Errorf("%q: no file", v)
	}
	for _, opt := range parts[1:] {
		switch key, val, hasVal := strings.Cut(opt, "="); {
		case key == "readonly" && !hasVal:
			d.ReadOnly = true
		case key == "serial" && hasVal:
			d.Serial = val
		default:
			return d, fmt.Errorf("%q: unknown option %q (want readonly or serial=ID)", v, opt)
		}
	}
	return d, nil
}

// ParseShare parses gvmm run's --share value DIR,tag=TAG[,readonly][,setid];
// ",," is a comma within the folder's name.
func ParseShare(v string) (machine.Share, error) {
	parts := splitOptions(v)
	s := machine.Share{Path: parts[0]}
	if s.Path == "" {
		return s, fmt.Errorf("%q: no folder", v)
	}
	for _, opt := range parts[1:] {
		switch key, val, hasVal := strings.Cut(opt, "="); {
		case key == "readonly" && !hasVal:
			s.ReadOnly = true
		case key == "setid" && !hasVal:
			s.SetID = true
		case key == "tag" && hasVal:
			s.Tag = val
		default:
			return s, fmt.Errorf("%q: unknown option %q (want tag=TAG, readonly or setid)", v, opt)
		}
	}
	if s.Tag == "" {
		return s, fmt.Errorf("%q: no tag=TAG, the guest's mount tag", v)
	}
	return s, nil
}

// splitOptions splits v at single commas; ",," stands for a comma.
func splitOptions(v string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] != ',':
			cur.WriteByte(v[i])
		case i+1 < len(v) && v[i+1] == ',':
			cur.WriteByte(',')
			i++
		default:
			parts = append(parts, cur.String())
			cur.Reset()
		}
	}
	return append(parts, cur.String())
}

// ParseBalloon parses gvmm run's --balloon value "size=SIZE".
func ParseBalloon(v string) (*machine.BalloonConfig, error) {
	size, ok := strings.CutPrefix(v, "size=")
	if !ok {
		return nil, fmt.Errorf("%q: want size=SIZE", v)
	}
	return ParseBalloonSize(size)
}

// ParseBalloonSize parses a balloon's size: "0" for an empty balloon, or
// a size machine.ParseSize reads.
func ParseBalloonSize(size string) (*machine.BalloonConfig, error) {
	if size == "0" {
		return &machine.BalloonConfig{}, nil
	}
	n, err := machine.ParseSize(size)
	if err != nil {
		return nil, err
	}
	return &machine.BalloonConfig{Size: n}, nil
}

// ParseVsock parses gvmm run's --vsock value cid=N[,socket=PATH]; ",,"
// is a comma in the path.
func ParseVsock(v string) (*machine.VsockConfig, error) {
	c := &machine.VsockConfig{}
	hasCID := false
	for _, opt := range splitOptions(v) {
		switch key, val, _ := strings.Cut(opt, "="); key {
		case "cid":
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%q: cid %q is not a whole number", v, val)
			}
			c.CID, hasCID = n, true
		case "socket":
			if val == "" {
				return nil, fmt.Errorf("%q: empty socket path", v)
			}
			c.Socket = val
		default:
			return nil, fmt.Errorf("%q: unknown option %q: want cid=N,socket=PATH", v, opt)
		}
	}
	if !hasCID {
		return nil, fmt.Errorf("%q: want cid=N,socket=PATH", v)
	}
	return c, nil
}

// ParseNet parses gvmm run's --net value tap=NAME[,mac=MAC] or
// fd=N[,mac=MAC]. For fd=N it checks that N is an open descriptor above
// stderr and wraps it in the returned Net's File.
func ParseNet(v string) (machine.Net, error) {
	var n machine.Net
	fd := -1
	for _, opt := range strings.Split(v, ",") {
		switch key, val, _ := strings.Cut(opt, "="); key {
		case "tap":
			if val == "" {
				return n, fmt.Errorf("%q: empty TAP name", v)
			}
			n.Tap = val
		case "fd":
			i, err := strconv.Atoi(val)
			if err != nil || i <= 2 {
				return n, fmt.Errorf("%q: fd %q: want an open descriptor number above 2", v, val)
			}
			fd = i
		case "mac":
			mac, err := net.ParseMAC(val)
			if err != nil || len(mac) != 6 {
				return n, fmt.Errorf("%q: mac %q: want six hex bytes as 52:54:00:12:34:56", v, val)
			}
			n.MAC = mac
		default:
			return n, fmt.Errorf("%q: unknown option %q: want tap=NAME or fd=N, and mac=MAC", v, opt)
		}
	}
	switch {
	case (n.Tap == "") == (fd < 0):
		return n, fmt.Errorf("%q: want one of tap=NAME and fd=N", v)
	case fd >= 0:
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return n, fmt.Errorf("%q: fd %d: %w", v, fd, err)
		}
		n.File = os.NewFile(uintptr(fd), fmt.Sprintf("tap-fd-%d", fd))
	}
	return n, nil
}

// ParseOnReboot parses "exit" or "restart".
func ParseOnReboot(s string) (machine.RebootAction, error) {
	switch s {
	case "exit":
		return machine.RebootExit, nil
	case "restart":
		return machine.RebootRestart, nil
	}
	return 0, fmt.Errorf("%q: want exit or restart", s)
}
