package main

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/backup"
)

// progress shows a backup or restore: one line per file once it is
// checksummed and, on a terminal, a bar under them redrawn in place.
// Logs and pipes get the lines alone.
type progress struct {
	w    io.Writer
	bar  *progressbar.ProgressBar // nil off a terminal
	base int64                    // bytes of the steps finished
}

// redrawGap keeps a fast copy from spending its time redrawing.
const redrawGap = 100 * time.Millisecond

// newProgress shows total bytes (of all files through all steps) on w,
// with a bar if w is a terminal.
func newProgress(w io.Writer, terminal bool, total int64) *progress {
	p := &progress{w: w}
	if terminal {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionShowBytes(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(redrawGap),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionUseANSICodes(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	}
	return p
}

func (p *progress) event(e backup.Event) {
	done := e.Done
	if e.Finished {
		p.base += e.Size
		done = 0
	}
	if e.Finished && e.Copied.SHA256 != "" {
		if p.bar != nil {
			_ = p.bar.Clear() // the line goes where the bar was, redrawn under it
		}
		fmt.Fprintf(p.w, "%s: %s (%s of data), sha256 %s\n", e.Path, humanSize(uint64(e.Size)), humanSize(uint64(e.Copied.Data)), e.Copied.SHA256)
	}
	if p.bar != nil {
		p.bar.Describe(e.Step + ": " + e.Path)
		_ = p.bar.Set64(p.base + done) // a failed write to w only loses a frame
	}
}

// stop ends the bar's line where it stands (a failed copy stops short of
// 100%), so that what follows is printed under it; later events print
// their lines alone.
func (p *progress) stop() {
	if p.bar != nil && !p.bar.IsFinished() {
		_ = p.bar.Exit()
	}
	p.bar = nil
}
