package main

import (
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/jail"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/seccomp"
	"github.com/gvmm-dev/gvmm/machine/vmdef"
)

func TestJailSpec(t *testing.T) {
	cfg := machine.Config{
		Shares: []machine.Share{{Path: "/srv/data/", Tag: "data", ReadOnly: true}, {Path: "/srv/rw", Tag: "rw"}},
		Vsock:  &machine.VsockConfig{CID: 3, Socket: "/run/vm/vsock.sock"},
	}
	s := jailSpec(1000, 1001, jail.Limits{CPUs: 2}, cfg, runFiles{
		apiSocket: "/run/vm/api.sock", consoleSocket: "/run/vm/console.sock",
		consoleLog: "/var/log/vm/console.log", logFile: "/run/vm/vmm.log", snapshotDir: "/srv/snapshots",
	})
	assert.Equal(t, jail.Spec{
		UID: 1000, GID: 1001, Limits: jail.Limits{CPUs: 2}, NewNet: true,
		Binds: []jail.Bind{
			{Path: "/var/log/vm", Writable: true}, {Path: "/run/vm", Writable: true},
			{Path: "/srv/data"}, {Path: "/srv/rw", Writable: true},
			{Path: "/srv/snapshots", Writable: true}, {Path: "/run/vm", Writable: true},
		},
		Leftovers: []string{"/run/vm/api.sock", "/run/vm/console.sock", "/run/vm/vsock.sock"},
	}, s)

	// A TAP lives in the host's network namespace.
	s = jailSpec(1000, 1000, jail.Limits{}, machine.Config{Nets: []machine.Net{{Tap: "tap0"}}}, runFiles{})
	assert.False(t, s.NewNet)
	assert.Empty(t, s.Binds)
}

func TestSnapshotPlace(t *testing.T) {
	confined := newSnapshotPlace(&jail.Spec{}, "/srv/snapshots")
	tests := []struct {
		name  string
		place snapshotPlace
		path  string
		err   string
	}{
		{"unconfined: anywhere", newSnapshotPlace(nil, ""), "/var/tmp/s1", ""},
		{"inside the folder", confined, "/srv/snapshots/s1", ""},
		{"deeper inside", confined, "/srv/snapshots/vm1/s1", ""},
		{"the folder itself", confined, "/srv/snapshots", ""},
		{"a name starting with dots", confined, "/srv/snapshots/..s1", ""},
		{"outside", confined, "/srv/other", "only inside its --snapshot-dir /srv/snapshots"},
		{"a sibling with the folder's name as prefix", confined, "/srv/snapshots2/s1", "only inside its --snapshot-dir"},
		{"above", confined, "/srv", "only inside its --snapshot-dir"},
		{"confined without the flag", newSnapshotPlace(&jail.Spec{}, ""), "/srv/snapshots/s1", "which it was not given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.place.check(tt.path)
			if tt.err == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tt.err)
			}
		})
	}
}

func TestConfineFlagsResolve(t *testing.T) {
	def := &vmdef.Definition{User: "1000", Limits: vmdef.Limits{CPUs: 1, Memory: 512 * machine.MiB}}
	tests := []struct {
		name   string
		args   []string
		def    *vmdef.Definition
		user   string
		limits jail.Limits
		err    string
	}{
		{name: "nothing"},
		{name: "flags", args: []string{"--user", "gvmm", "--cpu-limit", "1.5", "--memory-limit", "400M"},
			user: "gvmm", limits: jail.Limits{CPUs: 1.5, MemoryBytes: 400 * machine.MiB}},
		{name: "definition", def: def, user: "1000", limits: jail.Limits{CPUs: 1, MemoryBytes: 512 * machine.MiB}},
		{name: "flags over the definition", def: def, args: []string{"--user", "2000:2000", "--memory-limit", "1G"},
			user: "2000:2000", limits: jail.Limits{CPUs: 1, MemoryBytes: machine.GiB}},
		{name: "limits without a user", args: []string{"--memory-limit", "1G"}, err: "need --user"},
		{name: "bad cpu limit", args: []string{"--user", "1000", "--cpu-limit", "0"}, err: "--cpu-limit 0 CPUs"},
		{name: "bad memory limit", args: []string{"--user", "1000", "--memory-limit", "x"}, err: "--memory-limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
			f := addConfineFlags(fs)
			require.NoError(t, fs.Parse(tt.args))
			user, limits, err := f.resolve(tt.def)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.user, user)
			assert.Equal(t, tt.limits, limits)
		})
	}
}

func TestConfineStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("gvmm start confines only as root")
	}
	if _, err := user.Lookup(DefaultVMMUser); err == nil {
		t.Skipf("this host has a %s user: the default case differs", DefaultVMMUser)
	}
	dir := t.TempDir()
	p := state.Paths{Dir: dir, Snapshots: filepath.Join(dir, "snapshots")}
	extra, err := confineStart(&vmdef.Definition{}, p)
	require.NoError(t, err)
	assert.Empty(t, extra, "no user named, none on the host")
	assert.NoDirExists(t, p.Snapshots)

	extra, err = confineStart(&vmdef.Definition{User: "1234:4321"}, p)
	require.NoError(t, err)
	assert.Equal(t, []string{"--snapshot-dir", p.Snapshots}, extra, "gvmm run reads the definition's user itself")
	for _, d := range []string{p.Dir, p.Snapshots} {
		st, err := os.Stat(d)
		require.NoError(t, err)
		sys := st.Sys().(*syscall.Stat_t)
		assert.Equal(t, [2]uint32{1234, 4321}, [2]uint32{sys.Uid, sys.Gid}, "%s is the VMM's user's", d)
	}

	_, err = confineStart(&vmdef.Definition{User: "0"}, p)
	assert.ErrorIs(t, err, jail.ErrRootUser)
}

// TestVMMRules builds the filter of every mix of devices: each lists a
// call once, and every one lets a snapshot be taken (shares included).
func TestVMMRules(t *testing.T) {
	for name, cfg := range map[string]machine.Config{
		"bare":         {},
		"shares":       {Shares: []machine.Share{{Path: "/srv", Tag: "a"}}},
		"nets":         {Nets: []machine.Net{{Tap: "tap0"}}},
		"shares, nets": {Shares: []machine.Share{{Path: "/srv", Tag: "a"}}, Nets: []machine.Net{{Tap: "tap0"}}},
	} {
		t.Run(name, func(t *testing.T) {
			rules := vmmRules(cfg)
			_, err := seccomp.Build(rules)
			require.NoError(t, err)
			for _, r := range seccomp.Snapshots() {
				assert.True(t, slices.ContainsFunc(rules, func(x seccomp.Rule) bool { return x.Syscall == r.Syscall }),
					"%s allowed", seccomp.SyscallName(r.Syscall))
			}
		})
	}
}
