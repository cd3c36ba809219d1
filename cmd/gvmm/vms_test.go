package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/backup"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/console"
	"github.com/gvmm-dev/gvmm/cmd/gvmm/internal/state"
)

const miB = 1 << 20

// world is a state folder, the files a VM definition names and a host's
// /proc/meminfo.
type world struct {
	t       *testing.T
	dir     string // holds the others
	state   string
	defs    string // definitions to define
	imgs    string
	sysRoot string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	dir := t.TempDir()
	w := &world{t: t, dir: dir, state: filepath.Join(dir, "state"), defs: filepath.Join(dir, "defs"), imgs: filepath.Join(dir, "images")}
	for _, d := range []string{w.defs, w.imgs} {
		require.NoError(t, os.Mkdir(d, 0o700))
	}
	require.NoError(t, os.WriteFile(filepath.Join(w.imgs, "vmlinuz"), []byte("a kernel"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(w.imgs, "initrd.img"), []byte("an initrd"), 0o600))
	w.sysRoot = filepath.Join(dir, "sys")
	w.setHostMemory(16 << 30)
	return w
}

// setHostMemory writes the MemTotal the commands see.
func (w *world) setHostMemory(bytes uint64) {
	w.t.Helper()
	require.NoError(w.t, os.MkdirAll(filepath.Join(w.sysRoot, "proc"), 0o700))
	info := fmt.Sprintf("MemTotal: %d kB\nMemFree: 1 kB\nMemAvailable: %d kB\n", bytes>>10, bytes>>11)
	require.NoError(w.t, os.WriteFile(filepath.Join(w.sysRoot, "proc/meminfo"), []byte(info), 0o600))
}

// gvmm runs one VM command and returns its exit status and output.
func (w *world) gvmm(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	env := cmdEnv{stdout: &stdout, stderr: &stderr, self: os.Args[0], sysRoot: w.sysRoot,
		getenv: func(k string) string {
			if k == state.EnvRoot {
				return w.state
			}
			return ""
		}}
	code := execute(env, args)
	return code, stdout.String(), stderr.String()
}

// ok runs a command that must succeed and returns its stdout.
func (w *world) ok(args ...string) string {
	w.t.Helper()
	code, out, errOut := w.gvmm(args...)
	require.Equal(w.t, exitOK, code, "gvmm %v\nstdout: %s\nstderr: %s", args, out, errOut)
	return out
}

// image writes a sparse disk image with some data and returns its path.
func (w *world) image(name string, seed byte) string {
	w.t.Helper()
	p := filepath.Join(w.imgs, name)
	f, err := os.Create(p)
	require.NoError(w.t, err)
	defer f.Close()
	_, err = f.WriteAt(bytes.Repeat([]byte{seed}, 64<<10), 0)
	require.NoError(w.t, err)
	_, err = f.WriteAt(bytes.Repeat([]byte{seed + 1}, 4096), 5*miB)
	require.NoError(w.t, err)
	require.NoError(w.t, f.Truncate(16*miB))
	return p
}

// define writes a definition of name with one disk and defines it.
func (w *world) define(name string) string {
	w.t.Helper()
	img := w.image(name+".img", 'a')
	p := filepath.Join(w.defs, name+".json")
	def := fmt.Sprintf(`{"name": %q, "kernel": %q, "initrd": %q, "cmdline": "console=ttyS0", "cpus": 1, "memory": "256M",
		"disks": [{"path": %q, "serial": "%s-root"}], "balloon": {"size": "0"}, "mergeable": true}`,
		name, filepath.Join(w.imgs, "vmlinuz"), filepath.Join(w.imgs, "initrd.img"), img, name)
	require.NoError(w.t, os.WriteFile(p, []byte(def), 0o600))
	w.ok("define", p)
	return img
}

func (w *world) list() []vmInfo {
	w.t.Helper()
	var vms []vmInfo
	require.NoError(w.t, json.Unmarshal([]byte(w.ok("list", "--json")), &vms))
	return vms
}

func sum(t *testing.T, path string) string {
	t.Helper()
	c, err := backup.HashFile(context.Background(), path, nil)
	require.NoError(t, err)
	return c.SHA256
}

func TestDefineListUndefine(t *testing.T) {
	w := newWorld(t)
	w.define("web1")
	code, _, errOut := w.gvmm("define", filepath.Join(w.defs, "web1.json"))
	assert.Equal(t, exitFault, code)
	assert.Contains(t, errOut, "web1: a VM of that name is already defined")

	out := w.ok("list")
	assert.Equal(t, "NAME  STATE    VCPUS  MEMORY  BALLOON  UPTIME\nweb1  stopped  1      256M    -        -\n", out)
	assert.Equal(t, []vmInfo{{Name: "web1", State: "stopped", VCPUs: 1, MemoryMiB: 256}}, w.list())

	// The stored definition is the documented form, paths absolute.
	stored, err := os.ReadFile(filepath.Join(w.state, "vms", "web1.json"))
	require.NoError(t, err)
	assert.Contains(t, string(stored), `"memory": "256M"`)
	assert.Contains(t, string(stored), `"path": "`+filepath.Join(w.imgs, "web1.img")+`"`)

	assert.Contains(t, w.ok("undefine", "web1"), "web1 undefined")
	assert.Empty(t, w.list())
	assert.FileExists(t, filepath.Join(w.imgs, "web1.img"), "undefine keeps the images")
	code, _, errOut = w.gvmm("undefine", "web1")
	assert.Equal(t, exitFault, code)
	assert.Contains(t, errOut, "no VM of that name is defined")
}

func TestMalformedDefinitionsAreRefusedPrecisely(t *testing.T) {
	w := newWorld(t)
	kernel := filepath.Join(w.imgs, "vmlinuz")
	tests := []struct {
		name, src, want string
	}{
		{"bad JSON", "{\"name\": \"web1\",\n  \"kernel\": \"" + kernel + "\",\n  \"cpus\": 2,,\n}",
			`:3:13: invalid JSON: invalid character ',' looking for beginning of object key string`},
		{"unknown field", "{\"name\": \"web1\", \"kernel\": \"" + kernel + "\",\n  \"vcpus\": 2}",
			`:2:3: unknown field "vcpus" (known: "allow_cpu_overcommit", "balloon", "cmdline", "cpus", "disks", "hugepages", "initrd", "kernel", "limits", "memory", "mergeable", "name", "nets", "on_reboot", "shares", "user", "vsock")`},
		{"memory 12Q", "{\"name\": \"web1\", \"kernel\": \"" + kernel + "\",\n  \"memory\": \"12Q\"}",
			`:2:13: memory: size "12Q": want a positive whole number with an optional K, M, G or T suffix`},
		{"missing kernel", "{\"name\": \"web1\", \"memory\": \"512M\"}", `:1:1: missing "kernel", the kernel to boot: a bzImage or an ELF vmlinux`},
		{"missing disk image", "{\"name\": \"web1\", \"kernel\": \"" + kernel + "\",\n  \"disks\": [{\"path\": \"nope.img\"}]}",
			`:2:22: disks[0].path: stat ` + filepath.Join(w.defs, "nope.img") + `: no such file or directory`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(w.defs, "vm.json")
			require.NoError(t, os.WriteFile(p, []byte(tt.src), 0o600))
			code, out, errOut := w.gvmm("define", p)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, out)
			assert.Equal(t, "gvmm define: "+p+tt.want+"\n", errOut)
			assert.Empty(t, w.list(), "nothing is defined")
		})
	}
}

