package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
	"github.com/gvmm-dev/gvmm/machine"
	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/machine/vmdef"
)

// apiTimeout bounds one question to a VMM's API.
const apiTimeout = 5 * time.Second

func defineCmd(c *vmCommand) func() int {
	return func() int {
		def, err := vmdef.ParseFile(c.args[0])
		if err == nil {
			err = def.CheckFiles()
		}
		if err != nil {
			return c.fail(err)
		}
		_, l, err := c.lock(def.Name)
		if err != nil {
			return c.fail(err)
		}
		defer l.Unlock()
		if err := l.Define(def); err != nil {
			return c.fail(err)
		}
		c.printf("%s defined from %s\n", def.Name, c.args[0])
		return exitOK
	}
}

func undefineCmd(c *vmCommand) func() int {
	return func() int {
		dir, l, err := c.lock(c.args[0])
		if err != nil {
			return c.fail(err)
		}
		defer l.Unlock()
		if _, err := c.status(dir, l); err != nil {
			return c.fail(err)
		}
		if err := l.Undefine(); err != nil {
			return c.fail(err)
		}
		c.printf("%s undefined (its disk images are kept)\n", c.args[0])
		return exitOK
	}
}

// vmInfo is one VM in gvmm list.
type vmInfo struct {
	Name  string `json:"name"`
	State string `json:"state"` // running, paused or stopped
	// Crashed is set for a stopped VM whose VMM died.
	Crashed       bool    `json:"crashed,omitempty"`
	PID           int     `json:"pid,omitempty"`
	VCPUs         int     `json:"vcpus"`
	MemoryMiB     uint64  `json:"memory_mib"`
	BalloonMiB    *uint64 `json:"balloon_actual_mib,omitempty"`
	UptimeSeconds float64 `json:"uptime_s,omitempty"`
	Error         string  `json:"error,omitempty"` // why the rest is unknown
}

func listCmd(c *vmCommand) func() int {
	asJSON := c.fs.Bool("json", false, "print JSON")
	return func() int {
		dir, err := c.open()
		if err != nil {
			return c.fail(err)
		}
		vms, err := listVMs(dir, c)
		if err != nil {
			return c.fail(err)
		}
		if *asJSON {
			enc := json.NewEncoder(c.env.stdout)
			enc.SetIndent("", "  ")
			if vms == nil {
				vms = []vmInfo{}
			}
			if err := enc.Encode(vms); err != nil {
				return c.fail(err)
			}
			return exitOK
		}
		tw := tabwriter.NewWriter(c.env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSTATE\tVCPUS\tMEMORY\tBALLOON\tUPTIME")
		for _, vm := range vms {
			st, balloon, uptime := vm.State, "-", "-"
			if vm.Crashed {
				st += " (crashed)"
			}
			if vm.BalloonMiB != nil {
				balloon = vmdef.FormatSize(*vm.BalloonMiB * api.MiB)
				if *vm.BalloonMiB == 0 {
					balloon = "0"
				}
			}
			if vm.State != api.StateStopped && vm.Error == "" {
				uptime = (time.Duration(vm.UptimeSeconds) * time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", vm.Name, st, vm.VCPUs, vmdef.FormatSize(vm.MemoryMiB*api.MiB), balloon, uptime)
		}
		if err := tw.Flush(); err != nil {
			return c.fail(err)
		}
		for _, vm := range vms {
			if vm.Error != "" {
				c.warn("%s: %s", vm.Name, vm.Error)
			}
		}
		return exitOK
	}
}

// listVMs describes every defined VM, cleaning up after dead VMMs whose
// lock is free (a busy VM is left for the command working on it).
func listVMs(dir *state.Dir, c *vmCommand) ([]vmInfo, error) {
	names, err := dir.Names()
	if err != nil {
		return nil, err
	}
	var out []vmInfo
	for _, name := range names {
		vm := vmInfo{Name: name, State: api.StateStopped}
		def, err := dir.Load(name)
		if err != nil {
			vm.Error = err.Error()
			out = append(out, vm)
			continue
		}
		cpus, memory := sizeOf(def)
		vm.VCPUs, vm.MemoryMiB = cpus, memory/api.MiB
		if err := clearStaleNow(dir, c, name); err != nil {
			return nil, err
		}
		st, err := dir.Status(name)
		if err != nil {
			return nil, err
		}
		switch st.State {
		case state.Crashed:
			vm.Crashed, vm.PID = true, st.PID
		case state.Running:
			vm.State, vm.PID = api.StateRunning, st.PID
			info, err := vmmInfo(dir, name)
			if err != nil {
				vm.Error = fmt.Sprintf("its VMM (pid %d) does not answer: %v", st.PID, err)
				break
			}
			vm.State, vm.VCPUs, vm.MemoryMiB, vm.UptimeSeconds = info.State, info.VCPUs, info.MemoryMiB, info.UptimeSeconds
			if info.Balloon != nil {
				vm.BalloonMiB = &info.Balloon.ActualMiB
			}
		}
		out = append(out, vm)
	}
	return out, nil
}

// clearStaleNow cleans up after name's dead VMM if no command holds its
// lock.
func clearStaleNow(dir *state.Dir, c *vmCommand, name string) error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // one try
	l, err := dir.Lock(ctx, name)
	if errors.Is(err, state.ErrBusy) {
		return nil
	}
	if err != nil {
		return err
	}
	defer l.Unlock()
	_, err = c.status(dir, l)
	return err
}

// vmmInfo asks name's VMM for its state.
func vmmInfo(dir *state.Dir, name string) (api.Info, error) {
	cl := api.NewClient(dir.Paths(name).API)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	return cl.Info(ctx)
}

// sizeOf is the vCPUs and memory def gives its guest, defaults applied.
func sizeOf(def *vmdef.Definition) (cpus int, memory uint64) {
	cpus, memory = def.Config.CPUs, def.Config.Memory
	if cpus == 0 {
		cpus = machine.DefaultCPUs
	}
	if memory == 0 {
		memory = machine.DefaultMemory
	}
	return cpus, memory
}
