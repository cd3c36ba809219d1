package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var updateCLIDoc = flag.Bool("update", false, "rewrite docs/cli.md from the commands' --help")

const cliDocPath = "../../docs/cli.md"

// TestCLIReference keeps docs/cli.md what gvmm prints for every command's
// --help; go test ./cmd/gvmm -run TestCLIReference -update rewrites it.
func TestCLIReference(t *testing.T) {
	env := cmdEnv{getenv: func(string) string { return "" }} // the defaults, whatever this shell's environment
	cmds := [][]string{nil}
	for _, c := range newRootCmd(env).Commands() {
		if c.IsAvailableCommand() && c.Name() != "help" && c.Name() != "completion" {
			cmds = append(cmds, []string{c.Name()})
		}
	}
	require.Greater(t, len(cmds), 10)
	var doc strings.Builder
	doc.WriteString("# gvmm's commands\n\nEvery command's `--help`, as gvmm prints it (`go test ./cmd/gvmm -run\nTestCLIReference -update` writes this page). The [README](../README.md)\nexplains the flags, exit statuses and shell completion.\n")
	for _, args := range cmds {
		var stdout, stderr bytes.Buffer
		env.stdout, env.stderr = &stdout, &stderr
		require.Equal(t, exitOK, execute(env, append(args, "--help")))
		doc.WriteString("\n```\n$ " + strings.Join(append(append([]string{"gvmm"}, args...), "--help"), " ") + "\n" + stdout.String() + "```\n")
	}
	if *updateCLIDoc {
		require.NoError(t, os.WriteFile(cliDocPath, []byte(doc.String()), 0o644))
	}
	got, err := os.ReadFile(cliDocPath)
	require.NoError(t, err)
	assert.Equal(t, doc.String(), string(got), "docs/cli.md is not what gvmm prints: go test ./cmd/gvmm -run TestCLIReference -update")
}