func TestUsageErrors(t *testing.T) {
	w := newWorld(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"define"}, "gvmm define: missing FILE"},
		{[]string{"start", "a", "b"}, `gvmm start: unexpected argument "b"`},
		{[]string{"backup", "web1"}, "gvmm backup: missing DEST"},
		{[]string{"restore", "x", "--name", "a b"}, "gvmm restore: --name: name \"a b\""},
		{[]string{"list", "--bogus"}, "gvmm list: unknown flag: --bogus"},
	} {
		code, _, errOut := w.gvmm(tt.args...)
		assert.Equal(t, exitUsage, code, "%v", tt.args)
		assert.Contains(t, errOut, tt.want, "%v", tt.args)
	}
	for _, args := range [][]string{{"start", "web1"}, {"destroy", "web1"}, {"backup", "web1", filepath.Join(w.dir, "b")}} {
		code, _, errOut := w.gvmm(args...)
		assert.Equal(t, exitFault, code, "%v", args)
		assert.Contains(t, errOut, "web1: no VM of that name is defined", "%v", args)
	}
}

// events returns the API calls the fake VMMs recorded.
func events(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	return strings.Fields(string(b))
}

func TestStartRotatesAFullVMMLog(t *testing.T) {
	t.Setenv(envFakeVMM, "poweroff")
	w := newWorld(t)
	w.define("web1")
	dir, err := state.Open(w.state)
	require.NoError(t, err)
	p := dir.Paths("web1")
	require.NoError(t, os.MkdirAll(filepath.Dir(p.VMMLog), 0o700))
	for _, size := range []int64{console.LogLimit / 2, console.LogLimit} {
		f, err := os.Create(p.VMMLog)
		require.NoError(t, err)
		require.NoError(t, f.Truncate(size))
		require.NoError(t, f.Close())

		w.ok("start", "web1")
		w.ok("destroy", "web1")
		st, err := os.Stat(p.VMMLog)
		require.NoError(t, err)
		if size < console.LogLimit {
			assert.Greater(t, st.Size(), size, "appended to")
			assert.NoFileExists(t, p.VMMLog+".1")
			continue
		}
		assert.Less(t, st.Size(), int64(console.LogLimit), "started anew")
		old, err := os.Stat(p.VMMLog + ".1")
		require.NoError(t, err)
		assert.Equal(t, size, old.Size(), "the full log, moved")
	}
}

