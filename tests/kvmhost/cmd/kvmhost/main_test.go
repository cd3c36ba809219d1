package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestExpand(t *testing.T) {
	asset := func(n string) string { return "/assets/" + n }
	got := expand([]string{"run", "--kernel", "{kernel}", "--initrd", "{asset:a.cpio}", "--disk", "{asset:d.img},serial={asset:x}", "{asset:open"},
		"/k/vmlinuz", asset)
	assert.Equal(t, []string{"run", "--kernel", "/k/vmlinuz", "--initrd", "/assets/a.cpio", "--disk", "/assets/d.img,serial=/assets/x", "{asset:open"}, got)
}
