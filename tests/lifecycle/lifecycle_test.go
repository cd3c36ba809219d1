// Package lifecycle_test runs the VM commands end to end with the stock
// Debian kernel: define, start (a detached VMM), list, a backup taken
// while the guest runs, destroy, undefine, restore and start again, where
// the guest reads back what it wrote before the backup; two concurrent
// starts, a VMM killed with SIGKILL, and a shutdown the guest ignores.
// The guest's init is tests/guestblk.
package lifecycle_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/guestblk/pattern"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// guestModules are what guestblk loads for its disk.
var guestModules = []string{"virtio_pci", "virtio_blk"}

func TestMain(m *testing.M) {
	kvmhost.Main(m,
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guestblk", "github.com/gvmm-dev/gvmm/tests/guestblk"),
		kvmhost.WithModules(guestModules...),
	)
}

const (
	mib       = 1 << 20
	imageSize = 64 * mib
	dataSize  = 8 * mib // what the guest writes
	seed      = 7
	// guestWait bounds a guest's boot and steps in the test host.
	guestWait = 4 * time.Minute
)

// guestInitrd builds guestblk's initramfs with its modules.
func guestInitrd(t *testing.T, path string) {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	mods, err := k.Modules(guestModules...)
	require.NoError(t, err)
	require.NoError(t, initramfs.WriteGuest(path, kvmhost.Asset("guestblk"), mods))
}

// gvmm is the command line in one state folder.
type gvmm struct {
	t     *testing.T
	state string
}

type result struct {
	code           int
	stdout, stderr string
}

func (g *gvmm) run(args ...string) result {
	g.t.Helper()
	cmd := exec.Command(kvmhost.Asset("gvmm"), args...)
	cmd.Env = append(os.Environ(), "GVMM_STATE_DIR="+g.state)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		g.t.Fatalf("gvmm %v: %v", args, err)
	}
	return r
}