func TestVMMLogIsBoundedWhileTheVMMRuns(t *testing.T) {
	t.Setenv(envFakeVMM, "poweroff")
	t.Setenv(envFakeLogBytes, fmt.Sprint(3*console.LogLimit))
	w := newWorld(t)
	w.define("web1")
	w.ok("start", "web1")
	defer w.ok("destroy", "web1")
	dir, err := state.Open(w.state)
	require.NoError(t, err)
	p := dir.Paths("web1")
	cur, err := os.Stat(p.VMMLog)
	require.NoError(t, err)
	assert.LessOrEqual(t, cur.Size(), int64(console.LogLimit))
	old, err := os.Stat(p.VMMLog + ".1")
	require.NoError(t, err)
	assert.Equal(t, int64(console.LogLimit), old.Size(), "the full log, moved")
	ents, err := os.ReadDir(filepath.Dir(p.VMMLog))
	require.NoError(t, err)
	for _, e := range ents {
		assert.NotRegexp(t, `^vmm\.log\.[2-9]`, e.Name(), "one old file is kept")
	}
}

func TestLifecycleWithAFakeVMM(t *testing.T) {
	t.Setenv(envFakeVMM, "poweroff")
	eventsFile := filepath.Join(t.TempDir(), "events")
	t.Setenv(envFakeEvents, eventsFile)
	w := newWorld(t)
	img := w.define("web1")
	paths := state.Paths{}
	dir, err := state.Open(w.state)
	require.NoError(t, err)
	paths = dir.Paths("web1")

	// Two starts at once: one starts it, the other is refused.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	errs := make([]string, 2)
	for i := range codes {
		wg.Go(func() { codes[i], _, errs[i] = w.gvmm("start", "web1") })
	}
	wg.Wait()
	assert.ElementsMatch(t, []int{exitOK, exitFault}, codes, "%q", errs)
	assert.Contains(t, errs[0]+errs[1], "web1 is already running (pid ")

	vms := w.list()
	require.Len(t, vms, 1)
	assert.Equal(t, "running", vms[0].State)
	require.NotNil(t, vms[0].BalloonMiB)
	assert.Equal(t, uint64(fakeBalloonMiB), *vms[0].BalloonMiB)
	assert.Regexp(t, `web1  running  1      256M    64M      \d+`, w.ok("list"))
	code, _, errOut := w.gvmm("undefine", "web1")
	assert.Equal(t, exitFault, code)
	assert.Contains(t, errOut, "the VM is running")

	// The console: what is typed reaches the guest, Ctrl-A x detaches.
	in, inW, err := os.Pipe()
	require.NoError(t, err)
	defer in.Close()
	var out, consoleErr lockedBuffer
	done := make(chan int)
	go func() {
		done <- execute(cmdEnv{stdin: in, stdout: &out, stderr: &consoleErr, getenv: func(string) string { return w.state }}, []string{"console", "web1"})
	}()
	_, err = io.WriteString(inW, "hello\n")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "echo: hello") }, 10*time.Second, 10*time.Millisecond)
	_, err = inW.Write([]byte{0x01, 'x'})
	require.NoError(t, err)
	assert.Equal(t, exitOK, <-done)
	inW.Close()
	assert.Contains(t, consoleErr.String(), "Detached from web1's console")
	consoleLog, err := os.ReadFile(paths.ConsoleLog)
	require.NoError(t, err)
	assert.Equal(t, "fake guest web1 booted\necho: hello\n", string(consoleLog))

	// A backup of the running VM pauses it around the copy.
	dest := filepath.Join(w.dir, "backup")
	out2 := w.ok("backup", "web1", dest)
	assert.Contains(t, out2, "web1 was paused for")
	assert.Equal(t, []string{"pause", "resume"}, events(t, eventsFile))
	assert.Equal(t, "running", w.list()[0].State)
	bd, err := backup.OpenDir(dest)
	require.NoError(t, err)
	defer bd.Close()
	m, err := backup.ReadManifest(bd)
	require.NoError(t, err)
	assert.Equal(t, sum(t, img), m.Role(backup.RoleDisk)[0].SHA256)

	// Power off through the guest.
	assert.Equal(t, "web1 powered off\n", w.ok("shutdown", "web1"))
	assert.Equal(t, "stopped", w.list()[0].State)
	for _, f := range []string{paths.PID, paths.API, paths.Console} {
		assert.NoFileExists(t, f)
	}

	// A VMM killed with SIGKILL is shown as crashed, cleaned up after,
	// and the VM starts again.
	w.ok("start", "web1")
	st, err := dir.Status("web1")
	require.NoError(t, err)
	require.Equal(t, state.Running, st.State)
	require.NoError(t, syscall.Kill(st.PID, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		st, err := dir.Status("web1")
		return err == nil && st.State != state.Running
	}, 10*time.Second, 10*time.Millisecond)
	assert.Regexp(t, `web1  stopped \(crashed\)  1      256M    -        -`, w.ok("list"))
	for _, f := range []string{paths.PID, paths.API, paths.Console} {
		assert.NoFileExists(t, f, "list cleans up after the dead VMM")
	}
	vms = w.list()
	assert.True(t, vms[0].Crashed)
	assert.Equal(t, st.PID, vms[0].PID)
	w.ok("start", "web1")
	assert.Equal(t, "running", w.list()[0].State)
	assert.False(t, w.list()[0].Crashed)
	assert.Equal(t, "web1 destroyed\n", w.ok("destroy", "web1"))
	assert.Equal(t, "stopped", w.list()[0].State)
	code, _, errOut = w.gvmm("destroy", "web1")
	assert.Equal(t, exitFault, code)
	assert.Contains(t, errOut, "web1 is not running")
}

