package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/backup"
)

// progress shows a backup or restore: on a terminal a bar redrawn in
// place, otherwise one line per file once it is checksummed.
type progress struct {
	w     io.Writer
	bar   bool
	total int64 // bytes of all files through all steps
	base  int64 // bytes of the steps finished
	drawn time.Time
}

const (
	barWidth  = 30
	redrawGap = 100 * time.Millisecond
)

func (p *progress) event(e backup.Event) {
	if !e.Finished {
		if p.bar && time.Since(p.drawn) >= redrawGap {
			p.draw(e, e.Done)
		}
		return
	}
	p.base += e.Size
	switch {
	case p.bar:
		p.draw(e, 0)
		fmt.Fprint(p.w, " "+e.Step)
		if e.Copied.SHA256 != "" {
			fmt.Fprint(p.w, "\n")
		}
	case e.Copied.SHA256 != "":
		fmt.Fprintf(p.w, "%s: %s (%s of data), sha256 %s\n", e.Path, humanSize(uint64(e.Size)), humanSize(uint64(e.Copied.Data)), e.Copied.SHA256)
	}
}

func (p *progress) draw(e backup.Event, done int64) {
	p.drawn = time.Now()
	all := p.base + done
	frac := 1.0
	if p.total > 0 {
		frac = min(float64(all)/float64(p.total), 1)
	}
	n := int(frac * barWidth)
	fmt.Fprintf(p.w, "\r[%s%s] %3.0f%%  %s\x1b[K", strings.Repeat("#", n), strings.Repeat(".", barWidth-n), frac*100, e.Path)
}
