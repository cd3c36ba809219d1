package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/backup"
)

func TestProgress(t *testing.T) {
	done := backup.Copied{Size: 4 << 20, Data: 1 << 20, SHA256: "bb"}
	events := []backup.Event{
		{Path: "vm.json", Step: backup.StepCopy, Done: 100, Size: 100, Finished: true},
		{Path: "disks/a.img", Step: backup.StepCopy, Done: 1 << 20, Size: 4 << 20},
		{Path: "disks/a.img", Step: backup.StepCopy, Done: 4 << 20, Size: 4 << 20, Finished: true},
		{Path: "vm.json", Step: backup.StepHash, Done: 100, Size: 100, Finished: true, Copied: backup.Copied{Size: 100, Data: 100, SHA256: "aa"}},
		{Path: "disks/a.img", Step: backup.StepHash, Done: 4 << 20, Size: 4 << 20, Finished: true, Copied: done},
	}
	const total = 2 * (100 + 4<<20)
	lines := "vm.json: 100 B (100 B of data), sha256 aa\ndisks/a.img: 4.0 MiB (1.0 MiB of data), sha256 bb\n"

	var plain bytes.Buffer
	p := newProgress(&plain, false, total)
	for _, e := range events {
		p.event(e)
	}
	p.stop()
	assert.Equal(t, lines, plain.String(), "off a terminal: the lines alone, no bar")

	var bar bytes.Buffer
	p = newProgress(&bar, true, total)
	for _, e := range events {
		p.event(e)
	}
	p.stop()
	out := bar.String()
	assert.Contains(t, out, "\r", "the bar is redrawn in place")
	assert.Contains(t, out, "copied: vm.json")
	assert.Contains(t, out, "100%")
	// What stays on screen once each redraw has overwritten the last: the
	// checksum lines, then the full bar.
	var screen []string
	for _, l := range strings.Split(out, "\n") {
		l = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`).ReplaceAllString(l, "")
		frames := strings.Split(l, "\r")
		if s := strings.TrimSpace(frames[len(frames)-1]); s != "" {
			screen = append(screen, s)
		}
	}
	if assert.Len(t, screen, 3, "%q", out) {
		assert.Equal(t, strings.Split(strings.TrimSpace(lines), "\n"), screen[:2])
		assert.Contains(t, screen[2], "100%")
		assert.Contains(t, screen[2], "hashed: disks/a.img")
	}
}
