package main

import (
	"bytes"
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
	var plain bytes.Buffer
	p := &progress{w: &plain, total: 2 * (100 + 4<<20)}
	for _, e := range events {
		p.event(e)
	}
	assert.Equal(t, "vm.json: 100 B (100 B of data), sha256 aa\ndisks/a.img: 4.0 MiB (1.0 MiB of data), sha256 bb\n", plain.String())

	var bar bytes.Buffer
	p = &progress{w: &bar, bar: true, total: 2 * (100 + 4<<20)}
	for _, e := range events {
		p.event(e)
	}
	lines := strings.Split(bar.String(), "\n")
	assert.Len(t, lines, 3, "a line per file checksummed, redrawn in place until then")
	assert.Contains(t, lines[0], "\r[..............................]   0%  vm.json\x1b[K copied")
	assert.NotContains(t, lines[0], "12%", "redrawn at most every redrawGap")
	assert.Contains(t, lines[0], "\r[###############...............]  50%  disks/a.img\x1b[K copied")
	assert.Contains(t, lines[0], "\r[###############...............]  50%  vm.json\x1b[K hashed")
	assert.Equal(t, "\r[##############################] 100%  disks/a.img\x1b[K hashed", lines[1])
	assert.Equal(t, "", lines[2])
}