func TestConsoleFiltersEscapeSequences(t *testing.T) {
	t.Setenv(envFakeVMM, "poweroff")
	const hostile = "\x1b]0;pwned\x07hi \x1b[31mred\x1b[0m\x1b[6n\x1b[?1049h"
	for _, tt := range []struct {
		flags []string
		want  string
	}{
		{nil, "echo: " + hostile + "\n"}, // not a terminal: as it is
		{[]string{"--raw"}, "echo: " + hostile + "\n"},
		{[]string{"--filter"}, "echo: hi \x1b[31mred\x1b[0m\n"},
	} {
		t.Run(fmt.Sprint(tt.flags), func(t *testing.T) {
			// A VM each: the console takes one client at a time.
			w := newWorld(t)
			w.define("web1")
			w.ok("start", "web1")
			defer w.ok("destroy", "web1")
			in, inW, err := os.Pipe()
			require.NoError(t, err)
			defer in.Close()
			var out, errOut lockedBuffer
			done := make(chan int)
			go func() {
				env := cmdEnv{stdin: in, stdout: &out, stderr: &errOut, getenv: func(string) string { return w.state }}
				done <- execute(env, append([]string{"console", "web1"}, tt.flags...))
			}()
			_, err = io.WriteString(inW, hostile+"\n")
			require.NoError(t, err)
			require.Eventually(t, func() bool { return strings.Contains(out.String(), "echo: ") && strings.HasSuffix(out.String(), "\n") },
				10*time.Second, 10*time.Millisecond)
			_, err = inW.Write([]byte{0x01, 'x'})
			require.NoError(t, err)
			require.Equal(t, exitOK, <-done, errOut.String())
			inW.Close()
			got := out.String()
			assert.Equal(t, tt.want, got[strings.Index(got, "echo: "):])
		})
	}
	code, _, errOut := newWorld(t).gvmm("console", "--raw", "--filter", "web1")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "--raw and --filter exclude each other")
}

func TestStartWarnsOfMemoryOvercommit(t *testing.T) {
	t.Setenv(envFakeVMM, "poweroff")
	w := newWorld(t)
	w.define("web1")
	w.define("web2")
	w.setHostMemory(384 * miB)
	code, _, errOut := w.gvmm("start", "web1")
	require.Equal(t, exitOK, code, errOut)
	assert.Empty(t, errOut, "256 MiB of 384 MiB")
	code, _, errOut = w.gvmm("start", "web2")
	require.Equal(t, exitOK, code, errOut)
	assert.Equal(t, "gvmm start: warning: running VMs will be given 512.0 MiB, more than the host's 384.0 MiB (1.33): guests may be swapped out or killed when they use it\n", errOut)
	w.ok("destroy", "web1")
	w.ok("destroy", "web2")
}

