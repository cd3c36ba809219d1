// Package makerun_test runs make run as a new user does on a fresh
// clone, with the guest shell's input piped in, and checks that every
// line reaches the shell as typed. make run goes into the KVM test host
// by itself where /dev/kvm is missing.
package makerun_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runTimeout bounds make run: its builds, the test host's boot and the
// guest's, which take 1 to 3 minutes. It ends well before the package's
// own timeout (make test's -timeout 20m), so that a run that hangs fails
// with what make run printed, not with a goroutine dump.
const runTimeout = 8 * time.Minute

func TestPipedInput(t *testing.T) {
	makeProg, err := exec.LookPath("make")
	require.NoError(t, err, "make run needs make")
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(root, "Makefile"))

	// Arithmetic, so that the echo of the typed line cannot pass for the
	// command's output; the last line powers the guest off, which ends
	// make run.
	input := "echo hi-$((40+2))\necho two-$((1+1))\nuname -s\nshutdown halt\n"
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, makeProg, "-s", "run")
	cmd.Dir = root
	cmd.Stdin = bytes.NewBufferString(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	require.NoError(t, ctx.Err(), "make run did not end within %s\nstdout:\n%s\nstderr:\n%s", runTimeout, stdout.String(), stderr.String())
	require.NoError(t, err, "make run\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())

	out := stdout.String()
	for _, want := range []string{`hi-42`, `two-2`, `Linux`} {
		// A command's output starts a line, or follows the prompt.
		assert.Regexp(t, regexp.MustCompile(`(?m)^(\$ )*`+want+`\r?$`), out, "the output of a piped line")
	}
	assert.NotContains(t, out, "not found", "a piped line reached the shell cut")
	// gvmm logs on stderr; in the test host its stdout and stderr are
	// one terminal, as they are for a user at one.
	assert.Contains(t, out+stderr.String(), `reason="powered off"`, "the last piped line ended the guest")
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out, stderr.String())
	}
}
