// Package exec_test runs gvmm exec in the KVM test host, whose own / (a
// small initramfs) the guest gets as its root over virtio-9p: a shell
// command (Debian's static busybox) sees the folder it was started in
// and the environment, prints on stdout, and gvmm exec exits with its
// status; writes land in the tmpfs overlay, or on the host with --rw.
// The kernel and its modules are the stock Debian ones of the other
// tests, named with --kernel and --modules (the test host has no /boot).
package exec_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithHostProgram("busybox"),
		// What gvmm exec loads in its guest (guestexec.Modules).
		kvmhost.WithModules("virtio_pci", "9pnet_virtio", "9p", "vmw_vsock_virtio_transport", "overlay"),
	)
}

// runTimeout bounds one gvmm exec; a stuck guest fails the test.
const runTimeout = 4 * time.Minute

type result struct {
	status         int
	stdout, stderr string
	elapsed        time.Duration
}

// gvmmExec runs gvmm exec in dir with the stock kernel and the flags,
// then "--" and the shell script, run by busybox's sh.
func gvmmExec(t *testing.T, dir string, env []string, flags []string, script string) result {
	t.Helper()
	return gvmmExecInput(t, dir, env, flags, script, nil)
}

// gvmmExecInput is gvmmExec with stdin.
func gvmmExecInput(t *testing.T, dir string, env []string, flags []string, script string, stdin io.Reader) result {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	args := append([]string{"exec", "--kernel", k.Vmlinuz, "--modules", k.ModulesDir(), "--memory", "256M"}, flags...)
	args = append(args, "--", kvmhost.Asset("busybox"), "sh", "-c", script)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvmhost.Asset("gvmm"), args...)
	var out, errb bytes.Buffer
	cmd.Dir, cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = dir, append(os.Environ(), env...), stdin, &out, &errb
	start := time.Now()
	err = cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	require.NoError(t, ctx.Err(), "gvmm exec did not finish in %s\nstdout:\n%s\nstderr:\n%s", runTimeout, r.stdout, r.stderr)
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.status = exit.ExitCode()
	case err != nil:
		t.Fatalf("running gvmm exec: %v", err)
	}
	t.Logf("gvmm exec: status %d after %s\nstdout:\n%s\nstderr:\n%s", r.status, r.elapsed.Round(time.Millisecond), r.stdout, r.stderr)
	return r
}

// TestExecStatusOutputFolder: the command's output on stdout and its
// errors on stderr, apart; the folder's files, the environment, its exit
// status; a write stays in the guest.
func TestExecStatusOutputFolder(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "host-file.txt"), []byte("from the host\n"), 0o644))
	bb := kvmhost.Asset("busybox")
	script := "echo hello from the guest; " + bb + " ls; " + bb + " cat host-file.txt; echo FOO=$FOO; " +
		"echo pwd=$(" + bb + " pwd); echo to-stderr >&2; echo x > overlay-only.txt && echo wrote; exit 7"
	r := gvmmExec(t, dir, []string{"FOO=bar"}, nil, script)
	assert.Equal(t, 7, r.status, "COMMAND's exit status")
	assert.Equal(t, "hello from the guest\nhost-file.txt\nfrom the host\nFOO=bar\npwd="+dir+"\nwrote\n", r.stdout,
		"the command's output, byte for byte")
	assert.NoFileExists(t, filepath.Join(dir, "overlay-only.txt"), "a write without --rw reached the host")
	assert.Contains(t, r.stderr, "to-stderr\n", "the command's stderr")
	assert.NotContains(t, r.stderr, "level=ERROR")
}

// TestExecWritable: with --rw the write lands on the host; a command
// killed by a signal gives 128+N.
func TestExecWritable(t *testing.T) {
	dir := t.TempDir()
	r := gvmmExec(t, dir, nil, []string{"--rw"}, "echo data > written.txt; kill -TERM $$")
	assert.Equal(t, 128+15, r.status, "killed by SIGTERM")
	got, err := os.ReadFile(filepath.Join(dir, "written.txt"))
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	assert.Equal(t, "data\n", string(got))
}

// TestExecStdin: the command reads the host's stdin to its end.
func TestExecStdin(t *testing.T) {
	input := "first line\nsecond line, no newline"
	r := gvmmExecInput(t, t.TempDir(), nil, nil, kvmhost.Asset("busybox")+" wc -c; echo read to the end", strings.NewReader(input))
	assert.Equal(t, 0, r.status)
	assert.Equal(t, fmt.Sprintf("%d\nread to the end\n", len(input)), r.stdout)
}

// TestExecCommandNotFound: 127, as a shell gives, with a message.
func TestExecCommandNotFound(t *testing.T) {
	k, err := debkernel.Get()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvmhost.Asset("gvmm"), "exec", "--kernel", k.Vmlinuz, "--modules", k.ModulesDir(),
		"--memory", "256M", "--", "no-such-command-here")
	out, err := cmd.Output()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "%v\n%s", err, out)
	assert.Equal(t, 127, exit.ExitCode(), "%s", exit.Stderr)
	assert.Contains(t, string(exit.Stderr), "no-such-command-here: command not found")
	assert.Empty(t, out, "nothing on stdout")
}
