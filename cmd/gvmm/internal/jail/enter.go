package jail

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/psx"
)

// oldRoot is where pivot_root puts the host's root, until it is
// unmounted.
const oldRoot = "/.old-root"

// Enter confines the calling VMM, started by Supervise, for the rest of
// its life: its root becomes spec.Root holding only spec.Binds, reopen
// (files read again by path: see machine.Config.BeforeRun) and a /proc of
// its own, then it runs as spec.UID:GID without any capability, with
// no_new_privs, under Landlock where the kernel has it. landlockErr is
// why Landlock could not be applied, nil when it was: the rest holds
// without it.
func Enter(spec Spec, reopen []string) (landlockErr error, err error) {
	// The mounts below would change the host's own mount namespace in a
	// process that Supervise did not start (EnvSpec set by hand).
	if os.Getpid() != 1 {
		return nil, errors.New("jail: not started by the supervisor: not the first process of a PID namespace of its own")
	}
	binds := spec.Binds
	for _, p := range reopen {
		binds = append(binds, Bind{Path: p})
	}
	binds = mergeBinds(binds)
	if err := buildRoot(spec.Root, binds); err != nil {
		return nil, err
	}
	if err := pivot(spec.Root); err != nil {
		return nil, err
	}
	if err := dropPrivileges(spec.UID, spec.GID); err != nil {
		return nil, err
	}
	return restrictPaths(binds), nil
}

// buildRoot mounts a tmpfs on root holding binds at their own paths and
// a new /proc, the host's mounts no longer propagating into it.
func buildRoot(root string, binds []Bind) error {
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("jail: making / a slave mount: %w", err)
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=1m"); err != nil {
		return fmt.Errorf("jail: mounting the root: %w", err)
	}
	for _, b := range binds {
		if err := bindMount(root, b); err != nil {
			return err
		}
	}
	proc := filepath.Join(root, "proc")
	if err := os.Mkdir(proc, 0o555); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	// Of the VMM's PID namespace: it shows no host process.
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("jail: mounting /proc: %w", err)
	}
	return nil
}

// bindMount mounts b.Path on the same path under root, read-only unless
// b is writable, without set-uid files and, but for a device node,
// without devices.
func bindMount(root string, b Bind) error {
	st, err := os.Stat(b.Path)
	if err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	target := filepath.Join(root, b.Path)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if st.IsDir() {
		err = os.Mkdir(target, 0o755)
	} else {
		var f *os.File
		if f, err = os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
			err = f.Close()
		}
	}
	if err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("jail: %w", err)
	}
	if err := unix.Mount(b.Path, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("jail: binding %s: %w", b.Path, err)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NOEXEC)
	if !b.Writable {
		flags |= unix.MS_RDONLY
	}
	if st.Mode()&os.ModeDevice == 0 {
		flags |= unix.MS_NODEV
	}
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		return fmt.Errorf("jail: remounting %s: %w", b.Path, err)
	}
	return nil
}

// pivot makes root the root of the VMM's mount namespace and detaches
// the host's; the threads' root and working folder follow (pivot_root
// moves every task whose root was the old one).
func pivot(root string) error {
	if err := os.Mkdir(filepath.Join(root, oldRoot), 0o700); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	switch err := unix.PivotRoot(root, filepath.Join(root, oldRoot)); {
	case errors.Is(err, unix.EINVAL) && isRootfs():
		if err := moveRoot(root); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("jail: pivot_root: %w", err)
	default:
		if err := unix.Chdir("/"); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
		if err := unix.Unmount(oldRoot, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("jail: unmounting the host's root: %w", err)
		}
		if err := os.Remove(oldRoot); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
	}
	// Nothing new may appear in the root itself.
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("jail: remounting the root read-only: %w", err)
	}
	return nil
}

// isRootfs reports whether / is the initial ramfs, which pivot_root
// cannot move (a host booted from an initramfs that never switched root,
// as the KVM test host is).
func isRootfs() bool {
	var st unix.Statfs_t
	return unix.Statfs("/", &st) == nil && (st.Type == unix.RAMFS_MAGIC || st.Type == unix.TMPFS_MAGIC)
}

// moveRoot is pivot_root's stand-in on rootfs, as runc's no_pivot: the
// new root is moved over / and every thread chroots into it (they share
// their root). The host's root stays under it, out of reach of a process
// without CAP_SYS_CHROOT, which the VMM loses next.
func moveRoot(root string) error {
	if err := os.Remove(filepath.Join(root, oldRoot)); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if err := unix.Mount(root, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("jail: moving the root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("jail: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	return nil
}

// dropPrivileges empties the capability bounding and ambient sets,
// switches every thread to uid:gid without supplementary groups (which
// clears the permitted and effective capabilities) and sets
// no_new_privs, on every thread of the process. psx makes a call on
// every thread, in a static build and with cgo alike.
func dropPrivileges(uid, gid int) error {
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		if _, _, e := psx.Syscall6(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0, 0); e != 0 {
			if e == unix.EINVAL { // beyond this kernel's last capability
				break
			}
			return fmt.Errorf("jail: dropping capability %d from the bounding set: %w", c, e)
		}
	}
	if _, _, e := psx.Syscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("jail: clearing the ambient capabilities: %w", e)
	}
	// Go applies these to every thread.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("jail: setgroups: %w", err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("jail: setresgid %d: %w", gid, err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("jail: setresuid %d: %w", uid, err)
	}
	if _, _, e := psx.Syscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("jail: setting no_new_privs: %w", e)
	}
	return nil
}

// restrictPaths applies Landlock, as far as the kernel has it: binds as
// they are mounted, /proc read-only, no TCP. It returns why it could not.
func restrictPaths(binds []Bind) error {
	rules := []landlock.Rule{landlock.RODirs("/proc")}
	for _, b := range binds {
		st, err := os.Stat(b.Path)
		if err != nil {
			return err
		}
		switch {
		case st.IsDir() && b.Writable:
			rules = append(rules, landlock.RWDirs(b.Path))
		case st.IsDir():
			rules = append(rules, landlock.RODirs(b.Path))
		case st.Mode()&os.ModeDevice != 0:
			rules = append(rules, landlock.RWFiles(b.Path).WithIoctlDev())
		default:
			rules = append(rules, landlock.ROFiles(b.Path))
		}
	}
	if _, err := llsys.LandlockGetABIVersion(); err != nil {
		return fmt.Errorf("the kernel has no Landlock (%w): build it with CONFIG_SECURITY_LANDLOCK and add landlock to its lsm= boot option", err)
	}
	return landlock.V6.BestEffort().Restrict(rules...)
}
