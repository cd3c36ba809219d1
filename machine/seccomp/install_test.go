package seccomp

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// childEnv makes the test binary a child that installs the VMM filter
// and runs one case of childCases: the filter cannot be removed, so it
// is tried in a process of its own.
const childEnv = "GVMM_SECCOMP_TEST_CHILD"

// childDirEnv names a folder the child may write in.
const childDirEnv = "GVMM_SECCOMP_TEST_DIR"

func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		os.Exit(child(name))
	}
	os.Exit(m.Run())
}

// childCases each call install, then make calls under the filter; a
// case that survives prints what happened and exits 0.
var childCases = map[string]func(install func() error) error{
	"allowed": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		// The runtime at work: new OS threads (goroutines locked to a
		// thread each, all at once), timers, the GC, memory, an eventfd
		// through the poller.
		const threads = 8
		var locked, release sync.WaitGroup
		locked.Add(threads)
		release.Add(1)
		for range threads {
			go func() {
				runtime.LockOSThread()
				locked.Done()
				release.Wait()
			}()
		}
		locked.Wait()
		release.Done()
		time.Sleep(10 * time.Millisecond)
		runtime.GC()
		b, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return err
		}
		b[0] = 1
		if err := unix.Madvise(b, unix.MADV_DONTNEED); err != nil {
			return err
		}
		if err := unix.Munmap(b); err != nil {
			return err
		}
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), "eventfd")
		defer f.Close()
		if _, err := f.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
			return err
		}
		_, err = f.Read(make([]byte, 8))
		return err
	},
	// What the console log's rotation does, in the folder the parent
	// names.
	"rotate a file": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		path := filepath.Join(os.Getenv(childDirEnv), "console.log")
		for range 2 {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			if _, err := f.WriteString("output\n"); err != nil {
				return err
			}
			// gvmm run's stderr follows its log.
			if err := unix.Dup3(int(f.Fd()), 2, 0); err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			if err := os.Rename(path, path+".1"); err != nil {
				return err
			}
		}
		return nil
	},
	"socket": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		_, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		return err
	},
	"ptrace": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		_, _, errno := unix.RawSyscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0)
		return errno
	},
	"fork": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		r, _, errno := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
		if errno == 0 && r == 0 {
			unix.Exit(0) // the forked child, had the filter let it be
		}
		return errno
	},
	"dup3 onto another descriptor": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		return unix.Dup3(0, 100, 0)
	},
	"kill another process": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		return unix.Kill(1, 0)
	},
	"executable memory": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		_, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		return err
	},
	"clone3": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		_, _, errno := unix.RawSyscall(unix.SYS_CLONE3, 0, 0, 0)
		if errno != unix.ENOSYS {
			return fmt.Errorf("clone3: %v, want ENOSYS", errno)
		}
		return nil
	},
	// A thread that existed before Install is filtered too (TSYNC).
	"socket from an older thread": func(install func() error) error {
		locked, start, errc := make(chan struct{}), make(chan struct{}), make(chan error)
		go func() {
			runtime.LockOSThread()
			close(locked)
			<-start
			_, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
			errc <- err
		}()
		<-locked
		if err := install(); err != nil {
			return err
		}
		close(start)
		return <-errc
	},
}

// shimChildCases are childCases under the shim's list.
var shimChildCases = map[string]func(install func() error) error{
	"shim: unmount, getcwd and reap": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		if err := unix.Statfs("/", &unix.Statfs_t{}); err != unix.ENOSYS {
			return fmt.Errorf("statfs: %v, want ENOSYS", err)
		}
		// Not a mount point: EINVAL, or EPERM without CAP_SYS_ADMIN;
		// either way the call ran.
		if err := unix.Unmount(os.Getenv(childDirEnv), 0); err != unix.EINVAL && err != unix.EPERM {
			return fmt.Errorf("umount2: %v, want EINVAL or EPERM", err)
		}
		if _, err := unix.Getwd(); err != nil {
			return fmt.Errorf("getcwd: %w", err)
		}
		if _, err := unix.Wait4(-1, nil, unix.WNOHANG, nil); err != unix.ECHILD {
			return fmt.Errorf("wait4: %v, want ECHILD", err)
		}
		return nil
	},
	"shim: mount": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		return unix.Mount("none", os.Getenv(childDirEnv), "tmpfs", 0, "")
	},
	"shim: detach": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		return unix.Unmount(os.Getenv(childDirEnv), unix.MNT_DETACH)
	},
	"shim: exec": func(install func() error) error {
		if err := install(); err != nil {
			return err
		}
		return unix.Exec("/bin/true", []string{"true"}, nil)
	},
}

func child(name string) int {
	rules := VMM
	fn, ok := childCases[name]
	if !ok {
		fn, ok = shimChildCases[name]
		rules = Shim
	}
	if !ok {
		fmt.Fprintf(os.Stderr, "no child case %q\n", name)
		return 99
	}
	if err := fn(func() error { return Install(rules()) }); err != nil {
		fmt.Printf("survived: %v\n", err)
		return 0
	}
	fmt.Println("survived")
	return 0
}

func TestInstallDeniesAndReports(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		stdout  string
		syscall string // named in the log line; "" when the call is allowed
	}{
		{name: "allowed", stdout: "survived\n"},
		{name: "clone3", stdout: "survived\n"},
		{name: "rotate a file", stdout: "survived\n"},
		{name: "socket", status: ExitStatus, syscall: "socket nr=41"},
		{name: "ptrace", status: ExitStatus, syscall: "ptrace nr=101"},
		{name: "fork", status: ExitStatus, syscall: "clone nr=56"},
		{name: "kill another process", status: ExitStatus, syscall: "kill nr=62"},
		{name: "dup3 onto another descriptor", status: ExitStatus, syscall: "dup3 nr=292"},
		{name: "executable memory", status: ExitStatus, syscall: "mmap nr=9"},
		{name: "socket from an older thread", status: ExitStatus, syscall: "socket nr=41"},
		{name: "shim: unmount, getcwd and reap", stdout: "survived\n"},
		{name: "shim: mount", status: ExitStatus, syscall: "mount nr=165"},
		{name: "shim: detach", status: ExitStatus, syscall: "umount2 nr=166"},
		{name: "shim: exec", status: ExitStatus, syscall: "execve nr=59"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), childEnv+"="+tt.name, childDirEnv+"="+t.TempDir())
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			status := 0
			if ee, ok := errors.AsType[*exec.ExitError](err); ok {
				status = ee.ExitCode()
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tt.status, status, "stdout %q stderr %q", stdout.String(), stderr.String())
			if tt.syscall == "" {
				assert.Equal(t, tt.stdout, stdout.String())
				assert.Empty(t, stderr.String())
				return
			}
			assert.Empty(t, stdout.String(), "the call returned")
			assert.Equal(t, "level=ERROR msg=\"seccomp: system call not allowed; exiting\" syscall="+tt.syscall+"\n", stderr.String())
		})
	}
}
