package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestREADMEHelp keeps the README's copy of every command's --help what
// gvmm prints.
func TestREADMEHelp(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	env := cmdEnv{getenv: func(string) string { return "" }} // the defaults, whatever this shell's environment
	var cmds [][]string
	cmds = append(cmds, nil)
	for _, c := range newRootCmd(env).Commands() {
		if c.IsAvailableCommand() && c.Name() != "help" && c.Name() != "completion" {
			cmds = append(cmds, []string{c.Name()})
		}
	}
	require.Greater(t, len(cmds), 10)
	for _, args := range cmds {
		var stdout, stderr bytes.Buffer
		env.stdout, env.stderr = &stdout, &stderr
		require.Equal(t, exitOK, execute(env, append(args, "--help")))
		want := "```\n$ " + strings.Join(append(append([]string{"gvmm"}, args...), "--help"), " ") + "\n" + stdout.String() + "```\n"
		assert.Contains(t, string(readme), want, "README.md: gvmm %v --help, as it prints it", args)
	}
}