func TestShutdownTimeoutStopsHard(t *testing.T) {
	t.Setenv(envFakeVMM, "ignore")
	eventsFile := filepath.Join(t.TempDir(), "events")
	t.Setenv(envFakeEvents, eventsFile)
	w := newWorld(t)
	w.define("web1")
	w.ok("start", "web1")
	start := time.Now()
	code, out, errOut := w.gvmm("shutdown", "--timeout", "500ms", "web1")
	assert.Equal(t, exitOK, code, errOut)
	assert.Equal(t, "web1 stopped\n", out)
	assert.Contains(t, errOut, "web1 did not power off within 500ms; stopping it now")
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Equal(t, []string{"shutdown", "stop"}, events(t, eventsFile))
	assert.Equal(t, "stopped", w.list()[0].State)
}

func TestStartFailures(t *testing.T) {
	w := newWorld(t)
	w.define("web1")
	t.Setenv(envFakeVMM, "fail")
	code, _, errOut := w.gvmm("start", "web1")
	assert.Equal(t, exitFault, code)
	assert.Contains(t, errOut, "gvmm start: starting web1: the VMM ended (exit status 1) before the guest started; its log:")
	assert.Contains(t, errOut, "fake failure for the test")
	assert.Equal(t, "stopped", w.list()[0].State)

	// One guest with more vCPUs than host CPUs is refused before any VMM.
	p := filepath.Join(w.defs, "big.json")
	src := fmt.Sprintf(`{"name": "big", "kernel": %q, "cpus": %d}`, filepath.Join(w.imgs, "vmlinuz"), runtime.NumCPU()+1)
	require.NoError(t, os.WriteFile(p, []byte(src), 0o600))
	w.ok("define", p)
	code, _, errOut = w.gvmm("start", "big")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "vms/big.json:4:11: ", "the stored definition's line")
	assert.Contains(t, errOut, "cpus: more vCPUs than host CPUs")
}

func TestBackupRestoreStopped(t *testing.T) {
	w := newWorld(t)
	img := w.define("web1")
	dest := filepath.Join(w.dir, "backup")
	out := w.ok("backup", "web1", dest)
	assert.Contains(t, out, "web1 backed up to "+dest+": 4 files")

	// Under a new name, into another folder: the images are copies whose
	// paths the new definition names; an identical kernel is reused.
	restored := filepath.Join(w.dir, "restored")
	out = w.ok("restore", dest, "--name", "web2", "--disk-dir", restored)
	assert.Contains(t, out, "web2 restored from "+dest+": 4 files verified")
	assert.Contains(t, out, "kernel "+filepath.Join(w.imgs, "vmlinuz")+" (already in place, identical)")
	def, err := func() (*state.Dir, error) { return state.Open(w.state) }()
	require.NoError(t, err)
	web2, err := def.Load("web2")
	require.NoError(t, err)
	require.Len(t, web2.Config.Disks, 1)
	assert.Equal(t, filepath.Join(restored, "web1.img"), web2.Config.Disks[0].Path)
	assert.Equal(t, "web1-root", web2.Config.Disks[0].Serial)
	assert.Equal(t, sum(t, img), sum(t, web2.Config.Disks[0].Path))
	assert.Equal(t, filepath.Join(w.imgs, "vmlinuz"), web2.Config.Kernel)

	// To where it was, once the VM and its images are gone.
	w.ok("undefine", "web1")
	require.NoError(t, os.Remove(img))
	w.ok("restore", dest, "--yes")
	assert.Equal(t, sum(t, filepath.Join(restored, "web1.img")), sum(t, img))
	names := []string{}
	for _, vm := range w.list() {
		names = append(names, vm.Name)
	}
	assert.Equal(t, []string{"web1", "web2"}, names)
}

func TestBackupResumesAPauseWhoseAnswerTimedOut(t *testing.T) {
	t.Setenv(envFakeVMM, "poweroff")
	t.Setenv(envFakePauseDelay, (apiTimeout + time.Second).String())
	eventsFile := filepath.Join(t.TempDir(), "events")
	t.Setenv(envFakeEvents, eventsFile)
	w := newWorld(t)
	w.define("web1")
	w.ok("start", "web1")
	defer w.gvmm("destroy", "web1")
	dest := filepath.Join(w.dir, "backup")
	code, _, errOut := w.gvmm("backup", "web1", dest)
	assert.Equal(t, exitFault, code)
	assert.Contains(t, errOut, "pausing web1 for a consistent copy: ")
	assert.Contains(t, errOut, "context deadline exceeded")
	assert.NoDirExists(t, dest)
	assert.Equal(t, "running", w.list()[0].State, "the VMM paused it after the answer timed out, and it was resumed")
	ev := events(t, eventsFile)
	require.GreaterOrEqual(t, len(ev), 2, "%q", ev)
	assert.Equal(t, []string{"pause", "resume"}, ev[:2])
}

