// Package blk_test boots the stock Debian kernel with gvmm and raw disk
// images, and checks end to end what the guest's own virtio_pci and
// virtio_blk drivers see and do: the disks' sizes, serials and PCI IDs,
// data written with O_DIRECT and through the page cache, reads of what
// the host wrote, flushes that survive a killed VMM, read-only disks,
// the lock on writable images, an ext4 file system shared with the
// host's e2fsprogs, discard and write-zeroes within the limits the device
// advertises, and a rate limit set through the API. The guest's init is
// tests/guestblk.
package blk_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gvmm-dev/gvmm/machine/api"
	"github.com/gvmm-dev/gvmm/tests/debkernel"
	"github.com/gvmm-dev/gvmm/tests/guestblk/pattern"
	"github.com/gvmm-dev/gvmm/tests/initramfs"
	"github.com/gvmm-dev/gvmm/tests/internal/guest"
	"github.com/gvmm-dev/gvmm/tests/kvmhost"
)

// guestModules are what the guest loads, dependencies resolved by
// debkernel: the PCI transport, the disk driver, and ext4 with the
// crc32c its metadata checksums need (the guest has no modprobe to load
// it on demand).
var guestModules = []string{"virtio_pci", "virtio_blk", "crc32c_generic", "ext4"}

// e2fsprogs are the host programs the ext4 test uses; the KVM test host
// gets copies with their shared libraries.
var e2fsprogs = []string{"mkfs.ext4", "debugfs", "e2fsck"}

func TestMain(m *testing.M) {
	if os.Getenv(kvmhost.EnvInside) == "" {
		for _, p := range e2fsprogs {
			if _, err := exec.LookPath(p); err != nil {
				fmt.Fprintf(os.Stderr, "FAIL: the disk tests need %s (%v): install e2fsprogs (sudo apt-get install -y e2fsprogs)\n", p, err)
				os.Exit(1)
			}
		}
	}
	opts := []kvmhost.Option{
		kvmhost.WithBinary("gvmm", "github.com/gvmm-dev/gvmm/cmd/gvmm"),
		kvmhost.WithBinary("guestblk", "github.com/gvmm-dev/gvmm/tests/guestblk"),
		kvmhost.WithModules(guestModules...),
	}
	for _, p := range e2fsprogs {
		opts = append(opts, kvmhost.WithHostProgram(p))
	}
	kvmhost.Main(m, opts...)
}

const (
	// bootTimeout bounds one gvmm run; a stuck guest fails the test.
	bootTimeout = 4 * time.Minute
	mib         = 1 << 20
	// virtio 1.0 PCI IDs: Red Hat's vendor ID, 0x1040 + the block device ID 2.
	virtioBlkPCI = "0x1af4:0x1042"
	// guestFileText starts what guestblk's mount-ext4 step writes.
	guestFileText = "written by the gvmm guest: "
)

// guestInitrd builds the guest's initramfs: guestblk as /init and the
// modules it loads, in load order.
func guestInitrd(t *testing.T) string {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	mods, err := k.Modules(guestModules...)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "guest.cpio")
	require.NoError(t, initramfs.WriteGuest(p, kvmhost.Asset("guestblk"), mods))
	return p
}

// runArgs are the arguments of "gvmm run" booting guestblk with the
// command line keys params and the disks (--disk values).
func runArgs(t *testing.T, initrd string, params []string, disks ...string) []string {
	t.Helper()
	k, err := debkernel.Get()
	require.NoError(t, err)
	cmdline := strings.Join(append([]string{"console=ttyS0 reboot=k panic=1 quiet"}, params...), " ")
	args := []string{"run", "--kernel", k.Vmlinuz, "--initrd", initrd, "--cmdline", cmdline}
	for _, d := range disks {
		args = append(args, "--disk", d)
	}
	return args
}

// vmm is a running gvmm whose guest's reports are collected live.
type vmm struct {
	cmd     *exec.Cmd
	ctx     context.Context
	cancel  context.CancelFunc
	out     *guest.Recorder
	errb    *guest.Recorder
	done    chan struct{} // closed when gvmm has ended; waitErr is then set
	waitErr error
}

// start starts gvmm with args; stdin may be nil.
func start(t *testing.T, stdin io.Reader, args ...string) *vmm {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	v := &vmm{cmd: exec.CommandContext(ctx, kvmhost.Asset("gvmm"), args...), ctx: ctx, cancel: cancel,
		out: &guest.Recorder{}, errb: &guest.Recorder{}, done: make(chan struct{})}
	v.cmd.Stdin, v.cmd.Stdout, v.cmd.Stderr = stdin, v.out, v.errb
	v.cmd.WaitDelay = 5 * time.Second
	require.NoError(t, v.cmd.Start())
	go func() {
		v.waitErr = v.cmd.Wait()
		close(v.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-v.done
	})
	return v
}

