package state

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/machine/vmdef"
)

// envHoldPID makes the test binary a stand-in VMM: it creates the pid
// file the variable names, says so on stdout and waits to be killed.
const envHoldPID = "GVMM_STATE_TEST_HOLD_PID"

func TestMain(m *testing.M) {
	if path := os.Getenv(envHoldPID); path != "" {
		if _, err := CreatePIDFile(path); err != nil {
			os.Stdout.WriteString("error " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("ready\n")
		select {}
	}
	os.Exit(m.Run())
}

func openDir(t *testing.T) *Dir {
	t.Helper()
	d, err := Open(filepath.Join(t.TempDir(), "state"))
	require.NoError(t, err)
	return d
}

func lock(t *testing.T, d *Dir, name string) *Lock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := d.Lock(ctx, name)
	require.NoError(t, err)
	return l
}

func definition(t *testing.T, name string) *vmdef.Definition {
	t.Helper()
	def, err := vmdef.Parse("test.json", []byte(`{"name":"`+name+`","kernel":"/k","memory":"256M"}`), "/")
	require.NoError(t, err)
	return def
}

func TestOpenMakesPrivateFolders(t *testing.T) {
	d := openDir(t)
	for _, sub := range []string{"", "vms", "locks", "run"} {
		st, err := os.Stat(filepath.Join(d.Root(), sub))
		require.NoError(t, err)
		assert.Equal(t, os.ModeDir|0o700, st.Mode(), sub)
	}
}

func TestWriteFileIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
	require.NoError(t, WriteFile(path, []byte("new"), 0o600))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "new", string(data))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode())
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, ents, 1, "no temporary file is left")

	err = WriteFile(filepath.Join(dir, "nope", "f"), nil, 0o600)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestDefineLoadUndefine(t *testing.T) {
	d := openDir(t)
	l := lock(t, d, "web1")
	defer l.Unlock()
	require.NoError(t, l.Define(definition(t, "web1")))
	assert.ErrorIs(t, l.Define(definition(t, "web1")), ErrExists)
	assert.Error(t, l.Define(definition(t, "other")), "a definition under another VM's lock")

	names, err := d.Names()
	require.NoError(t, err)
	assert.Equal(t, []string{"web1"}, names)
	def, err := d.Load("web1")
	require.NoError(t, err)
	assert.Equal(t, uint64(256<<20), def.Config.Memory)
	_, err = d.Load("web2")
	assert.ErrorIs(t, err, ErrNotDefined)
	_, err = d.Load("../etc/passwd")
	assert.Error(t, err)

	require.NoError(t, l.Undefine())
	assert.ErrorIs(t, l.Undefine(), ErrNotDefined)
	names, err = d.Names()
	require.NoError(t, err)
	assert.Empty(t, names)
}

func TestLockSerialises(t *testing.T) {
	d := openDir(t)
	first := lock(t, d, "web1")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, err := d.Lock(ctx, "web1")
	assert.ErrorIs(t, err, ErrBusy)
	other := lock(t, d, "web2") // other VMs are independent
	require.NoError(t, other.Unlock())

	// A waiter gets the lock once it is released, also when the holder
	// removed the lock file by undefining the VM.
	require.NoError(t, first.Define(definition(t, "web1")))
	got := make(chan *Lock)
	go func() {
		l, err := d.Lock(context.Background(), "web1")
		assert.NoError(t, err)
		got <- l
	}()
	time.Sleep(2 * lockPoll)
	require.NoError(t, first.Undefine())
	require.NoError(t, first.Unlock())
	second := <-got
	same, err := isFile(second.f, filepath.Join(d.Root(), "locks", "web1.lock"))
	require.NoError(t, err)
	assert.True(t, same, "the waiter holds the lock file that is in place")
	require.NoError(t, second.Unlock())
}

func TestStatusOfALiveAndADeadVMM(t *testing.T) {
	d := openDir(t)
	l := lock(t, d, "web1")
	defer l.Unlock()
	require.NoError(t, l.Define(definition(t, "web1")))
	p, err := l.Prepare()
	require.NoError(t, err)

	st, err := d.Status("web1")
	require.NoError(t, err)
	assert.Equal(t, Stopped, st.State)

	// A stand-in VMM in another process, killed with SIGKILL.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHoldPID+"="+p.PID)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)

	st, err = d.Status("web1")
	require.NoError(t, err)
	assert.Equal(t, Running, st.State)
	assert.Equal(t, cmd.Process.Pid, st.PID)
	assert.ErrorIs(t, l.Undefine(), ErrRunning)
	_, err = CreatePIDFile(p.PID)
	assert.ErrorIs(t, err, ErrRunning, "a second VMM on the same pid file")
	cleaned, err := l.ClearStale()
	require.NoError(t, err)
	assert.False(t, cleaned, "a live VMM is not stale")

	for _, f := range []string{p.API, p.Console} {
		require.NoError(t, os.WriteFile(f, nil, 0o600)) // sockets it leaves behind
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	st, err = d.Status("web1")
	require.NoError(t, err)
	assert.Equal(t, Crashed, st.State)
	assert.Equal(t, cmd.Process.Pid, st.PID)
	cleaned, err = l.ClearStale()
	require.NoError(t, err)
	assert.True(t, cleaned)
	for _, f := range []string{p.API, p.Console, p.PID} {
		assert.NoFileExists(t, f)
	}
	st, err = d.Status("web1")
	require.NoError(t, err)
	assert.Equal(t, Crashed, st.State, "the crash is remembered")
	assert.Equal(t, cmd.Process.Pid, st.PID)

	_, err = l.Prepare()
	require.NoError(t, err)
	st, err = d.Status("web1")
	require.NoError(t, err)
	assert.Equal(t, Stopped, st.State, "a new start forgets it")
}

func TestPIDFileRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pid")
	pf, err := CreatePIDFile(path)
	require.NoError(t, err)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(os.Getpid()), strings.TrimSpace(string(data)))
	pid, locked, err := probePID(path)
	require.NoError(t, err)
	assert.True(t, locked)
	assert.Equal(t, os.Getpid(), pid)
	require.NoError(t, pf.Remove())
	assert.NoFileExists(t, path)

	// A pid file replaced meanwhile is not ours to remove.
	pf, err = CreatePIDFile(path)
	require.NoError(t, err)
	require.NoError(t, os.Remove(path))
	require.NoError(t, os.WriteFile(path, []byte("1\n"), 0o600))
	require.NoError(t, pf.Remove())
	assert.FileExists(t, path)
}
