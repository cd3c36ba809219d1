// Command containerd-shim-gvmm-v1 is containerd's runtime v2 shim for
// gvmm (runtime io.containerd.gvmm.v1): each container runs in a VM of
// its own, or with a pod sandbox's annotations (CRI's) each pod does, and
// the shim process is that VM's VMM (gvmm as a library), so a shim's end
// is its VM's. The containers' root file systems reach the guest over
// virtio-9p; gvmm-agent, the guest's init, runs its processes
// and speaks to the shim over vsock.
//
// It is built on containerd 1.7's shim library, whose protocol (task API
// v2 over ttrpc, the socket address printed by "start") is the one of
// the containerd that Debian 13 ships; see the README's "containerd and
// Kubernetes".
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/runtime/v2/shim"
)

// runtimeName is how containerd names this runtime.
const runtimeName = "io.containerd.gvmm.v1"

func main() {
	plugin.Register(&plugin.Registration{
		Type:     plugin.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugin.EventPlugin, plugin.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (interface{}, error) {
			pp, err := ic.GetByID(plugin.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			return newService(ic.Context, pp.(shim.Publisher), ss.(shutdown.Service)), nil
		},
	})
	if len(os.Args) == 3 && os.Args[1] == mounterArg {
		if err := runMounter(os.Args[2], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "gvmm pod mounter:", err)
			os.Exit(1)
		}
		return
	}
	shim.RunManager(context.Background(), manager{})
}