// run runs gvmm to its end.
func run(t *testing.T, args ...string) result {
	t.Helper()
	return start(t, nil, args...).wait(t)
}

// waitFor waits until the guest reported key and returns its values.
func (v *vmm) waitFor(t *testing.T, key string, ok func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(bootTimeout)
	for {
		vals := v.out.Values(key)
		if ok(vals) {
			return vals
		}
		if v.out.Has("done") || time.Now().After(deadline) {
			t.Fatalf("the guest did not report the awaited %s (reports %q)\nstdout:\n%s\nstderr:\n%s",
				key, vals, v.out.String(), v.errb.String())
		}
		select {
		case <-v.done:
			t.Fatalf("gvmm ended before the guest reported the awaited %s (reports %q): %v\nstdout:\n%s\nstderr:\n%s",
				key, vals, v.waitErr, v.out.String(), v.errb.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// wait waits for gvmm's end; a timeout fails the test.
func (v *vmm) wait(t *testing.T) result {
	t.Helper()
	<-v.done
	err := v.waitErr
	r := result{stdout: v.out.String(), stderr: v.errb.String(), rec: v.out}
	require.NoError(t, v.ctx.Err(), "gvmm did not finish in %s\n%s", bootTimeout, r)
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.status = exit.ExitCode() // -1 when killed by a signal
		r.signaled = !exit.Exited()
	case err != nil:
		t.Fatalf("running gvmm: %v\n%s", err, r)
	}
	return r
}

type result struct {
	status   int
	signaled bool
	stdout   string
	stderr   string
	rec      *guest.Recorder
}

func (r result) String() string {
	return "--- gvmm stdout (guest console) ---\n" + r.stdout + "--- gvmm stderr ---\n" + r.stderr
}

func (r result) values(key string) []string { return r.rec.Values(key) }

// requireClean checks that gvmm exited 0 after the guest ran all its
// steps without reporting an error.
func (r result) requireClean(t *testing.T) {
	t.Helper()
	require.Equal(t, 0, r.status, "gvmm's exit status\n%s", r)
	require.Equal(t, []string{"1"}, r.values("done"), "the guest did not finish its steps\n%s", r)
	require.Empty(t, r.values("error"), "the guest reported errors\n%s", r)
}

// newImage creates a raw image of size bytes: the pattern for seed over
// its first fill bytes, zeros after.
func newImage(t *testing.T, path string, size int64, seed uint64, fill int64) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	_, err = io.Copy(f, pattern.Reader(seed, 0, fill))
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
}

// rangeSum returns the SHA-256 of the bytes [off, off+n) of a file.
func rangeSum(t *testing.T, path string, off, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	got, err := io.Copy(h, io.NewSectionReader(f, off, n))
	require.NoError(t, err)
	require.Equal(t, n, got, "%s is shorter than %d bytes", path, off+n)
	return [32]byte(h.Sum(nil))
}

func patternSum(seed uint64, n int64) [32]byte {
	h := sha256.New()
	_, _ = io.Copy(h, pattern.Reader(seed, 0, n))
	return [32]byte(h.Sum(nil))
}

// assertPattern checks that the image's first n bytes are the pattern for
// seed, by SHA-256, and names the first wrong byte when they are not.
func assertPattern(t *testing.T, path string, seed uint64, n int64) {
	t.Helper()
	if rangeSum(t, path, 0, n) == patternSum(seed, n) {
		return
	}
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	at := pattern.Mismatch(data[:n], seed, 0)
	t.Errorf("%s: bytes [0, %d) are not the pattern for seed %d: first wrong byte at %d (sector %d)",
		filepath.Base(path), n, seed, at, at/512)
}

// assertZero checks that the bytes [off, off+n) of the image are zero.
func assertZero(t *testing.T, path string, off, n int64) {
	t.Helper()
	zero, err := os.Open("/dev/zero")
	require.NoError(t, err)
	defer zero.Close()
	h := sha256.New()
	_, err = io.CopyN(h, zero, n)
	require.NoError(t, err)
	assert.Equal(t, [32]byte(h.Sum(nil)), rangeSum(t, path, off, n),
		"%s: bytes [%d, %d) are not zero", filepath.Base(path), off, off+n)
}

// TestDisksAndData boots once with three disks. The guest lists them
// (size in sectors, read-only flag, serial, PCI IDs), writes 64 MiB of
// the pattern to vda with O_DIRECT and to vdb through the page cache,
// each followed by fsync, and verifies vdc, which the host filled. After
// gvmm's exit the host checks the images.
func TestDisksAndData(t *testing.T) {
	const size = 64 * mib
	dir := t.TempDir()
	type disk struct {
		name, spec string
		path       string
		bytes      int64
		seed       uint64
		fill       int64 // pattern bytes the host writes first
		want       string
	}
	disks := []disk{
		{name: "vda", spec: ",serial=web1", bytes: size + 4096, seed: 11,
			want: "vda size=131080 ro=0 serial=web1 pci=" + virtioBlkPCI},
		{name: "vdb", bytes: 80*mib + 5*512, seed: 22,
			want: "vdb size=163845 ro=0 serial= pci=" + virtioBlkPCI},
		{name: "vdc", spec: ",serial=golden-3", bytes: size, seed: 33, fill: size,
			want: "vdc size=131072 ro=0 serial=golden-3 pci=" + virtioBlkPCI},
	}
	var specs, params []string
	for i := range disks {
		d := &disks[i]
		d.path = filepath.Join(dir, d.name+".img")
		newImage(t, d.path, d.bytes, d.seed, d.fill)
		specs = append(specs, d.path+d.spec)
		params = append(params, fmt.Sprintf("gvmm.seed.%s=%d", d.name, d.seed))
	}
	params = append(params, "gvmm.disks=3", "gvmm.mib=64",
		"gvmm.steps=info,write-direct@vda,write-buffered@vdb,read-verify@vdc")

	r := run(t, runArgs(t, guestInitrd(t), params, specs...)...)
	r.requireClean(t)

	t.Run("guest sees the disks", func(t *testing.T) {
		got := r.values("disk")
		require.Len(t, got, len(disks), "%s", r)
		for i, d := range disks {
			assert.Equal(t, d.want, got[i], "disk %s", d.name)
		}
	})
	for _, tc := range []struct {
		name   string
		d      disk
		report []string
	}{
		{"O_DIRECT write reaches the image", disks[0], []string{"vda:67108864", "vdb:67108864"}},
		{"buffered write and fsync reach the image", disks[1], nil},
		{"guest reads what the host wrote", disks[2], nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.report != nil {
				assert.Equal(t, tc.report, r.values("written"))
			}
			assertPattern(t, tc.d.path, tc.d.seed, size)
			assertZero(t, tc.d.path, size, tc.d.bytes-size)
		})
	}
	assert.Equal(t, []string{"vdc:ok"}, r.values("verify"), "%s", r)
}

// TestFlushedWritesSurviveSIGKILL lets the guest write and fdatasync
// 1 MiB rounds, kills gvmm with SIGKILL as soon as the guest reported
// round k flushed, and checks that the image holds every round it saw
// reported: a completed flush must not depend on the VMM living on. One
// guest writes back to back, so the kill lands among writes in flight;
// the other pauses between rounds.
func TestFlushedWritesSurviveSIGKILL(t *testing.T) {
	const chunk, rounds = 1 * mib, 40
	initrd := guestInitrd(t)
	for _, tc := range []struct {
		killAfter int
		pauseMS   int
		seed      uint64
	}{{3, 0, 101}, {5, 100, 102}} {
		t.Run(fmt.Sprintf("kill after round %d with %d ms pauses", tc.killAfter, tc.pauseMS), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "durable.img")
			newImage(t, img, 64*mib, 0, 0)
			v := start(t, nil, runArgs(t, initrd, []string{
				"gvmm.steps=durable", "gvmm.seed=" + strconv.FormatUint(tc.seed, 10),
				"gvmm.rounds=" + strconv.Itoa(rounds), "gvmm.chunkkib=1024",
				"gvmm.pausems=" + strconv.Itoa(tc.pauseMS),
			}, img)...)
			flushed := v.waitFor(t, "flushed", func(vals []string) bool {
				return len(vals) >= tc.killAfter
			})
			require.NoError(t, v.cmd.Process.Kill())
			r := v.wait(t)
			require.True(t, r.signaled, "gvmm ended before it was killed (status %d)\n%s", r.status, r)
			require.Empty(t, r.values("error"), "%s", r)
			require.Less(t, len(flushed), rounds, "the guest finished before the kill: nothing was tested")
			for i, s := range flushed {
				require.Equal(t, strconv.Itoa(i+1), s, "rounds out of order\n%s", r)
			}
			assertPattern(t, img, tc.seed, int64(len(flushed))*chunk)
			t.Logf("killed after the guest reported %d flushed rounds; %d reported in all", len(flushed), len(r.values("flushed")))
		})
	}
}