// ok runs a command that must succeed and returns its stdout.
func (g *gvmm) ok(args ...string) string {
	g.t.Helper()
	start := time.Now()
	r := g.run(args...)
	require.Equal(g.t, 0, r.code, "gvmm %v\nstdout: %s\nstderr: %s", args, r.stdout, r.stderr)
	g.t.Logf("gvmm %s (%s): %s%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), r.stdout, r.stderr)
	return r.stdout
}

// vm is one VM of gvmm list --json.
type vm struct {
	Name    string `json:"name"`
	State   string `json:"state"`
	Crashed bool   `json:"crashed"`
	PID     int    `json:"pid"`
	VCPUs   int    `json:"vcpus"`
	Memory  uint64 `json:"memory_mib"`
	Balloon uint64 `json:"balloon_actual_mib"`
}

func (g *gvmm) list() map[string]vm {
	g.t.Helper()
	var vms []vm
	require.NoError(g.t, json.Unmarshal([]byte(g.ok("list", "--json")), &vms))
	out := map[string]vm{}
	for _, v := range vms {
		out[v.Name] = v
	}
	return out
}

// waitConsole waits until the guest's console log holds every report.
func (g *gvmm) waitConsole(name string, reports ...string) string {
	g.t.Helper()
	path := filepath.Join(g.state, "run", name, "console.log")
	deadline := time.Now().Add(guestWait)
	for {
		b, _ := os.ReadFile(path)
		log := string(b)
		missing := ""
		for _, r := range reports {
			if !strings.Contains(log, "GVMMTEST "+r+"\n") && !strings.Contains(log, "GVMMTEST "+r+"\r\n") {
				missing = r
				break
			}
		}
		if missing == "" {
			return log
		}
		if strings.Contains(log, "GVMMTEST error=") || strings.Contains(log, "GVMMTEST done=") || time.Now().After(deadline) {
			vmmLog, _ := os.ReadFile(filepath.Join(g.state, "run", name, "vmm.log"))
			g.t.Fatalf("the guest did not report %q\nconsole:\n%s\nVMM log:\n%s", missing, log, vmmLog)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expectedSum is the SHA-256 of the image once the guest wrote to it.
func expectedSum() string {
	h := sha256.New()
	_, _ = io.Copy(h, pattern.Reader(seed, 0, dataSize))
	_, _ = io.Copy(h, io.LimitReader(zeroReader{}, imageSize-dataSize))
	return fmt.Sprintf("%x", h.Sum(nil))
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return fmt.Sprintf("%x", h.Sum(nil))
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	return st.Blocks * 512
}

// manifest is the part of a backup's manifest the test checks.
type manifest struct {
	Files []struct {
		Path   string `json:"path"`
		Role   string `json:"role"`
		Size   int64  `json:"size"`
		Data   int64  `json:"data_bytes"`
		SHA256 string `json:"sha256"`
	} `json:"files"`
}

// TestDefineBackupRestore is the whole scenario with three starts of the
// VM (two full guest boots).
func TestDefineBackupRestore(t *testing.T) {
	k, err := debkernel.Get()
	require.NoError(t, err)
	dir := t.TempDir()
	g := &gvmm{t: t, state: filepath.Join(dir, "state")}
	t.Cleanup(func() { g.run("destroy", "web1") }) // a VM left running by a failure

	vmDir := filepath.Join(dir, "srv")
	require.NoError(t, os.Mkdir(vmDir, 0o700))
	initrd := filepath.Join(vmDir, "initrd.img")
	guestInitrd(t, initrd)
	img := filepath.Join(vmDir, "web1.img")
	require.NoError(t, os.WriteFile(img, nil, 0o600))
	require.NoError(t, os.Truncate(img, imageSize))
	// Every boot verifies what is on the disk, writes the pattern and
	// waits to be stopped: the first finds zeros, a restored one the data.
	cmdline := fmt.Sprintf("console=ttyS0 reboot=k panic=1 quiet gvmm.steps=read-verify,write-direct,sleep gvmm.mib=%d gvmm.seed=%d gvmm.sleep=3600",
		dataSize/mib, seed)
	def := fmt.Sprintf(`{"name": "web1", "kernel": %q, "initrd": "initrd.img", "cmdline": %q, "cpus": 1, "memory": "256M",
  "disks": [{"path": "web1.img", "readonly": false, "serial": "web1-root"}], "balloon": {"size": "0"}, "mergeable": true}
`, k.Vmlinuz, cmdline)
	defFile := filepath.Join(vmDir, "web1.json")
	require.NoError(t, os.WriteFile(defFile, []byte(def), 0o600))
	want := expectedSum()

	g.ok("define", defFile)
	assert.Equal(t, "stopped", g.list()["web1"].State)

	// Two starts at once: one starts the VM, the other is refused.
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i := range results {
		wg.Go(func() { results[i] = g.run("start", "web1") })
	}
	wg.Wait()
	codes := []int{results[0].code, results[1].code}
	assert.ElementsMatch(t, []int{0, 1}, codes, "%+v", results)
	assert.Contains(t, results[0].stderr+results[1].stderr, "web1 is already running")
	running := g.list()["web1"]
	assert.Equal(t, "running", running.State)
	assert.Equal(t, 1, running.VCPUs)
	assert.Equal(t, uint64(256), running.Memory)

	log := g.waitConsole("web1", "written=vda:"+fmt.Sprint(dataSize), "sleeping=3600")
	assert.Contains(t, log, "GVMMTEST verify=vda:mismatch at 0", "the first boot finds an empty disk")

	// A backup while the guest runs: paused, disks quiesced, resumed.
	dest := filepath.Join(dir, "backup")
	start := time.Now()
	out := g.ok("backup", "web1", dest)
	t.Logf("backup of the running VM took %s", time.Since(start).Round(time.Millisecond))
	assert.Contains(t, out, "web1 was paused for")
	assert.Equal(t, "running", g.list()["web1"].State, "resumed after the backup")
	var m manifest
	b, err := os.ReadFile(filepath.Join(dest, "manifest.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &m))
	roles := map[string]int{}
	for _, f := range m.Files {
		roles[f.Role]++
		if f.Role == "disk" {
			assert.Equal(t, want, f.SHA256, "the backup holds what the guest wrote")
			assert.Equal(t, int64(imageSize), f.Size)
			assert.Equal(t, want, fileSum(t, filepath.Join(dest, f.Path)))
			t.Logf("backup image %s: %d bytes, %d of data, %d allocated", f.Path, f.Size, f.Data, allocated(t, filepath.Join(dest, f.Path)))
			assert.LessOrEqual(t, allocated(t, filepath.Join(dest, f.Path)), int64(dataSize+mib), "holes stay holes")
		}
	}
	assert.Equal(t, map[string]int{"definition": 1, "kernel": 1, "initrd": 1, "disk": 1}, roles)

	g.ok("destroy", "web1")
	assert.Equal(t, "stopped", g.list()["web1"].State)
	g.ok("undefine", "web1")
	assert.Empty(t, g.list())

	// Restore next to the old image, which the new definition must not use.
	restored := filepath.Join(dir, "restored")
	out = g.ok("restore", dest, "--disk-dir", restored)
	assert.Contains(t, out, "web1 restored from "+dest+": 4 files verified")
	newImg := filepath.Join(restored, "web1.img")
	assert.Equal(t, want, fileSum(t, newImg), "the restored image")
	var stored struct {
		Disks []struct {
			Path string `json:"path"`
		} `json:"disks"`
	}
	b, err = os.ReadFile(filepath.Join(g.state, "vms", "web1.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &stored))
	require.Len(t, stored.Disks, 1)
	assert.Equal(t, newImg, stored.Disks[0].Path)

	// Attached to the console socket from the start, a client sees the
	// guest read back the data; a second client is turned away.
	g.ok("start", "web1")
	conn, err := net.Dial("unix", filepath.Join(g.state, "run", "web1", "console.sock"))
	require.NoError(t, err)
	defer conn.Close()
	second, err := net.Dial("unix", filepath.Join(g.state, "run", "web1", "console.sock"))
	require.NoError(t, err)
	busy, err := io.ReadAll(second)
	require.NoError(t, err)
	second.Close()
	assert.Contains(t, string(busy), "another client is attached")
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(guestWait)))
	var seen bytes.Buffer
	for sc := bufio.NewScanner(io.TeeReader(conn, &seen)); !strings.Contains(seen.String(), "GVMMTEST sleeping=3600"); {
		require.True(t, sc.Scan(), "the console stream ended: %v\n%s", sc.Err(), seen.String())
	}
	assert.Contains(t, seen.String(), "GVMMTEST verify=vda:ok", "the restored guest reads what it wrote before the backup")
	conn.Close()
	g.waitConsole("web1", "verify=vda:ok", "sleeping=3600")
	host := g.ok("host")
	assert.Regexp(t, `vCPUs of running VMs\s+1 in 1 VMs`, host)
	assert.Regexp(t, `memory committed\s+256.0 MiB`, host)

	// A VMM killed with SIGKILL shows as crashed and starts again.
	pid := g.list()["web1"].PID
	require.NotZero(t, pid)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool { return unix.Kill(pid, 0) != nil }, time.Minute, 50*time.Millisecond)
	crashed := g.list()["web1"]
	assert.Equal(t, "stopped", crashed.State)
	assert.True(t, crashed.Crashed)
	assert.Regexp(t, `web1\s+stopped \(crashed\)`, g.ok("list"))
	for _, f := range []string{"pid", "api.sock", "console.sock"} {
		assert.NoFileExists(t, filepath.Join(g.state, "run", "web1", f))
	}
	g.ok("start", "web1")
	assert.Equal(t, "running", g.list()["web1"].State)

	// guestblk does not handle the power button: stopped after the timeout.
	r := g.run("shutdown", "--timeout", "3s", "web1")
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Contains(t, r.stderr, "did not power off within 3s")
	assert.Equal(t, "web1 stopped\n", r.stdout)
	assert.Equal(t, "stopped", g.list()["web1"].State)
	assert.Equal(t, want, fileSum(t, newImg), "the guest rewrote the same data")
}
