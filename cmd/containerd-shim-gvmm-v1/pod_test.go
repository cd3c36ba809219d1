package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
)

func TestFromSpecPodAnnotations(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        vmSpec
	}{
		{"own VM", nil, vmSpec{}},
		{"sandbox", map[string]string{annotationType: "sandbox", annotationSandboxID: "pod1"}, vmSpec{podSandbox: true}},
		{"pod's container", map[string]string{annotationType: "container", annotationSandboxID: "pod1"}, vmSpec{sandboxID: "pod1"}},
		{"container without a sandbox id", map[string]string{annotationType: "container"}, vmSpec{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := &specs.Spec{Process: &specs.Process{Args: []string{"sh"}}, Annotations: tc.annotations}
			_, _, vm, err := fromSpec(spec, discard())
			require.NoError(t, err)
			assert.Equal(t, tc.want, vm)
		})
	}
}

// A sandbox's share is writable, as it holds every container's root; a
// read-only root of its own is the guest's to keep.
func TestPodShareIsWritable(t *testing.T) {
	spec := &specs.Spec{Process: &specs.Process{Args: []string{"sh"}}, Root: &specs.Root{Readonly: true},
		Annotations: map[string]string{annotationType: "sandbox"}}
	_, c, vm, err := fromSpec(spec, discard())
	require.NoError(t, err)
	assert.False(t, vm.readonly)
	assert.True(t, c.Readonly)
}

// shim start of a pod's container starts no daemon: it answers the
// address of its sandbox's shim and names the sandbox in the bundle.
func TestStartPodContainerAnswersTheSandboxShim(t *testing.T) {
	bundle := t.TempDir()
	t.Chdir(bundle)
	writeSpec(t, bundle, map[string]string{annotationType: "container", annotationSandboxID: "pod1"})
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	opts := shim.StartOpts{Address: "/run/containerd/containerd.sock"}
	address, err := manager{}.Start(ctx, "c1", opts)
	require.NoError(t, err)
	want, err := shim.SocketAddress(ctx, opts.Address, "pod1")
	require.NoError(t, err)
	assert.Equal(t, want, address)
	got, err := shim.ReadAddress(filepath.Join(bundle, addressFile))
	require.NoError(t, err)
	assert.Equal(t, want, got)
	sandbox, err := os.ReadFile(filepath.Join(bundle, sandboxFile))
	require.NoError(t, err)
	assert.Equal(t, "pod1", string(sandbox))
	assert.NoFileExists(t, filepath.Join(bundle, pidFile), "no daemon of its own")

	// shim delete of it (its sandbox's shim died) leaves the shim
	// alone and forgets the sandbox.
	_, err = manager{}.Stop(ctx, "c1")
	require.NoError(t, err)
	assert.NoFileExists(t, filepath.Join(bundle, sandboxFile))
}

func TestStartRefusesABadSandboxID(t *testing.T) {
	bundle := t.TempDir()
	t.Chdir(bundle)
	writeSpec(t, bundle, map[string]string{annotationType: "container", annotationSandboxID: "../pod1"})
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	_, err := manager{}.Start(ctx, "c1", shim.StartOpts{Address: "/run/containerd/containerd.sock"})
	assert.ErrorContains(t, err, annotationSandboxID)
}

// The mounter answers each request; it refuses ids that are not one
// name and file systems that are no snapshotter's, and mounts nothing
// for them.
func TestMounterRefuses(t *testing.T) {
	share := t.TempDir()
	var in, out bytes.Buffer
	for _, req := range []mountRequest{
		{ID: "../x", Mounts: []mount.Mount{{Type: "bind", Source: "/", Options: []string{"rbind"}}}},
		{ID: "a/b"},
		{ID: "c1", Mounts: []mount.Mount{{Type: "proc", Source: "proc"}}},
		{ID: "gone"}, // unmounting what is not there is done
	} {
		require.NoError(t, agent.Write(&in, req))
	}
	require.NoError(t, runMounter(share, &in, &out))
	var errs []string
	for range 4 {
		var resp mountResponse
		require.NoError(t, agent.Read(&out, &resp))
		errs = append(errs, resp.Error)
	}
	assert.Contains(t, errs[0], "want one file name")
	assert.Contains(t, errs[1], "want one file name")
	assert.Contains(t, errs[2], `type "proc"`)
	assert.Empty(t, errs[3])
	ents, err := os.ReadDir(share)
	require.NoError(t, err)
	assert.Empty(t, ents, "nothing was made in the share")
}

// The mounter mounts a container's root beneath the share and detaches
// it, as a pod's Create and Delete ask.
func TestMounterMountsBeneathTheShare(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("mounting needs root")
	}
	share, rootfs := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(rootfs, "marker"), []byte("c1"), 0o644))
	require.NoError(t, serveMount(share, mountRequest{ID: "c1", Mounts: []mount.Mount{{Type: "bind", Source: rootfs, Options: []string{"rbind"}}}}))
	data, err := os.ReadFile(filepath.Join(share, "c1", "marker"))
	require.NoError(t, err)
	assert.Equal(t, "c1", string(data))
	assert.Error(t, serveMount(share, mountRequest{ID: "c1", Mounts: []mount.Mount{{Type: "bind", Source: rootfs}}}), "c1 is mounted already")
	require.NoError(t, removeShare(share, unix.MNT_DETACH))
	assert.NoDirExists(t, share)
	assert.FileExists(t, filepath.Join(rootfs, "marker"), "the root file system itself is untouched")
}

func writeSpec(t *testing.T, bundle string, annotations map[string]string) {
	t.Helper()
	data, err := json.Marshal(specs.Spec{Process: &specs.Process{Args: []string{"sh"}}, Annotations: annotations})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644))
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestSpecCgroup(t *testing.T) {
	for _, tc := range []struct {
		path, want string
		err        error
	}{
		{"", "", nil},
		{"/default/c1", "/default/c1", nil},
		{"kubepods/pod1/c1", "/kubepods/pod1/c1", nil},
		{"kubepods-besteffort-pod1.slice:cri-containerd:c1", "", errSystemdCgroup},
		{"/a/../b", "", nil},
		{"/", "", nil},
	} {
		t.Run(tc.path, func(t *testing.T) {
			spec := &specs.Spec{Linux: &specs.Linux{CgroupsPath: tc.path}}
			got, err := specCgroup(spec)
			switch {
			case tc.err != nil:
				assert.ErrorIs(t, err, tc.err)
			case tc.want == "" && tc.path != "":
				assert.Error(t, err, "not a clean path below the root")
			default:
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
			}
		})
	}
}

// A bundle without the cgroup file has no cgroup to remove; one naming
// a path out of the hierarchy is refused.
func TestRemoveCgroupChecksTheFile(t *testing.T) {
	bundle := t.TempDir()
	require.NoError(t, removeCgroup(bundle, false))
	require.NoError(t, os.WriteFile(filepath.Join(bundle, cgroupFile), []byte("/../../etc"), 0o600))
	assert.Error(t, removeCgroup(bundle, false))
}
