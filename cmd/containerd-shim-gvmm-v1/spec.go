package main

import (
	"errors"
	"log/slog"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/internal/agent"
	"github.com/gvmm-dev/gvmm/machine"
)

// guestFilesystems are the mount types the guest's kernel provides; a
// bind mount of a host path cannot reach the guest.
var guestFilesystems = map[string]bool{"proc": true, "sysfs": true, "tmpfs": true, "devpts": true, "mqueue": true}

// minMemory is the least a VM needs to boot the agent.
const minMemory = 128 * machine.MiB

// The annotations of CRI (containerd's and Kata's): a pod's sandbox
// (pause) container has type sandbox, its other containers type
// container and the sandbox's id.
const (
	annotationType      = "io.kubernetes.cri.container-type"
	annotationSandboxID = "io.kubernetes.cri.sandbox-id"
	typeSandbox         = "sandbox"
	typeContainer       = "container"
)

// podContainer reports the sandbox of a pod's container, which runs in
// the sandbox's VM; "" for a sandbox or a container of its own.
func podContainer(spec *specs.Spec) string {
	if spec.Annotations[annotationType] != typeContainer {
		return ""
	}
	return spec.Annotations[annotationSandboxID]
}

// fromSpec is what of the OCI spec reaches the guest: the process, the
// root, hostname and kernel mounts, and the VM's size from the
// resources.
func fromSpec(spec *specs.Spec, log *slog.Logger) (*agent.Process, *agent.Container, vmSpec, error) {
	if spec.Process == nil {
		return nil, nil, vmSpec{}, errors.New("the spec has no process")
	}
	p, err := fromProcess(spec.Process)
	if err != nil {
		return nil, nil, vmSpec{}, err
	}
	c := &agent.Container{Hostname: spec.Hostname}
	vm := vmSpec{podSandbox: spec.Annotations[annotationType] == typeSandbox, sandboxID: podContainer(spec), netns: specNetns(spec)}
	if vm.cgroup, err = specCgroup(spec); errors.Is(err, errSystemdCgroup) {
		log.Warn("the shim stays in containerd's cgroup", "err", err)
	} else if err != nil {
		return nil, nil, vmSpec{}, err
	}
	if spec.Root != nil {
		// A pod's share holds the roots of several containers: each
		// one's read-only root is the guest's to keep.
		vm.readonly = spec.Root.Readonly && !vm.podSandbox
		c.Readonly = spec.Root.Readonly
	}
	for _, m := range spec.Mounts {
		if !guestFilesystems[m.Type] {
			log.Info("a mount the guest cannot have is left out", "destination", m.Destination, "type", m.Type, "source", m.Source)
			continue
		}
		c.Mounts = append(c.Mounts, agent.Mount{Destination: m.Destination, Type: m.Type, Source: m.Source, Options: m.Options})
	}
	if r := spec.Linux; r != nil && r.Resources != nil {
		if mem := r.Resources.Memory; mem != nil && mem.Limit != nil && *mem.Limit > 0 {
			vm.memory = max(uint64(*mem.Limit), minMemory)
		}
		if cpu := r.Resources.CPU; cpu != nil && cpu.Quota != nil && cpu.Period != nil && *cpu.Quota > 0 && *cpu.Period > 0 {
			n := (uint64(*cpu.Quota) + *cpu.Period - 1) / *cpu.Period
			vm.cpus = int(min(n, machine.MaxCPUs))
		}
	}
	return p, c, vm, nil
}

// rlimits maps the spec's RLIMIT_ names to their numbers.
var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// fromProcess is the spec's process as the agent runs it.
func fromProcess(sp *specs.Process) (*agent.Process, error) {
	if len(sp.Args) == 0 {
		return nil, errors.New("the process has no arguments")
	}
	cwd := sp.Cwd
	if cwd == "" {
		cwd = "/"
	}
	p := &agent.Process{
		Args: sp.Args, Env: sp.Env, Cwd: cwd, Terminal: sp.Terminal,
		UID: sp.User.UID, GID: sp.User.GID, AdditionalGIDs: sp.User.AdditionalGids,
	}
	for _, r := range sp.Rlimits {
		n, ok := rlimits[strings.ToUpper(r.Type)]
		if !ok {
			return nil, errors.New("an unknown rlimit " + r.Type)
		}
		p.Rlimits = append(p.Rlimits, agent.Rlimit{Resource: n, Soft: r.Soft, Hard: r.Hard})
	}
	return p, nil
}