func TestRestoreRefusesDamagedBackups(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dest string)
		want   string
	}{
		{"flipped byte", func(t *testing.T, dest string) {
			f, err := os.OpenFile(filepath.Join(dest, "disks/web1.img"), os.O_RDWR, 0)
			require.NoError(t, err)
			defer f.Close()
			_, err = f.WriteAt([]byte{'a' ^ 0x10}, 1000)
			require.NoError(t, err)
		}, "disks/web1.img: does not match the manifest: the backup is damaged: SHA-256 "},
		{"missing image", func(t *testing.T, dest string) {
			require.NoError(t, os.Remove(filepath.Join(dest, "disks/web1.img")))
		}, "disks/web1.img: missing from the backup"},
		{"truncated manifest", func(t *testing.T, dest string) {
			p := filepath.Join(dest, backup.ManifestName)
			st, err := os.Stat(p)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(p, st.Size()/2))
		}, "manifest.json: invalid backup manifest: unexpected EOF"},
		{"kernel flipped", func(t *testing.T, dest string) {
			require.NoError(t, os.WriteFile(filepath.Join(dest, "boot/vmlinuz"), []byte("a kernex"), 0o600))
		}, "boot/vmlinuz: does not match the manifest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			w.define("web1")
			dest := filepath.Join(w.dir, "backup")
			w.ok("backup", "web1", dest)
			require.NoError(t, os.Remove(filepath.Join(w.imgs, "vmlinuz"))) // restored too, so checked
			tt.damage(t, dest)
			restored := filepath.Join(w.dir, "restored", "disks")
			code, out, errOut := w.gvmm("restore", dest, "--name", "web2", "--disk-dir", restored)
			assert.Equal(t, exitFault, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, filepath.Join(dest, tt.want))
			assert.Len(t, w.list(), 1, "nothing is defined")
			assert.NoDirExists(t, filepath.Join(w.dir, "restored"), "the folders the restore made are gone")

			// A folder that was there stays, with what it held.
			require.NoError(t, os.MkdirAll(restored, 0o700))
			kept := filepath.Join(restored, "notes.txt")
			require.NoError(t, os.WriteFile(kept, []byte("mine"), 0o600))
			code, _, _ = w.gvmm("restore", dest, "--name", "web2", "--disk-dir", restored)
			assert.Equal(t, exitFault, code)
			ents, err := os.ReadDir(restored)
			require.NoError(t, err)
			require.Len(t, ents, 1, "nothing but what was there is left in the disk folder")
			assert.Equal(t, "notes.txt", ents[0].Name())
		})
	}

	w := newWorld(t)
	w.define("web1")
	dest := filepath.Join(w.dir, "backup")
	w.ok("backup", "web1", dest)
	code, _, errOut := w.gvmm("restore", dest)
	assert.Equal(t, exitFault, code)
	assert.Contains(t, errOut, "web1: a VM of that name is already defined")
	w.ok("undefine", "web1")
	code, _, errOut = w.gvmm("restore", dest, "--yes")
	assert.Equal(t, exitFault, code)
	assert.Contains(t, errOut, filepath.Join(w.imgs, "web1.img")+" exists: a restore never overwrites a file")
	assert.Empty(t, w.list())
}

func TestHost(t *testing.T) {
	t.Setenv(envFakeVMM, "poweroff")
	w := newWorld(t)
	w.define("web1")
	w.define("web2")
	w.ok("start", "web1")
	defer w.ok("destroy", "web1")

	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "proc"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(root, "proc/meminfo"), []byte("MemTotal:         524288 kB\nMemFree:  1 kB\nMemAvailable:     262144 kB\n"), 0o600))
	ksm := filepath.Join(root, "sys/kernel/mm/ksm")
	require.NoError(t, os.MkdirAll(ksm, 0o700))
	for f, v := range map[string]string{"run": "1\n", "pages_shared": "100\n", "pages_sharing": "2560\n"} {
		require.NoError(t, os.WriteFile(filepath.Join(ksm, f), []byte(v), 0o600))
	}
	dir, err := state.Open(w.state)
	require.NoError(t, err)
	h, err := hostUsage(dir, "", root)
	require.NoError(t, err)
	assert.Equal(t, []string{"web1"}, h.RunningVMs)
	assert.Equal(t, 1, h.VCPUs)
	assert.Equal(t, uint64(256*miB), h.CommittedBytes)
	assert.Equal(t, uint64(512*miB), h.MemoryBytes)
	assert.InDelta(t, 0.5, h.MemoryRatio, 1e-9)
	assert.Equal(t, uint64(fakeBalloonMiB*miB), h.BalloonBytes)
	assert.Equal(t, &ksmInfo{Run: 1, PagesShared: 100, PagesSharing: 2560}, h.KSM)
	var b bytes.Buffer
	require.NoError(t, h.print(&b))
	assert.Contains(t, b.String(), "memory committed      256.0 MiB (0.50 of host memory); balloons hold 64.0 MiB of it")
	assert.Contains(t, b.String(), "KSM                   merging; pages shared 100")

	out := w.ok("host", "--json")
	var got hostInfo
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, runtime.NumCPU(), got.CPUs)
	assert.Equal(t, []string{"web1"}, got.RunningVMs)
}