// TestReadOnlyDiskAndWriteLock boots a guest with a writable disk and a
// read-only one. The guest sees the read-only flag and cannot write, and
// the image is unchanged. While that gvmm holds the writable image, a
// second gvmm on the same image is refused with "in use".
func TestReadOnlyDiskAndWriteLock(t *testing.T) {
	const size = 16 * mib
	dir := t.TempDir()
	rw, ro := filepath.Join(dir, "rw.img"), filepath.Join(dir, "ro.img")
	newImage(t, rw, size, 0, 0)
	newImage(t, ro, size, 5, size)
	roSum := rangeSum(t, ro, 0, size)
	initrd := guestInitrd(t)

	stdin, feed := io.Pipe()
	defer feed.Close()
	first := start(t, stdin, runArgs(t, initrd,
		[]string{"gvmm.disks=2", "gvmm.sleep=180", "gvmm.steps=info,write-ro@vdb,wait"},
		rw+",serial=rw", ro+",readonly,serial=ro")...)
	first.waitFor(t, "waiting", func(v []string) bool { return len(v) > 0 })

	second := run(t, runArgs(t, initrd, nil, rw)...)
	assert.NotEqual(t, 0, second.status, "a second gvmm ran on an image another one holds writable\n%s", second)
	assert.Contains(t, second.stderr, "in use")
	assert.NotContains(t, second.stderr, "panic")
	assert.False(t, second.rec.Has("done"), "the second gvmm booted its guest\n%s", second)

	_, err := io.WriteString(feed, "go\n")
	require.NoError(t, err)
	require.NoError(t, feed.Close())
	r := first.wait(t)
	r.requireClean(t)
	assert.Equal(t, []string{"input"}, r.values("waited"))
	assert.Equal(t, []string{
		"vda size=32768 ro=0 serial=rw pci=" + virtioBlkPCI,
		"vdb size=32768 ro=1 serial=ro pci=" + virtioBlkPCI,
	}, r.values("disk"))
	rowrite := r.values("rowrite")
	require.Len(t, rowrite, 1, "%s", r)
	assert.True(t, strings.HasPrefix(rowrite[0], "vdb:refused:"), "the guest wrote to a read-only disk: %s", rowrite[0])
	assert.Equal(t, roSum, rangeSum(t, ro, 0, size), "the read-only image changed")
	assertZero(t, rw, 0, size)
}

