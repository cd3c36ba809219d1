package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
	"github.com/gvmm-dev/gvmm/machine"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "shim.toml")
	require.NoError(t, os.WriteFile(path, []byte("kernel = \"/k\"\nmodules = \"/m\"\nagent = \"/a\"\nmemory = \"1G\"\ncpus = 2\nboot_timeout = \"30s\"\n"), 0o644))
	byPath, err := typeurl.MarshalAny(&runtimeoptions.Options{ConfigPath: path})
	require.NoError(t, err)
	s, err := loadConfig(protobuf.FromAny(byPath))
	require.NoError(t, err)
	assert.Equal(t, "/k", s.kernel)
	assert.Equal(t, "/m", s.modules)
	assert.Equal(t, "/a", s.agent)
	assert.Equal(t, uint64(1<<30), s.memory)
	assert.Equal(t, 2, s.cpus)
	assert.Equal(t, "30s", s.bootTimeout.String())
	assert.True(t, s.seccomp, "the filter is on by default")

	byBody, err := typeurl.MarshalAny(&runtimeoptions.Options{ConfigBody: []byte("cpus = 3\n")})
	require.NoError(t, err)
	s, err = loadConfig(protobuf.FromAny(byBody))
	require.NoError(t, err)
	assert.Equal(t, 3, s.cpus)
	assert.Equal(t, uint64(machine.DefaultMemory), s.memory, "the default")
	assert.True(t, strings.HasPrefix(s.kernel, "/boot/vmlinuz-"))

	for body, want := range map[string]bool{"seccomp = \"on\"\n": true, "seccomp = \"off\"\n": false} {
		opts, err := typeurl.MarshalAny(&runtimeoptions.Options{ConfigBody: []byte(body)})
		require.NoError(t, err)
		s, err = loadConfig(protobuf.FromAny(opts))
		require.NoError(t, err)
		assert.Equal(t, want, s.seccomp, "%s", body)
	}
}

func TestLoadConfigRefusesBadFiles(t *testing.T) {
	for name, body := range map[string]string{
		"not toml":     "kernel = ",
		"bad memory":   "memory = \"lots\"",
		"cpus":         "cpus = 1000",
		"bad duration": "boot_timeout = \"soon\"",
		"seccomp":      "seccomp = \"log\"",
	} {
		t.Run(name, func(t *testing.T) {
			opts, err := typeurl.MarshalAny(&runtimeoptions.Options{ConfigBody: []byte(body)})
			require.NoError(t, err)
			_, err = loadConfig(protobuf.FromAny(opts))
			assert.Error(t, err)
		})
	}
	missing, err := typeurl.MarshalAny(&runtimeoptions.Options{ConfigPath: filepath.Join(t.TempDir(), "none.toml")})
	require.NoError(t, err)
	_, err = loadConfig(protobuf.FromAny(missing))
	assert.ErrorIs(t, err, os.ErrNotExist, "a named file that is missing is an error")
}

func TestFromSpec(t *testing.T) {
	limit, quota, period := int64(1<<30), int64(250000), uint64(100000)
	spec := &specs.Spec{
		Hostname: "box",
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{
			Args: []string{"sh"}, Env: []string{"A=b"}, Terminal: true,
			User:    specs.User{UID: 1000, GID: 100, AdditionalGids: []uint32{10}},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 4096}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: "/etc/resolv.conf", Options: []string{"rbind"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
		},
		Linux: &specs.Linux{Resources: &specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: &limit},
			CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
		}},
	}
	p, c, vm, err := fromSpec(spec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	assert.Equal(t, &agent.Process{Args: []string{"sh"}, Env: []string{"A=b"}, Cwd: "/", Terminal: true,
		UID: 1000, GID: 100, AdditionalGIDs: []uint32{10},
		Rlimits: []agent.Rlimit{{Resource: unix.RLIMIT_NOFILE, Soft: 1024, Hard: 4096}}}, p)
	assert.Equal(t, "box", c.Hostname)
	assert.True(t, c.Readonly)
	assert.Equal(t, []agent.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
	}, c.Mounts, "host binds and cgroups cannot reach the guest")
	assert.Equal(t, vmSpec{readonly: true, memory: 1 << 30, cpus: 3}, vm, "2.5 CPUs of quota are 3 vCPUs")

	_, _, _, err = fromSpec(&specs.Spec{}, slog.Default())
	assert.Error(t, err, "no process")
	_, err = fromProcess(&specs.Process{Args: []string{"x"}, Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS"}}})
	assert.Error(t, err)
}

func TestTailKeepsTheEnd(t *testing.T) {
	tl := &tail{max: 8}
	for _, s := range []string{"0123", "4567", "89ab"} {
		n, err := tl.Write([]byte(s))
		require.NoError(t, err)
		assert.Equal(t, len(s), n)
	}
	assert.Equal(t, "456789ab", tl.String())
}

func TestIsDaemonOf(t *testing.T) {
	self := os.Args[0]
	assert.True(t, isDaemonOf([]string{self, "-namespace", "default", "-id", "c1", "-address", "/a"}, "c1"))
	assert.False(t, isDaemonOf([]string{self, "-id", "c2"}, "c1"))
	assert.False(t, isDaemonOf([]string{"/usr/bin/other", "-id", "c1"}, "c1"))
	assert.False(t, isDaemonOf(nil, "c1"))
}

// A shim whose first boot failed may be under its seccomp filter: it
// refuses to mount another root rather than die of it.
func TestCreateAfterAFailedBoot(t *testing.T) {
	s := &service{containers: map[string]*container{}, booted: true}
	_, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1", Bundle: t.TempDir()})
	require.Error(t, err)
	assert.True(t, errdefs.IsFailedPrecondition(errdefs.FromGRPC(err)), "%v", err)
}