// lockedBuffer is a bytes.Buffer written by one goroutine while another
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// rewriteDefinition replaces the backup's vm.json, as a forger would,
// with its manifest entry updated to match.
func rewriteDefinition(t *testing.T, dest string, edit func(string) string) {
	t.Helper()
	p := filepath.Join(dest, backup.DefinitionName)
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	data = []byte(edit(string(data)))
	require.NoError(t, os.WriteFile(p, data, 0o600))
	mp := filepath.Join(dest, backup.ManifestName)
	var m backup.Manifest
	mdata, err := os.ReadFile(mp)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(mdata, &m))
	m.Files[0].Size, m.Files[0].Data, m.Files[0].SHA256 = int64(len(data)), int64(len(data)), fmt.Sprintf("%x", sha256.Sum256(data))
	mdata, err = json.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(mp, mdata, 0o600))
}

func TestRestoreWritesOnlyWhereTheUserSaid(t *testing.T) {
	w := newWorld(t)
	img := w.define("web1")
	dest := filepath.Join(w.dir, "backup")
	w.ok("backup", "web1", dest)
	w.ok("undefine", "web1")
	cron := filepath.Join(w.dir, "etc", "cron.d", "x")
	rewriteDefinition(t, dest, func(s string) string { return strings.ReplaceAll(s, img, cron) })

	// The definition's paths are shown, and not written without --yes.
	code, out, errOut := w.gvmm("restore", dest)
	assert.Equal(t, exitUsage, code)
	assert.Empty(t, out)
	assert.Contains(t, errOut, "disk "+cron)
	assert.Contains(t, errOut, "--yes")
	assert.NoDirExists(t, filepath.Join(w.dir, "etc"), "nothing is created before the paths are confirmed")
	assert.Empty(t, w.list())

	// Confirmed, they are written.
	w.ok("restore", dest, "--yes")
	assert.Equal(t, sum(t, img), sum(t, cron))
	w.ok("undefine", "web1")

	// A relative path, or one with .., is never taken: it would not be
	// what it seems.
	for _, p := range []string{"../x.img", w.dir + "/a/../../x.img"} {
		rewriteDefinition(t, dest, func(s string) string { return strings.ReplaceAll(s, cron, p) })
		code, _, errOut = w.gvmm("restore", dest, "--yes")
		assert.Equal(t, exitFault, code)
		assert.Contains(t, errOut, fmt.Sprintf("vm.json names %q: ", p))
		assert.Empty(t, w.list())
		rewriteDefinition(t, dest, func(s string) string { return strings.ReplaceAll(s, p, cron) })
	}
}

