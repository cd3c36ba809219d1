package containerd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// pauseImage is the pod sandboxes' image: the test's busybox, sleeping.
const pauseImage = "docker.io/library/gvmm-pause:test"

// criConfig enables containerd's CRI plugin with the gvmm runtime as its
// default, the native snapshotter and the test's pause image; %[1]s is
// the shim's configuration, %[2]s the test's folder. No CNI
// configuration: host-network pods need none (its folders are the
// test's, which CRI creates).
const criConfig = `[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "` + pauseImage + `"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "gvmm"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.gvmm]
      runtime_type = "io.containerd.gvmm.v1"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.gvmm.options]
        ConfigPath = %[1]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "%[2]s/cni/bin"
    conf_dir = "%[2]s/cni/net.d"
`

// TestCRIPod: Kubernetes' path, through CRI: a host-network pod whose
// sandbox and two containers run in one VM (one shim, one guest: the same
// boot_id), an exec in each, then the containers' and the pod's stop and
// removal leave no VMM, socket or mount.
func TestCRIPod(t *testing.T) {
	// CRI's streaming server listens on 127.0.0.1, which the test host's
	// loopback has once up.
	lo, err := netlink.LinkByName("lo")
	require.NoError(t, err)
	require.NoError(t, netlink.LinkSetUp(lo))
	// CRI copies the host's /etc/hosts into a host-network pod's; the
	// test host has none of its own.
	if _, err := os.Stat("/etc"); errors.Is(err, os.ErrNotExist) {
		require.NoError(t, os.Mkdir("/etc", 0o755))
		t.Cleanup(func() { assert.NoError(t, os.Remove("/etc")) })
	}
	if _, err := os.Stat("/etc/hosts"); errors.Is(err, os.ErrNotExist) {
		require.NoError(t, os.WriteFile("/etc/hosts", []byte("127.0.0.1 localhost\n"), 0o644))
		t.Cleanup(func() { assert.NoError(t, os.Remove("/etc/hosts")) })
	}
	e := startContainerdWith(t, criConfig, "k8s.io")
	e.importImage("k8s.io", pauseImage, []string{"sleep", "1000000"})

	conn, err := grpc.Dial("unix://"+e.address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	rt := cri.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()

	logs := t.TempDir()
	podConfig := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: "pod", Uid: "uid-1", Namespace: "default"},
		LogDirectory: logs,
		// Without it, CRI copies the host's resolv.conf, which the test
		// host lacks; the guest leaves CRI's bind of it out anyway.
		DnsConfig: &cri.DNSConfig{Servers: []string{"192.0.2.53"}},
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE},
		}},
	}
	pod, err := rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: podConfig, RuntimeHandler: "gvmm"})
	require.NoError(t, err, "RunPodSandbox")
	podID := pod.PodSandboxId
	pids := shimPids(podID)
	require.Len(t, pids, 1, "the pod's shim")

	var ids []string
	for _, name := range []string{"c1", "c2"} {
		c, err := rt.CreateContainer(ctx, &cri.CreateContainerRequest{
			PodSandboxId:  podID,
			SandboxConfig: podConfig,
			Config: &cri.ContainerConfig{
				Metadata: &cri.ContainerMetadata{Name: name},
				Image:    &cri.ImageSpec{Image: imageName},
				Command:  []string{"sh", "-c", "echo " + name + " > /whoami; sleep 100000"},
				LogPath:  name + ".log",
			},
		})
		require.NoError(t, err, "CreateContainer %s", name)
		_, err = rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: c.ContainerId})
		require.NoError(t, err, "StartContainer %s", name)
		ids = append(ids, c.ContainerId)
		assert.Empty(t, shimPids(c.ContainerId), "no shim of %s's own", name)
	}
	assert.Equal(t, pids, shimPids(podID), "one VMM for the pod")

	exec := func(id string, cmd ...string) string {
		t.Helper()
		r, err := rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 120})
		require.NoError(t, err, "ExecSync %v", cmd)
		require.Zero(t, r.ExitCode, "%v: stderr %s", cmd, r.Stderr)
		return strings.TrimSpace(string(r.Stdout))
	}
	boot1 := exec(ids[0], "cat", "/proc/sys/kernel/random/boot_id")
	assert.NotEmpty(t, boot1)
	assert.Equal(t, boot1, exec(ids[1], "cat", "/proc/sys/kernel/random/boot_id"), "both containers are in the pod's guest")
	assert.Equal(t, "c1", exec(ids[0], "cat", "/whoami"), "c1's own root")
	assert.Equal(t, "c2", exec(ids[1], "cat", "/whoami"), "c2's own root")

	for _, id := range ids {
		_, err := rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: id, Timeout: 5})
		require.NoError(t, err, "StopContainer")
		_, err = rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: id})
		require.NoError(t, err, "RemoveContainer")
	}
	_, err = rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: podID})
	require.NoError(t, err, "StopPodSandbox")
	_, err = rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: podID})
	require.NoError(t, err, "RemovePodSandbox")
	for _, id := range append(ids, podID) {
		e.assertNothingLeft(id)
	}
	leftover, _ := filepath.Glob(filepath.Join(e.dir, "state", "io.containerd.runtime.v2.task", "k8s.io", "*"))
	assert.Empty(t, leftover, "bundles left")
}
