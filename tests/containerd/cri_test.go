package containerd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
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

	"github.com/gvmm-dev/gvmm/tests/containerdpkg"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// pauseImage is the pod sandboxes' image: the test's busybox, sleeping.
const pauseImage = "docker.io/library/gvmm-pause:test"

// criConfig enables containerd's CRI plugin with the gvmm runtime as its
// default, the native snapshotter and the test's pause image; %[1]s is
// the shim's configuration, %[2]s the CNI folder: its plugins in bin,
// its configuration in net.d (host-network pods need neither).
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
    bin_dir = "%[2]s/bin"
    conf_dir = "%[2]s/net.d"
`

// criEnv is containerd with its CRI plugin and a CRI client of it, as
// the kubelet has.
type criEnv struct {
	*env
	rt  cri.RuntimeServiceClient
	ctx context.Context
}

// startCRI starts containerd with its CRI plugin, CNI's folder cniDir
// and the pause image, and connects to it.
func startCRI(t *testing.T, cniDir string) *criEnv {
	t.Helper()
	// CRI's streaming server listens on 127.0.0.1, which the test host's
	// loopback has once up.
	lo, err := netlink.LinkByName("lo")
	require.NoError(t, err)
	require.NoError(t, netlink.LinkSetUp(lo))
	// CRI copies the host's /etc/hosts into a pod's; the test host has
	// none of its own.
	if _, err := os.Stat("/etc"); errors.Is(err, os.ErrNotExist) {
		require.NoError(t, os.Mkdir("/etc", 0o755))
		t.Cleanup(func() { assert.NoError(t, os.Remove("/etc")) })
	}
	if _, err := os.Stat("/etc/hosts"); errors.Is(err, os.ErrNotExist) {
		require.NoError(t, os.WriteFile("/etc/hosts", []byte("127.0.0.1 localhost\n"), 0o644))
		t.Cleanup(func() { assert.NoError(t, os.Remove("/etc/hosts")) })
	}
	e := startContainerdWith(t, criConfig, cniDir, "k8s.io")
	e.importImage("k8s.io", pauseImage, []string{"sleep", "1000000"})

	conn, err := grpc.Dial("unix://"+e.address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	t.Cleanup(cancel)
	return &criEnv{env: e, rt: cri.NewRuntimeServiceClient(conn), ctx: ctx}
}

// podConfig is a pod's configuration in network namespace mode network
// (NODE: the host's; POD: its own, which CNI sets up).
func podConfig(t *testing.T, name string, network cri.NamespaceMode) *cri.PodSandboxConfig {
	return &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Uid: "uid-" + name, Namespace: "default"},
		LogDirectory: t.TempDir(),
		// Without it, CRI copies the host's resolv.conf, which the test
		// host lacks; the guest leaves CRI's bind of it out anyway.
		DnsConfig: &cri.DNSConfig{Servers: []string{"192.0.2.53"}},
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: network},
		}},
	}
}

// runPod runs the pod's sandbox under the gvmm runtime and returns its
// id; its shim is the only one.
func (c *criEnv) runPod(config *cri.PodSandboxConfig) string {
	t := c.t
	t.Helper()
	pod, err := c.rt.RunPodSandbox(c.ctx, &cri.RunPodSandboxRequest{Config: config, RuntimeHandler: "gvmm"})
	require.NoError(t, err, "RunPodSandbox")
	require.Len(t, shimPids(pod.PodSandboxId), 1, "the pod's shim")
	return pod.PodSandboxId
}

// startContainer creates and starts container name running cmd in pod
// podID, and returns its id; it has no shim of its own.
func (c *criEnv) startContainer(podID string, config *cri.PodSandboxConfig, name string, cmd ...string) string {
	t := c.t
	t.Helper()
	r, err := c.rt.CreateContainer(c.ctx, &cri.CreateContainerRequest{
		PodSandboxId:  podID,
		SandboxConfig: config,
		Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: name},
			Image:    &cri.ImageSpec{Image: imageName},
			Command:  cmd,
			LogPath:  name + ".log",
		},
	})
	require.NoError(t, err, "CreateContainer %s", name)
	_, err = c.rt.StartContainer(c.ctx, &cri.StartContainerRequest{ContainerId: r.ContainerId})
	require.NoError(t, err, "StartContainer %s", name)
	assert.Empty(t, shimPids(r.ContainerId), "no shim of %s's own", name)
	return r.ContainerId
}

// exec runs cmd in container id, requires its success and returns its
// output.
func (c *criEnv) exec(id string, cmd ...string) string {
	t := c.t
	t.Helper()
	r, err := c.rt.ExecSync(c.ctx, &cri.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 120})
	require.NoError(t, err, "ExecSync %v", cmd)
	require.Zero(t, r.ExitCode, "%v: stdout %s, stderr %s", cmd, r.Stdout, r.Stderr)
	return strings.TrimSpace(string(r.Stdout))
}

// removePod stops and removes the containers ids and then the pod, and
// checks that nothing of them is left.
func (c *criEnv) removePod(podID string, ids []string) {
	t := c.t
	t.Helper()
	for _, id := range ids {
		_, err := c.rt.StopContainer(c.ctx, &cri.StopContainerRequest{ContainerId: id, Timeout: 5})
		require.NoError(t, err, "StopContainer")
		_, err = c.rt.RemoveContainer(c.ctx, &cri.RemoveContainerRequest{ContainerId: id})
		require.NoError(t, err, "RemoveContainer")
	}
	_, err := c.rt.StopPodSandbox(c.ctx, &cri.StopPodSandboxRequest{PodSandboxId: podID})
	require.NoError(t, err, "StopPodSandbox")
	_, err = c.rt.RemovePodSandbox(c.ctx, &cri.RemovePodSandboxRequest{PodSandboxId: podID})
	require.NoError(t, err, "RemovePodSandbox")
	for _, id := range append(ids, podID) {
		c.assertNothingLeft(id)
	}
	leftover, _ := filepath.Glob(filepath.Join(c.dir, "state", "io.containerd.runtime.v2.task", "k8s.io", "*"))
	assert.Empty(t, leftover, "bundles left")
}

// TestCRIPod: Kubernetes' path, through CRI: a host-network pod whose
// sandbox and two containers run in one VM (one shim, one guest: the same
// boot_id), an exec in each, then the containers' and the pod's stop and
// removal leave no VMM, socket or mount.
func TestCRIPod(t *testing.T) {
	c := startCRI(t, t.TempDir())
	config := podConfig(t, "pod", cri.NamespaceMode_NODE)
	podID := c.runPod(config)
	pids := shimPids(podID)

	var ids []string
	for _, name := range []string{"c1", "c2"} {
		ids = append(ids, c.startContainer(podID, config, name, "sh", "-c", "echo "+name+" > /whoami; sleep 100000"))
	}
	assert.Equal(t, pids, shimPids(podID), "one VMM for the pod")

	boot1 := c.exec(ids[0], "cat", "/proc/sys/kernel/random/boot_id")
	assert.NotEmpty(t, boot1)
	assert.Equal(t, boot1, c.exec(ids[1], "cat", "/proc/sys/kernel/random/boot_id"), "both containers are in the pod's guest")
	assert.Equal(t, "c1", c.exec(ids[0], "cat", "/whoami"), "c1's own root")
	assert.Equal(t, "c2", c.exec(ids[1], "cat", "/whoami"), "c2's own root")

	c.removePod(podID, ids)
}

// cniConflist is the pod network's CNI configuration: a bridge whose
// address is the pods' gateway, host-local addresses from a private
// /24 with their state in %[4]s, no masquerading (no iptables). %[1]s is
// the bridge, %[2]s the subnet, %[3]s the gateway.
const cniConflist = `{
  "cniVersion": "1.0.0",
  "name": "gvmmtest",
  "plugins": [{
    "type": "bridge",
    "bridge": %[1]q,
    "isGateway": true,
    "ipMasq": false,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": %[2]q, "gateway": %[3]q}]],
      "routes": [{"dst": "0.0.0.0/0"}],
      "dataDir": %[4]q
    }
  }]
}
`

// TestCRIPodNetwork: the kubelet's path for a pod with a network of its
// own: containerd's CRI plugin makes the pod's namespace and has Debian
// 12's CNI plugins (bridge, host-local, loopback) set it up; the guest
// has the address CNI gave the pod (PodSandboxStatus's) and reaches a
// TCP server on the bridge's gateway address from it. After the pod's
// stop and removal no VMM, TAP, qdisc, mount, bundle or address lease is
// left.
func TestCRIPodNetwork(t *testing.T) {
	const (
		bridge  = "gvmmcni0"
		subnet  = "10.88.7.0/24"
		gateway = "10.88.7.1"
	)
	cniDir := t.TempDir()
	leases := filepath.Join(cniDir, "leases")
	require.NoError(t, os.Mkdir(filepath.Join(cniDir, "bin"), 0o755))
	for _, p := range containerdpkg.CNIPlugins {
		require.NoError(t, os.Symlink(kvmhost.Asset(p), filepath.Join(cniDir, "bin", p)))
	}
	require.NoError(t, os.Mkdir(filepath.Join(cniDir, "net.d"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(cniDir, "net.d", "10-gvmmtest.conflist"),
		[]byte(fmt.Sprintf(cniConflist, bridge, subnet, gateway, leases)), 0o644))
	// CNI's DEL takes the pod's veth away, not the bridge.
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(bridge); err == nil {
			assert.NoError(t, netlink.LinkDel(l))
		}
	})

	c := startCRI(t, cniDir)
	config := podConfig(t, "netpod", cri.NamespaceMode_POD)
	podID := c.runPod(config)
	st, err := c.rt.PodSandboxStatus(c.ctx, &cri.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true})
	require.NoError(t, err, "PodSandboxStatus")
	require.NotNil(t, st.Status.Network, "the pod's network")
	podIP := st.Status.Network.Ip
	_, cidr, err := net.ParseCIDR(subnet)
	require.NoError(t, err)
	require.True(t, cidr.Contains(net.ParseIP(podIP)), "the pod's address %q is CNI's, from %s", podIP, subnet)
	// Hold the pod's namespace (the one the shim was given) to look in
	// it after CRI has removed its name.
	nsPath := sandboxNetns(t, st.Info["info"])
	podNS := mustNetns(t, nsPath)

	lease := filepath.Join(leases, "gvmmtest", podIP)
	assert.FileExists(t, lease, "host-local's lease of the pod's address")
	// The bridge has its gateway address once CNI set the pod up.
	serveHello(t, gateway+":8080")
	id := c.startContainer(podID, config, "web", "sleep", "100000")
	taps, ingress := netnsTC(t, podNS)
	t.Logf("pod %s: address %s, namespace %s, TAPs %v, ingress qdiscs on %v", podID, podIP, nsPath, taps, ingress)
	assert.Len(t, taps, 1, "the shim's TAP in the pod's namespace")
	assert.Len(t, ingress, 2, "the redirections of the TAP and of CNI's veth")
	addrs := c.exec(id, "ip", "-4", "addr", "show")
	t.Logf("the guest's addresses:\n%s", addrs)
	assert.Contains(t, addrs, "inet "+podIP+"/24", "the guest has the pod's address")
	assert.Equal(t, "hello "+podIP, c.exec(id, "wget", "-q", "-O", "-", "http://"+gateway+":8080/"), "TCP to the gateway, from the pod's address")

	c.removePod(podID, []string{id})
	assertNetnsClean(t, podNS)
	assert.NoFileExists(t, nsPath, "the pod's namespace is unmounted")
	assert.NoFileExists(t, lease, "the pod's address is released")
}

// sandboxNetns is the network namespace path of the sandbox's OCI spec,
// from PodSandboxStatus's verbose info.
func sandboxNetns(t *testing.T, info string) string {
	t.Helper()
	var v struct {
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct{ Type, Path string }
			}
		} `json:"runtimeSpec"`
	}
	require.NoError(t, json.Unmarshal([]byte(info), &v), "the sandbox's info: %s", info)
	for _, ns := range v.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" {
			return ns.Path
		}
	}
	t.Fatalf("no network namespace path in the sandbox's spec: %s", info)
	return ""
}
