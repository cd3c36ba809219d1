package main

import (
	"context"
	"fmt"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
	"github.com/gvmm-dev/gvmm/machine/api"
)

// metricsCmd prints a running VM's metrics in Prometheus' text format,
// as its API socket's GET /metrics serves them.
func metricsCmd(c *vmCommand) func() int {
	return func() int {
		dir, err := c.open()
		if err != nil {
			return c.fail(err)
		}
		text, err := scrapeVM(dir, c.args[0])
		if err != nil {
			return c.fail(err)
		}
		if _, err := c.env.stdout.Write(text); err != nil {
			return c.fail(err)
		}
		return exitOK
	}
}

// scrapeVM fetches name's metrics from its VMM. It reads the state
// folder without taking the VM's lock: a scrape changes nothing, and must
// not wait behind a shutdown.
func scrapeVM(dir *state.Dir, name string) ([]byte, error) {
	if _, err := dir.Load(name); err != nil {
		return nil, err
	}
	st, err := dir.Status(name)
	if err != nil {
		return nil, err
	}
	if st.State != state.Running {
		return nil, fmt.Errorf("%s is not running", name)
	}
	cl := api.NewClient(dir.Paths(name).API)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	text, err := cl.Metrics(ctx)
	if err != nil {
		return nil, fmt.Errorf("its VMM (pid %d) does not answer: %w", st.PID, err)
	}
	return text, nil
}
