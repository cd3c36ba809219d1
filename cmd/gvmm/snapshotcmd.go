package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/gvmm-dev/gvmm/machine/api"
)

// snapshotTimeout bounds the snapshot call, which writes all of guest
// RAM that is not zero.
const snapshotTimeout = 10 * time.Minute

// snapshotCmd saves a running VM into a new folder: pause, snapshot,
// resume. A VM that was paused already is snapshotted and left paused.
func snapshotCmd(c *vmCommand) func() int {
	return func() int {
		dest, err := filepath.Abs(c.args[1])
		if err != nil {
			return c.usageErr("%v", err)
		}
		dir, l, _, code, ok := c.running(c.args[0])
		if !ok {
			return code
		}
		defer l.Unlock()
		cl := api.NewClient(dir.Paths(l.Name()).API)
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
		defer cancel()
		wasPaused := false
		if err := cl.Pause(ctx); err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict {
				return c.fail(fmt.Errorf("pausing %s: %w", l.Name(), err))
			}
			wasPaused = true
		}
		err = cl.Snapshot(ctx, dest)
		if !wasPaused {
			if rerr := cl.Resume(ctx); rerr != nil {
				c.warn("resuming %s: %v", l.Name(), rerr)
			}
		}
		if err != nil {
			return c.fail(fmt.Errorf("snapshot of %s: %w", l.Name(), err))
		}
		c.printf("%s saved in %s (gvmm run --restore %s resumes it)\n", l.Name(), dest, dest)
		return exitOK
	}
}
