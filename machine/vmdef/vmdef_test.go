package vmdef

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/machine"
)

// example is the definition of the README.
const example = `{"name": "web1", "kernel": "/srv/vm/vmlinuz", "initrd": "/srv/vm/initrd.img", "cmdline": "console=ttyS0", "cpus": 2, "memory": "512M", "disks": [{"path": "/srv/vm/web1.img", "readonly": false, "serial": "web1-root"}], "balloon": {"size": "0"}, "mergeable": true}`

func TestParseExample(t *testing.T) {
	d, err := Parse("web1.json", []byte(example), "/etc")
	require.NoError(t, err)
	assert.Equal(t, "web1", d.Name)
	assert.Equal(t, machine.Config{
		Kernel: "/srv/vm/vmlinuz", Initrd: "/srv/vm/initrd.img", Cmdline: "console=ttyS0",
		CPUs: 2, Memory: 512 * machine.MiB,
		Disks:     []machine.Disk{{Path: "/srv/vm/web1.img", Serial: "web1-root"}},
		Balloon:   &machine.BalloonConfig{},
		Mergeable: true,
	}, d.Config)
}

func TestParseMinimalAndRelativePaths(t *testing.T) {
	d, err := Parse("vm.json", []byte(`{"name":"a","kernel":"k/vmlinuz","disks":[{"path":"../img/a.img","readonly":true}],
		"balloon":{},"on_reboot":"restart","hugepages":true,"allow_cpu_overcommit":true}`), "/srv/vm")
	require.NoError(t, err)
	assert.Equal(t, machine.Config{
		Kernel: "/srv/vm/k/vmlinuz", Disks: []machine.Disk{{Path: "/srv/img/a.img", ReadOnly: true}},
		Balloon: &machine.BalloonConfig{}, OnReboot: machine.RebootRestart, HugePages: true, AllowCPUOvercommit: true,
	}, d.Config)
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, src := range []string{
		example,
		`{"name":"b","kernel":"/k","memory":"1536M","balloon":{"size":"256M"},"on_reboot":"restart","cpus":1}`,
		`{"name":"c","kernel":"/k","memory":"4G","disks":[{"path":"/a","readonly":true},{"path":"/b"}],"allow_cpu_overcommit":true,"hugepages":true}`,
		`{"name":"c","kernel":"/k","disks":[{"path":"/a","serial":"root","rate_limit":{"bytes":{"rate":104857600,"burst":1048576},"ops":{"rate":1000}}},{"path":"/b","rate_limit":{"ops":{"rate":10}}}]}`,
		`{"name":"d","kernel":"/k","shares":[{"path":"/srv/data","tag":"data","readonly":true},{"path":"/home","tag":"home"},{"path":"/srv/root","tag":"root","setid":true}]}`,
		`{"name":"d","kernel":"/k","vsock":{"cid":3,"socket":"/run/d.vsock"}}`,
		`{"name":"e","kernel":"/k","vsock":{"cid":4294967294}}`,
		`{"name":"e","kernel":"/k","user":"gvmm","limits":{"cpus":0.5,"memory":"1G"}}`,
		`{"name":"e","kernel":"/k","limits":{"memory":"300M"}}`,
		`{"name":"f","kernel":"/k","nets":[{"tap":"tap0","mac":"52:54:00:12:34:56"},{"tap":"tap1","rate_limit":{"rx":{"bytes":{"rate":1000000,"burst":100000}},"tx":{"packets":{"rate":1000}}}}]}`,
	} {
		d, err := Parse("in.json", []byte(src), "/")
		require.NoError(t, err)
		out, err := d.Marshal()
		require.NoError(t, err)
		again, err := Parse("out.json", out, "/elsewhere")
		require.NoError(t, err, "%s", out)
		assert.Equal(t, d.Name, again.Name)
		assert.Equal(t, d.Config, again.Config, "%s", out)
		assert.Equal(t, d.User, again.User, "%s", out)
		assert.Equal(t, d.Limits, again.Limits, "%s", out)
	}
}