func TestRestoreNeverFollowsASymlink(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, w *world, dest string) (args []string)
		want  string
	}{
		{"disk folder is a symlink", func(t *testing.T, w *world, dest string) []string {
			require.NoError(t, os.Symlink(filepath.Join(w.dir, "elsewhere"), filepath.Join(w.dir, "restored")))
			return []string{"--disk-dir", filepath.Join(w.dir, "restored")}
		}, "restored/web1.img: a symlink"},
		{"a folder above the disk folder is a symlink", func(t *testing.T, w *world, dest string) []string {
			require.NoError(t, os.Symlink(filepath.Join(w.dir, "elsewhere"), filepath.Join(w.dir, "link")))
			return []string{"--disk-dir", filepath.Join(w.dir, "link", "restored")}
		}, "restored/web1.img: a symlink"},
		{"the definition's folder is a symlink", func(t *testing.T, w *world, dest string) []string {
			require.NoError(t, os.Rename(w.imgs, filepath.Join(w.dir, "elsewhere")))
			require.NoError(t, os.Symlink(filepath.Join(w.dir, "elsewhere"), w.imgs))
			return []string{"--yes"}
		}, "images/vmlinuz: a symlink"},
		{"the backup is a symlink", func(t *testing.T, w *world, dest string) []string {
			require.NoError(t, os.Rename(dest, filepath.Join(w.dir, "elsewhere")))
			require.NoError(t, os.Symlink(filepath.Join(w.dir, "elsewhere"), dest))
			return []string{"--disk-dir", filepath.Join(w.dir, "restored")}
		}, "backup: a symlink"},
		{"an image in the backup is a symlink", func(t *testing.T, w *world, dest string) []string {
			p := filepath.Join(dest, "disks", "web1.img")
			require.NoError(t, os.Rename(p, filepath.Join(w.dir, "moved")))
			require.NoError(t, os.Symlink(filepath.Join(w.dir, "moved"), p))
			return []string{"--disk-dir", filepath.Join(w.dir, "restored")}
		}, "web1.img: a symlink"},
		{"a folder in the backup is a symlink", func(t *testing.T, w *world, dest string) []string {
			p := filepath.Join(dest, "disks")
			require.NoError(t, os.Rename(p, filepath.Join(w.dir, "moved")))
			require.NoError(t, os.Symlink(filepath.Join(w.dir, "moved"), p))
			return []string{"--disk-dir", filepath.Join(w.dir, "restored")}
		}, "web1.img: a symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			img := w.define("web1")
			dest := filepath.Join(w.dir, "backup")
			w.ok("backup", "web1", dest)
			w.ok("undefine", "web1")
			require.NoError(t, os.Remove(img))
			args := tt.setup(t, w, dest)
			code, out, errOut := w.gvmm(append([]string{"restore", dest}, args...)...)
			assert.Equal(t, exitFault, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, tt.want)
			assert.Empty(t, w.list())
			assert.NoFileExists(t, filepath.Join(w.dir, "elsewhere", "web1.img"), "nothing written through the link")
			assert.NoDirExists(t, filepath.Join(w.dir, "elsewhere", "restored"), "nothing created through the link")
		})
	}
}

func TestRestoreRefusesABackupOthersCouldWrite(t *testing.T) {
	tests := []struct {
		name string
		path string // in the backup
		mode os.FileMode
		uid  int
		want string
	}{
		{"group-writable folder", ".", 0o770, -1, "backup: refused: writable by its group or others (mode 770)"},
		{"world-writable image", "disks/web1.img", 0o606, -1, "backup/disks/web1.img: refused: writable by its group or others (mode 606)"},
		{"group-writable subfolder", "boot", 0o730, -1, "backup/boot: refused: writable by its group or others (mode 730)"},
		{"definition of another user", "vm.json", 0o600, 65534, "backup/vm.json: refused: owned by uid 65534, neither root nor you"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.uid >= 0 && os.Geteuid() != 0 {
				t.Fatal("changing a file's owner needs root")
			}
			w := newWorld(t)
			w.define("web1")
			dest := filepath.Join(w.dir, "backup")
			w.ok("backup", "web1", dest)
			p := filepath.Join(dest, tt.path)
			require.NoError(t, os.Chmod(p, tt.mode))
			if tt.uid >= 0 {
				require.NoError(t, os.Chown(p, tt.uid, -1))
			}
			code, out, errOut := w.gvmm("restore", dest, "--name", "web2", "--disk-dir", filepath.Join(w.dir, "restored"))
			assert.Equal(t, exitFault, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, filepath.Join(w.dir, tt.want))
			assert.NoDirExists(t, filepath.Join(w.dir, "restored"))
			assert.Len(t, w.list(), 1)
		})
	}
}

func TestSnapshotCommandPausesSnapshotsResumes(t *testing.T) {
	t.Setenv(envFakeVMM, "poweroff")
	eventsFile := filepath.Join(t.TempDir(), "events")
	t.Setenv(envFakeEvents, eventsFile)
	w := newWorld(t)
	w.define("web1")
	w.define("db1")
	w.ok("start", "web1")
	t.Cleanup(func() { w.gvmm("destroy", "web1") })
	dest := filepath.Join(w.dir, "snap1")
	out := w.ok("snapshot", "web1", dest)
	assert.Equal(t, "web1 saved in "+dest+" (gvmm run --restore "+dest+" resumes it)\n", out)
	assert.Equal(t, []string{"pause", "snapshot", dest, "resume"}, events(t, eventsFile))
	assert.Equal(t, "running", w.list()[1].State, "resumed")

	code, _, errOut := w.gvmm("snapshot", "db1", dest)
	assert.Equal(t, exitFault, code)
	assert.Contains(t, errOut, "db1 is not running")
}