// e2fs returns the path of an e2fsprogs program; TestMain makes sure it
// exists outside the test host and carries it in.
func e2fs(t *testing.T, name string) string {
	t.Helper()
	p := kvmhost.Asset(name)
	_, err := os.Stat(p)
	require.NoError(t, err, "%s is missing: install e2fsprogs (sudo apt-get install -y e2fsprogs)", name)
	return p
}

// tool runs a host program and returns its standard output.
func tool(t *testing.T, prog string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	require.NoError(t, cmd.Run(), "%s %q\nstdout:\n%s\nstderr:\n%s", filepath.Base(prog), args, out.String(), errb.String())
	return out.String()
}

// TestExt4SharedWithHost makes an ext4 file system on the host with a
// file in it, lets the guest mount it, read that file and write another,
// and reads that back on the host; e2fsck then finds the file system
// clean.
func TestExt4SharedWithHost(t *testing.T) {
	mkfs, debugfs, fsck := e2fs(t, "mkfs.ext4"), e2fs(t, "debugfs"), e2fs(t, "e2fsck")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	newImage(t, img, 64*mib, 0, 0)
	tool(t, mkfs, "-F", "-q", "-t", "ext4", img)
	hostText := "hello-from-the-host-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	src := filepath.Join(dir, "host.txt")
	require.NoError(t, os.WriteFile(src, []byte(hostText+"\n"), 0o644))
	tool(t, debugfs, "-w", "-R", "write "+src+" host.txt", img)
	require.Equal(t, hostText+"\n", tool(t, debugfs, "-R", "cat host.txt", img), "debugfs did not store host.txt")

	token := strconv.FormatInt(time.Now().UnixNano(), 36)
	r := run(t, runArgs(t, guestInitrd(t), []string{"gvmm.steps=mount-ext4", "gvmm.token=" + token}, img)...)
	r.requireClean(t)
	assert.Equal(t, []string{hostText}, r.values("hostfile"))
	assert.Equal(t, []string{"written"}, r.values("guestfile"))
	assert.Equal(t, guestFileText+token+"\n", tool(t, debugfs, "-R", "cat guest.txt", img))
	tool(t, fsck, "-f", "-n", img)
}