func TestParseUserAndLimits(t *testing.T) {
	d, err := Parse("vm.json", []byte(`{"name":"a","kernel":"/k","user":"1000:1000","limits":{"cpus":1.5,"memory":"400M"}}`), "/")
	require.NoError(t, err)
	assert.Equal(t, "1000:1000", d.User)
	assert.Equal(t, Limits{CPUs: 1.5, Memory: 400 * machine.MiB}, d.Limits)
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[uint64]string{
		512 * machine.MiB: "512M", 2 * machine.GiB: "2G", 1536 * machine.MiB: "1536M",
		1 << 40: "1T", 68 << 10: "68K",
	} {
		assert.Equal(t, want, FormatSize(n))
		back, err := machine.ParseSize(want)
		require.NoError(t, err)
		assert.Equal(t, n, back)
	}
}

// TestParseErrors checks that each malformed definition is refused with
// the place and the reason.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, src string
		want      string // the whole message
	}{
		{"bad JSON", "{\"name\": \"a\",\n \"kernel\": /k}",
			`vm.json:2:12: invalid JSON: invalid character '/' looking for beginning of value`},
		{"truncated", `{"name": "a", "kernel": "/k"`, `vm.json:1:29: invalid JSON: the file ends early`},
		{"empty", ``, `vm.json:1:1: invalid JSON: the file ends early`},
		{"trailing data", `{"name": "a", "kernel": "/k"} {}`, `vm.json:1:31: unexpected data after the JSON object`},
		{"not an object", `["a"]`, `vm.json:1:1: the definition must be a JSON object, got a list`},
		{"unknown field", "{\"name\": \"a\",\n  \"kernel\": \"/k\",\n  \"memroy\": \"1G\"}",
			`vm.json:3:3: unknown field "memroy" (known: "allow_cpu_overcommit", "balloon", "cmdline", "cpus", "disks", "hugepages", "initrd", "kernel", "limits", "memory", "mergeable", "name", "nets", "on_reboot", "shares", "user", "vsock")`},
		{"limits cpus 0", `{"name": "a", "kernel": "/k", "limits": {"cpus": 0}}`,
			`vm.json:1:50: limits.cpus: 0 CPUs: want more than 0 and at most 254`},
		{"limits cpus string", `{"name": "a", "kernel": "/k", "limits": {"cpus": "2"}}`,
			`vm.json:1:50: limits.cpus: want a number of CPUs, got "2"`},
		{"limits memory", `{"name": "a", "kernel": "/k", "limits": {"memory": "lots"}}`,
			`vm.json:1:52: limits.memory: size "lots": want a positive whole number with an optional K, M, G or T suffix`},
		{"limits unknown", `{"name": "a", "kernel": "/k", "limits": {"io": 1}}`,
			`vm.json:1:42: limits: unknown field "io" (known: "cpus", "memory")`},
		{"user empty", `{"name": "a", "kernel": "/k", "user": ""}`, `vm.json:1:39: user: want UID[:GID], numbers or names`},
		{"field twice", `{"name": "a", "kernel": "/k", "name": "b"}`, `vm.json:1:31: field "name" appears twice`},
		{"memory 12Q", "{\"name\": \"a\", \"kernel\": \"/k\",\n\"memory\": \"12Q\"}",
			`vm.json:2:11: memory: size "12Q": want a positive whole number with an optional K, M, G or T suffix`},
		{"memory number", `{"name": "a", "kernel": "/k", "memory": 512}`, `vm.json:1:41: memory: want a string, got 512`},
		{"memory too small", `{"name": "a", "kernel": "/k", "memory": "16M"}`,
			`vm.json:1:41: memory: memory 16 MiB: want 64 MiB to 1024 GiB`},
		{"missing kernel", `  {"name": "a"}`, `vm.json:1:3: missing "kernel", the kernel to boot: a bzImage or an ELF vmlinux`},
		{"missing name", `{"kernel": "/k"}`, `vm.json:1:1: missing "name", the VM's name`},
		{"bad name", `{"name": "a/b", "kernel": "/k"}`,
			`vm.json:1:10: name: name "a/b": want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit`},
		{"empty kernel", `{"name": "a", "kernel": ""}`, `vm.json:1:25: kernel: want a file path, got an empty string`},
		{"cpus string", `{"name": "a", "kernel": "/k", "cpus": "two"}`, `vm.json:1:39: cpus: want a whole number of vCPUs, got "two"`},
		{"cpus fraction", `{"name": "a", "kernel": "/k", "cpus": 1.5}`, `vm.json:1:39: cpus: want a whole number of vCPUs from 1 to 254, got 1.5`},
		{"cpus zero", `{"name": "a", "kernel": "/k", "cpus": 0}`, `vm.json:1:39: cpus: 0 vCPUs: want 1 to 254`},
		{"cpus too many", `{"name": "a", "kernel": "/k", "cpus": 255}`, `vm.json:1:39: cpus: 255 vCPUs: want 1 to 254`},
		{"bool as string", `{"name": "a", "kernel": "/k", "mergeable": "yes"}`, `vm.json:1:44: mergeable: want true or false, got "yes"`},
		{"null", `{"name": "a", "kernel": null}`, `vm.json:1:25: kernel: want a string, got null`},
		{"disks not a list", `{"name": "a", "kernel": "/k", "disks": {"path": "/d"}}`, `vm.json:1:40: disks: want a list of disks, got an object`},
		{"disk unknown field", "{\"name\": \"a\", \"kernel\": \"/k\", \"disks\": [\n {\"path\": \"/d\"},\n {\"path\": \"/e\", \"ro\": true}]}",
			`vm.json:3:17: disks[1]: unknown field "ro" (known: "path", "rate_limit", "readonly", "serial")`},
		{"disk without path", "{\"name\": \"a\", \"kernel\": \"/k\", \"disks\": [{\"serial\": \"x\"}]}",
			`vm.json:1:41: disks[0]: missing "path", the disk's raw image`},
		{"disk not an object", `{"name": "a", "kernel": "/k", "disks": ["/d"]}`, `vm.json:1:41: disks[0]: want an object, got "/d"`},
		{"long serial", `{"name": "a", "kernel": "/k", "disks": [{"path": "/d", "serial": "123456789012345678901"}]}`,
			`vm.json:1:66: disks[0].serial: disk /d: serial "123456789012345678901" is longer than 20 bytes`},
		{"balloon size", `{"name": "a", "kernel": "/k", "balloon": {"size": "-1"}}`,
			`vm.json:1:51: balloon.size: size "-1": want a positive whole number with an optional K, M, G or T suffix`},
		{"balloon field", `{"name": "a", "kernel": "/k", "balloon": {"target": "1G"}}`,
			`vm.json:1:43: balloon: unknown field "target" (known: "size")`},
		{"vsock host CID", `{"name": "a", "kernel": "/k", "vsock": {"cid": 2}}`, `vm.json:1:48: vsock.cid: vsock CID 2: want 3 to 4294967294 (the others are reserved: 2 is the host)`},
		{"vsock CID too large", `{"name": "a", "kernel": "/k", "vsock": {"cid": 4294967295}}`, `vm.json:1:48: vsock.cid: vsock CID 4294967295: want 3 to 4294967294 (the others are reserved: 2 is the host)`},
		{"vsock CID a string", `{"name": "a", "kernel": "/k", "vsock": {"cid": "3"}}`, `vm.json:1:48: vsock.cid: want the guest's CID, a whole number from 3, got "3"`},
		{"vsock without CID", `{"name": "a", "kernel": "/k", "vsock": {"socket": "/v"}}`, `vm.json:1:40: vsock: missing "cid", the guest's address (3 or more)`},
		{"vsock field", `{"name": "a", "kernel": "/k", "vsock": {"cid": 3, "path": "/v"}}`, `vm.json:1:51: vsock: unknown field "path" (known: "cid", "socket")`},
		{"on_reboot", `{"name": "a", "kernel": "/k", "on_reboot": "halt"}`, `vm.json:1:44: on_reboot: "halt": want exit or restart`},
		{"shares not a list", `{"name": "a", "kernel": "/k", "shares": "/srv"}`, `vm.json:1:41: shares: want a list of shares, got "/srv"`},
		{"share without tag", `{"name": "a", "kernel": "/k", "shares": [{"path": "/srv"}]}`,
			`vm.json:1:42: shares[0]: missing "tag", the guest's mount tag`},
		{"share without path", `{"name": "a", "kernel": "/k", "shares": [{"tag": "x"}]}`,
			`vm.json:1:42: shares[0]: missing "path", the host folder`},
		{"share bad tag", `{"name": "a", "kernel": "/k", "shares": [{"path": "/srv", "tag": "a b"}]}`,
			`vm.json:1:66: shares[0].tag: share /srv: tag "a b": mount tag must be 1 to 64 letters, digits, '.', '_' or '-'`},
		{"share tag twice", `{"name": "a", "kernel": "/k", "shares": [{"path": "/a", "tag": "t"}, {"path": "/b", "tag": "t"}]}`,
			`vm.json:1:92: shares[1].tag: share /b: tag "t" is used twice`},
		{"net without tap", `{"name": "a", "kernel": "/k", "nets": [{"mac": "52:54:00:12:34:56"}]}`,
			`vm.json:1:40: nets[0]: missing "tap", the TAP interface's name`},
		{"net bad mac", `{"name": "a", "kernel": "/k", "nets": [{"tap": "t0", "mac": "52:54:00"}]}`,
			`vm.json:1:61: nets[0].mac: "52:54:00": want six hex bytes as 52:54:00:12:34:56`},
		{"net multicast mac", `{"name": "a", "kernel": "/k", "nets": [{"tap": "t0", "mac": "01:54:00:12:34:56"}]}`,
			`vm.json:1:61: nets[0].mac: MAC 01:54:00:12:34:56 is not a unicast address`},
		{"net tap twice", `{"name": "a", "kernel": "/k", "nets": [{"tap": "t0"}, {"tap": "t0"}]}`,
			`vm.json:1:63: nets[1].tap: TAP t0 is given twice`},
		{"net burst too small", `{"name": "a", "kernel": "/k", "nets": [{"tap": "t0", "rate_limit": {"rx": {"bytes": {"rate": 1000}}}}]}`,
			`vm.json:1:68: nets[0].rate_limit: network device 0: byte burst below the largest frame (65565 bytes)`},
		{"net rate_limit field", `{"name": "a", "kernel": "/k", "nets": [{"tap": "t0", "rate_limit": {"in": {}}}]}`,
			`vm.json:1:68: nets[0].rate_limit: json: unknown field "in": want {"rx": {"bytes": {"rate": N, "burst": N}, "packets": {...}}, "tx": {...}}`},
		{"disk rate_limit field", `{"name": "a", "kernel": "/k", "disks": [{"path": "/a", "rate_limit": {"iops": {}}}]}`,
			`vm.json:1:70: disks[0].rate_limit: json: unknown field "iops": want {"bytes": {"rate": N, "burst": N}, "ops": {...}}`},
		{"disk negative rate", `{"name": "a", "kernel": "/k", "disks": [{"path": "/a", "rate_limit": {"ops": {"rate": -1}}}]}`,
			`vm.json:1:70: disks[0].rate_limit: json: cannot unmarshal number -1 into Go struct field Bucket.ops.rate of type uint64: want {"bytes": {"rate": N, "burst": N}, "ops": {...}}`},
		{"disk iops field", `{"name": "a", "kernel": "/k", "disks": [{"path": "/a", "iops": 3}]}`,
			`vm.json:1:56: disks[0]: unknown field "iops" (known: "path", "rate_limit", "readonly", "serial")`},
		{"net unknown field", `{"name": "a", "kernel": "/k", "nets": [{"tap": "t0", "fd": 3}]}`,
			`vm.json:1:54: nets[0]: unknown field "fd" (known: "mac", "rate_limit", "tap")`},
		{"share unknown field", `{"name": "a", "kernel": "/k", "shares": [{"path": "/a", "tag": "t", "ro": true}]}`,
			`vm.json:1:69: shares[0]: unknown field "ro" (known: "path", "readonly", "setid", "tag")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("vm.json", []byte(tt.src), "/")
			require.Error(t, err)
			var e *Error
			require.True(t, errors.As(err, &e), "%T %v", err, err)
			assert.Equal(t, tt.want, err.Error())
		})
	}
}

func TestParseFileLimitsAndPaths(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "vm.json")
	require.NoError(t, os.WriteFile(p, []byte(`{"name":"a","kernel":"vmlinuz"}`), 0o600))
	d, err := ParseFile(p)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "vmlinuz"), d.Config.Kernel)

	require.NoError(t, os.WriteFile(p, []byte(strings.Repeat(" ", MaxFileBytes+1)), 0o600))
	_, err = ParseFile(p)
	assert.ErrorContains(t, err, "larger than")
	_, err = ParseFile(filepath.Join(dir, "nope.json"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"vmlinuz", "a.img"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), nil, 0o600))
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o700))
	tests := []struct{ src, want string }{
		{`{"name":"a","kernel":"vmlinuz","disks":[{"path":"a.img"}]}`, ""},
		{`{"name":"a","kernel":"nope"}`, "vm.json:1:22: kernel: stat " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{`{"name":"a","kernel":"vmlinuz","initrd":"d"}`, "vm.json:1:41: initrd: " + filepath.Join(dir, "d") + " is not a regular file"},
		{`{"name":"a","kernel":"vmlinuz","disks":[{"path":"a.img"},{"path":"b.img"}]}`,
			"vm.json:1:66: disks[1].path: stat " + filepath.Join(dir, "b.img") + ": no such file or directory"},
	}
	for _, tt := range tests {
		d, err := Parse("vm.json", []byte(tt.src), dir)
		require.NoError(t, err)
		err = d.CheckFiles()
		if tt.want == "" {
			assert.NoError(t, err)
			continue
		}
		assert.EqualError(t, err, tt.want)
	}
}

func TestCheckHost(t *testing.T) {
	n := runtime.NumCPU()
	src := `{"name":"a","kernel":"/k","cpus":` + strconv.Itoa(n+1) + `}`
	d, err := Parse("vm.json", []byte(src), "/")
	require.NoError(t, err, "a definition is not bound to this host")
	err = d.CheckHost()
	assert.ErrorIs(t, err, machine.ErrCPUOvercommit)
	assert.ErrorContains(t, err, "vm.json:1:34: cpus: more vCPUs than host CPUs")

	d.Config.AllowCPUOvercommit = true
	assert.NoError(t, d.CheckHost())
}

func TestFlagParsers(t *testing.T) {
	disks := []struct {
		in   string
		want machine.Disk
		ok   bool
	}{
		{"a.img", machine.Disk{Path: "a.img"}, true},
		{"a.img,readonly", machine.Disk{Path: "a.img", ReadOnly: true}, true},
		{"a.img,serial=web1,readonly", machine.Disk{Path: "a.img", ReadOnly: true, Serial: "web1"}, true},
		{"", machine.Disk{}, false},
		{"a.img,rw", machine.Disk{}, false},
		{"a.img,readonly=yes", machine.Disk{}, false},
		{"disks/a,,b.img,readonly", machine.Disk{Path: "disks/a,b.img", ReadOnly: true}, true},
		{"a.img,serial=x,,y", machine.Disk{Path: "a.img", Serial: "x,y"}, true},
		{"a,,,,.img", machine.Disk{Path: "a,,.img"}, true},
		{"a.img,,,readonly", machine.Disk{Path: "a.img,", ReadOnly: true}, true},
		{"a.img,", machine.Disk{}, false},
		{",,", machine.Disk{Path: ","}, true},
	}
	for _, tt := range disks {
		d, err := ParseDisk(tt.in)
		if !tt.ok {
			assert.Error(t, err, tt.in)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tt.want, d)
	}

	for _, tt := range []struct {
		in   string
		want machine.Share
		ok   bool
	}{
		{"/srv/data,tag=data", machine.Share{Path: "/srv/data", Tag: "data"}, true},
		{"/srv/a,,b,tag=x,readonly", machine.Share{Path: "/srv/a,b", Tag: "x", ReadOnly: true}, true},
		{"/srv/root,tag=root,setid", machine.Share{Path: "/srv/root", Tag: "root", SetID: true}, true},
		{"/srv/root,tag=root,setid=1", machine.Share{}, false},
		{"/srv/data", machine.Share{}, false},
		{",tag=x", machine.Share{}, false},
		{"/srv,tag=x,ro", machine.Share{}, false},
	} {
		s, err := ParseShare(tt.in)
		if !tt.ok {
			assert.Error(t, err, tt.in)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tt.want, s)
	}

	b, err := ParseBalloon("size=384M")
	require.NoError(t, err)
	assert.Equal(t, uint64(384<<20), b.Size)
	b, err = ParseBalloon("size=0")
	require.NoError(t, err)
	assert.Zero(t, b.Size)
	for _, bad := range []string{"384M", "size=", "size=-1", "size=12Q"} {
		_, err := ParseBalloon(bad)
		assert.Error(t, err, bad)
	}

	v, err := ParseVsock("cid=3,socket=/run/a,,b.sock")
	require.NoError(t, err)
	assert.Equal(t, &machine.VsockConfig{CID: 3, Socket: "/run/a,b.sock"}, v)
	v, err = ParseVsock("cid=5")
	require.NoError(t, err)
	assert.Equal(t, &machine.VsockConfig{CID: 5}, v)
	for _, bad := range []string{"", "socket=/s", "cid=x,socket=/s", "cid=3,socket=", "cid=3,path=/s", "cid=-1"} {
		_, err := ParseVsock(bad)
		assert.Error(t, err, bad)
	}

	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	for _, tt := range []struct {
		in   string
		want machine.Net
	}{
		{"tap=tap0", machine.Net{Tap: "tap0"}},
		{"tap=tap0,mac=52:54:00:12:34:56", machine.Net{Tap: "tap0", MAC: mac("52:54:00:12:34:56")}},
	} {
		n, err := ParseNet(tt.in)
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, n)
	}
	// The parsed File owns the descriptor it names, as gvmm owns one it
	// inherits: a descriptor of its own, not another File's, which
	// would be closed twice (the second time, maybe another test's).
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)
	fd, err := unix.Dup(int(f.Fd()))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	n, err := ParseNet("fd=" + strconv.Itoa(fd))
	require.NoError(t, err)
	require.NotNil(t, n.File)
	defer n.File.Close()
	assert.Equal(t, uintptr(fd), n.File.Fd())
	for _, bad := range []string{"", "tap=", "tap=a,fd=5", "fd=2", "fd=x", "fd=99999", "tap=a,mac=1:2:3", "tap=a,mac=00:00:00:00:00:00:00:00", "tap=a,queues=2"} {
		_, err := ParseNet(bad)
		assert.Error(t, err, bad)
	}

	r, err := ParseOnReboot("restart")
	require.NoError(t, err)
	assert.Equal(t, machine.RebootRestart, r)
	_, err = ParseOnReboot("Exit")
	assert.Error(t, err)
}
