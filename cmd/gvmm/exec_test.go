package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
)

// gvmm exec's own failures exit 125, never a status COMMAND could give
// through a shell's conventions.
func TestExecFailuresExit125(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for _, args := range [][]string{
		{"exec"},
		{"exec", "--memory", "12Q", "--", "true"},
		{"exec", "--log-level", "loud", "--", "true"},
		{"exec", "--share", "/srv", "--", "true"},
		{"exec", "--bogus", "--", "true"},
		{"exec", "--modules", missing, "--", "true"},
	} {
		assert.Equal(t, exitExecFault, execute(osEnv(), args), "%v", args)
	}
	assert.Equal(t, 2, execute(osEnv(), []string{"run", "--share", "/srv"}), "gvmm run: a share needs a tag")
}