// TestDiscardAndWriteZeroes lets the guest's driver zero 144 MiB and
// discard 136 MiB of a disk filled with the pattern, each more than the
// 128 MiB the device allows one request, so the driver splits them along
// the limits it read from the config space. The host then finds those
// ranges zero, the discarded one freed, and the rest untouched.
func TestDiscardAndWriteZeroes(t *testing.T) {
	const size, seed = 288 * mib, 44
	img := filepath.Join(t.TempDir(), "trim.img")
	newImage(t, img, size, seed, size)
	r := run(t, runArgs(t, guestInitrd(t), []string{"gvmm.steps=limits,zeroout,discard", "gvmm.zero=4:144", "gvmm.discard=148:136"}, img)...)
	r.requireClean(t)
	assert.Equal(t, []string{"vda:zeroes=134217728:discard=134217728:segments=8"}, r.values("limits"), "the advertised limits")
	assert.Equal(t, []string{"vda:4:144"}, r.values("zeroed"))
	assert.Equal(t, []string{"vda:148:136"}, r.values("discarded"))

	assertPattern(t, img, seed, 4*mib)
	assertZero(t, img, 4*mib, 280*mib)
	h := sha256.New()
	_, err := io.Copy(h, pattern.Reader(seed, 284*mib, 4*mib))
	require.NoError(t, err)
	assert.Equal(t, [32]byte(h.Sum(nil)), rangeSum(t, img, 284*mib, 4*mib), "the last 4 MiB changed")
	var st unix.Stat_t
	require.NoError(t, unix.Stat(img, &st))
	assert.Less(t, st.Blocks*512, int64(size-100*mib), "the discarded range still takes space")
}

// TestDiskRateLimitThroughAPI times a 16 MiB O_DIRECT read in the guest
// before and after the host limits the disk to 4 MiB/s through the
// control API, naming it by its serial: the second read cannot take less
// than the 15 MiB beyond the burst allow.
func TestDiskRateLimitThroughAPI(t *testing.T) {
	dir := t.TempDir()
	img, apiSock := filepath.Join(dir, "limited.img"), filepath.Join(dir, "api.sock")
	newImage(t, img, 32*mib, 0, 0)
	stdin, feed := io.Pipe()
	defer feed.Close()
	v := start(t, stdin, append(runArgs(t, guestInitrd(t),
		[]string{"gvmm.mib=16", "gvmm.sleep=180", "gvmm.steps=timed-read,wait,timed-read"}, img+",serial=limited"),
		"--api-socket", apiSock)...)
	v.waitFor(t, "waiting", func(v []string) bool { return len(v) > 0 })

	c := api.NewClient(apiSock)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const rate, burst = 4 * mib, 1 * mib
	limit := api.Bucket{Rate: rate, Burst: burst}
	require.NoError(t, c.SetDiskRateLimit(ctx, "limited", api.DiskRateLimit{Bytes: &limit}))
	info, err := c.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, []api.DiskInfo{{ID: "0", Path: img, Serial: "limited",
		RateLimit: api.DiskRateLimit{Bytes: &limit, Ops: &api.Bucket{}}}}, info.Disks)
	var apiErr *api.Error
	require.ErrorAs(t, c.SetDiskRateLimit(ctx, "1", api.DiskRateLimit{}), &apiErr)
	assert.Equal(t, 404, apiErr.StatusCode)

	_, err = io.WriteString(feed, "go\n")
	require.NoError(t, err)
	v.waitFor(t, "readms", func(v []string) bool { return len(v) >= 2 })
	text, err := c.Metrics(ctx)
	require.NoError(t, err)
	fams, err := api.ParseMetrics(text)
	require.NoError(t, err)
	require.Contains(t, fams, "gvmm_disk_throttled_requests_total")
	require.Len(t, fams["gvmm_disk_throttled_requests_total"].Metric, 1)
	assert.Positive(t, fams["gvmm_disk_throttled_requests_total"].Metric[0].GetCounter().GetValue())
	require.NoError(t, feed.Close())
	r := v.wait(t)
	r.requireClean(t)

	ms := r.values("readms")
	require.Len(t, ms, 2, "%s", r)
	var took [2]time.Duration
	for i, s := range ms {
		n, err := strconv.Atoi(strings.TrimPrefix(s, "vda:"))
		require.NoError(t, err, s)
		took[i] = time.Duration(n) * time.Millisecond
	}
	t.Logf("16 MiB O_DIRECT read: %s unlimited, %s at 4 MiB/s", took[0], took[1])
	assert.GreaterOrEqual(t, took[1], 3500*time.Millisecond, "15 MiB beyond the burst at 4 MiB/s")
}
