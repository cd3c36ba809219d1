package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
)

// TestExitStatuses: help exits 0, bad usage 2 (gvmm exec 125) with one
// line that says what is wrong and where help is, not the whole usage.
func TestExitStatuses(t *testing.T) {
	tests := []struct {
		args    []string
		want    int
		wantErr string // in stderr; "" for none
		wantOut string // in stdout
	}{
		{nil, exitUsage, "", ""},
		{[]string{"frobnicate"}, exitUsage, "gvmm: unknown command \"frobnicate\" for \"gvmm\"\nSee 'gvmm --help'.\n", ""},
		{[]string{"--bogus"}, exitUsage, "gvmm: unknown flag: --bogus", ""},
		{[]string{"help"}, exitOK, "", "VMs defined in the state folder:"},
		{[]string{"--help"}, exitOK, "", "version"},
		{[]string{"-h"}, exitOK, "", "completion"},
		{[]string{"help", "start"}, exitOK, "", "gvmm start NAME [flags]"},
		{[]string{"start", "--help"}, exitOK, "", "--timeout D"},
		{[]string{"list", "--help"}, exitOK, "", "--state-dir DIR"},
		{[]string{"run", "--help"}, exitOK, "", "--disk FILE[,readonly][,serial=ID]"},
		{[]string{"exec", "--help"}, exitOK, "", "gvmm exec [flags] -- COMMAND [ARGS...]"},
		{[]string{"ctl", "--help"}, exitOK, "", "balloon SIZE"},
		{[]string{"start"}, exitUsage, "gvmm start: missing NAME\nSee 'gvmm start --help'.\n", ""},
		{[]string{"backup"}, exitUsage, "gvmm backup: missing NAME DEST", ""},
		{[]string{"list", "extra"}, exitUsage, `gvmm list: unexpected argument "extra"`, ""},
		{[]string{"list", "--json=maybe"}, exitUsage, `invalid argument "maybe" for "--json" flag`, ""},
		{[]string{"shutdown", "--timeout", "soon", "web1"}, exitUsage, `invalid argument "soon" for "--timeout" flag`, ""},
		{[]string{"start", "--state-dir"}, exitUsage, "flag needs an argument: --state-dir", ""},
		{[]string{"run", "-kernel", "k"}, exitUsage, "long flags take two dashes, --kernel", ""},
		{[]string{"run", "--cpus", "two"}, exitUsage, `invalid argument "two" for "--cpus" flag`, ""},
		{[]string{"version", "now"}, exitUsage, `gvmm version: unexpected argument "now"`, ""},
		{[]string{"completion"}, exitUsage, "", ""}, // with the usage on stderr
		{[]string{"completion", "tcsh"}, exitUsage, `gvmm completion: unknown command "tcsh"`, ""},
		{[]string{"completion", "zsh"}, exitOK, "", "#compdef gvmm"},
		{[]string{"exec", "--bogus", "--", "true"}, exitExecFault, "gvmm exec: unknown flag: --bogus", ""},
		{[]string{"exec", "-rw", "--", "true"}, exitExecFault, "long flags take two dashes, --rw", ""},
		{[]string{"exec", "--cpus"}, exitExecFault, "flag needs an argument: --cpus", ""},
		{[]string{"ctl", "--timeout", "x"}, exitUsage, `invalid argument "x" for "--timeout" flag`, ""},
	}
	stateDir := filepath.Join(t.TempDir(), "state")
	for _, tt := range tests {
		t.Run(filepath.Join(tt.args...), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			env := cmdEnv{stdout: &stdout, stderr: &stderr, getenv: func(k string) string {
				if k == state.EnvRoot {
					return stateDir
				}
				return ""
			}}
			assert.Equal(t, tt.want, execute(env, tt.args))
			if tt.wantErr == "" && tt.want == exitOK {
				assert.Empty(t, stderr.String())
			}
			assert.Contains(t, stderr.String(), tt.wantErr)
			assert.Contains(t, stdout.String(), tt.wantOut)
			if tt.want != exitOK && tt.wantErr != "" {
				assert.NotContains(t, stderr.String(), "Flags:", "no usage dump on an error")
			}
		})
	}
}
