package jail

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseUser(t *testing.T) {
	tests := []struct {
		in       string
		uid, gid int
		err      error // nil: any error when wantErr
		wantErr  bool
	}{
		{in: "1000:1000", uid: 1000, gid: 1000},
		{in: "1234:5678", uid: 1234, gid: 5678},
		{in: "4242", uid: 4242, gid: 4242}, // no entry: the group of the same number
		{in: "0:1000", err: ErrRootUser, wantErr: true},
		{in: "1000:0", err: ErrRootUser, wantErr: true},
		{in: "root", err: ErrRootUser, wantErr: true},
		{in: "", wantErr: true},
		{in: "1000:", wantErr: true},
		{in: ":1000", wantErr: true},
		{in: "no-such-user-here", wantErr: true},
		{in: "1000:no-such-group-here", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			uid, gid, err := ParseUser(tt.in)
			if tt.wantErr {
				require.Error(t, err)
				if tt.err != nil {
					assert.ErrorIs(t, err, tt.err)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, [2]int{tt.uid, tt.gid}, [2]int{uid, gid})
		})
	}
}

func TestSpecRoundTripAndChecks(t *testing.T) {
	s := Spec{UID: 1000, GID: 1001, Root: "/tmp/gvmm-jail-1", NewNet: true,
		Binds:     []Bind{{Path: "/srv/vm/run", Writable: true}, {Path: "/srv/share"}},
		Limits:    Limits{CPUs: 1.5, MemoryBytes: 400 << 20},
		Leftovers: []string{"/srv/vm/run/api.sock"}}
	v, err := s.Encode()
	require.NoError(t, err)
	got, err := Decode(v)
	require.NoError(t, err)
	assert.Equal(t, s, got)

	for name, bad := range map[string]Spec{
		"root uid":      {UID: 0, GID: 1, Root: "/r"},
		"root gid":      {UID: 1, GID: 0, Root: "/r"},
		"relative root": {UID: 1, GID: 1, Root: "r"},
		"relative bind": {UID: 1, GID: 1, Root: "/r", Binds: []Bind{{Path: "run"}}},
		"unclean bind":  {UID: 1, GID: 1, Root: "/r", Binds: []Bind{{Path: "/a/../etc"}}},
		"bind of /":     {UID: 1, GID: 1, Root: "/r", Binds: []Bind{{Path: "/"}}},
	} {
		v, err := bad.Encode()
		require.NoError(t, err)
		_, err = Decode(v)
		assert.Error(t, err, name)
	}
	_, err = Decode("{")
	assert.Error(t, err)
}

func TestMergeBinds(t *testing.T) {
	got := mergeBinds([]Bind{
		{Path: "/srv/vm/run/share"},
		{Path: "/srv/vm/run", Writable: true},
		{Path: "/dev/kvm"},
		{Path: "/srv/vm/run"},
		{Path: "/boot/vmlinuz"},
	})
	assert.Equal(t, []Bind{
		{Path: "/boot/vmlinuz"},
		{Path: "/dev/kvm"},
		{Path: "/srv/vm/run", Writable: true},
		{Path: "/srv/vm/run/share"},
	}, got)
}

func TestCPUMax(t *testing.T) {
	for cpus, want := range map[float64]string{
		1: "100000 100000", 1.5: "150000 100000", 4: "400000 100000", 0.001: "1000 100000",
	} {
		assert.Equal(t, want, cpuMax(cpus), "%v", cpus)
	}
}

// fakeCgroupFS is a folder laid out as cgroup v2's root.
func fakeCgroupFS(t *testing.T, subtree string) string {
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte(subtree), 0o644))
	// What the kernel makes in a new cgroup.
	require.NoError(t, os.Mkdir(filepath.Join(root, cgroupParent), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, cgroupParent, "cgroup.subtree_control"), nil, 0o644))
	return root
}

func TestCreateCgroup(t *testing.T) {
	root := fakeCgroupFS(t, "memory\n")
	cg, err := createCgroup(root, "vm-1", Limits{CPUs: 2, MemoryBytes: 400 << 20})
	require.NoError(t, err)
	read := func(p ...string) string {
		b, err := os.ReadFile(filepath.Join(append([]string{root}, p...)...))
		require.NoError(t, err)
		return string(b)
	}
	// The root had memory already: only cpu is added; the parent gets both.
	assert.Equal(t, "+cpu", read("cgroup.subtree_control"))
	assert.Equal(t, "+cpu +memory", read(cgroupParent, "cgroup.subtree_control"))
	assert.Equal(t, "200000 100000", read(cgroupParent, "vm-1", "cpu.max"))
	assert.Equal(t, "419430400", read(cgroupParent, "vm-1", "memory.max"))

	// A real cgroup's files go with its folder; these must go first.
	require.NoError(t, os.Remove(filepath.Join(cg.dir, "cpu.max")))
	require.NoError(t, os.Remove(filepath.Join(cg.dir, "memory.max")))
	require.NoError(t, cg.remove())
	assert.NoDirExists(t, cg.dir)
	require.NoError(t, cg.remove(), "removing twice")
}

func TestCreateCgroupRemovesStale(t *testing.T) {
	root := fakeCgroupFS(t, "cpu memory")
	parent := filepath.Join(root, cgroupParent)
	dead := filepath.Join(parent, "vm-1073741823") // above any pid_max
	alive := filepath.Join(parent, "vm-"+strconv.Itoa(os.Getpid()))
	other := filepath.Join(parent, "vm-x")
	for _, d := range []string{dead, alive, other} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	_, err := createCgroup(root, "vm-5", Limits{CPUs: 1})
	require.NoError(t, err)
	assert.NoDirExists(t, dead)
	assert.DirExists(t, alive)
	assert.DirExists(t, other)
}

func TestCreateCgroupOnlyMemory(t *testing.T) {
	root := fakeCgroupFS(t, "")
	cg, err := createCgroup(root, "vm-2", Limits{MemoryBytes: 1 << 30})
	require.NoError(t, err)
	assert.NoFileExists(t, filepath.Join(cg.dir, "cpu.max"))
	b, err := os.ReadFile(filepath.Join(root, "cgroup.subtree_control"))
	require.NoError(t, err)
	assert.Equal(t, "+memory", string(b))
}

func TestCreateCgroupWithoutCgroup2(t *testing.T) {
	_, err := createCgroup(t.TempDir(), "vm-3", Limits{CPUs: 1})
	require.Error(t, err)
	assert.True(t, errors.Is(err, os.ErrNotExist), "%v", err)
	assert.Contains(t, err.Error(), "cgroup v2")
}

func TestCreateCgroupExisting(t *testing.T) {
	root := fakeCgroupFS(t, "cpu memory")
	require.NoError(t, os.Mkdir(filepath.Join(root, cgroupParent, "vm-4"), 0o755))
	_, err := createCgroup(root, "vm-4", Limits{CPUs: 1})
	assert.ErrorIs(t, err, os.ErrExist)
}

func TestLimitsIsZero(t *testing.T) {
	assert.True(t, Limits{}.IsZero())
	assert.False(t, Limits{CPUs: 0.5}.IsZero())
	assert.False(t, Limits{MemoryBytes: 1}.IsZero())
}
