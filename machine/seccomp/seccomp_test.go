package seccomp

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// seccompData is struct seccomp_data.
type seccompData struct {
	nr   uint32
	arch uint32
	args [6]uint64
}

// run interprets prog (the instructions Build emits) over d, as the
// kernel would, and returns the action.
func run(t *testing.T, prog []unix.SockFilter, d seccompData) uint32 {
	t.Helper()
	buf := make([]byte, 64)
	binary.LittleEndian.PutUint32(buf[dataNr:], d.nr)
	binary.LittleEndian.PutUint32(buf[dataArch:], d.arch)
	for i, a := range d.args {
		binary.LittleEndian.PutUint64(buf[dataArgs+8*i:], a)
	}
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			require.Zero(t, in.K%4, "unaligned load at %d", pc)
			require.Less(t, int(in.K), len(buf), "load past seccomp_data at %d", pc)
			acc = binary.LittleEndian.Uint32(buf[in.K:])
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			acc &= in.K
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if acc == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			if acc >= in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		default:
			t.Fatalf("unexpected instruction %#x at %d", in.Code, pc)
		}
	}
	t.Fatal("ran off the end of the program")
	return 0
}

func call(nr int, args ...uint64) seccompData {
	d := seccompData{nr: uint32(nr), arch: unix.AUDIT_ARCH_X86_64}
	copy(d.args[:], args)
	return d
}

func TestBuildActions(t *testing.T) {
	rules := []Rule{
		{Syscall: unix.SYS_READ},
		{Syscall: unix.SYS_CLONE, Args: []Arg{{Index: 0, Mask: unix.CLONE_THREAD, Value: unix.CLONE_THREAD}}},
		{Syscall: unix.SYS_CLONE3, Errno: unix.ENOSYS},
		{Syscall: unix.SYS_KILL, Args: []Arg{{Index: 0, Mask: ^uint32(0), Value: 42}, {Index: 1, Mask: ^uint32(0), Value: 15}}},
		// Alternatives, not next to each other in the list.
		{Syscall: unix.SYS_IOCTL, Args: []Arg{{Index: 1, Mask: 0xff00, Value: 0xae00}}},
		{Syscall: unix.SYS_WRITE, Args: []Arg{{Index: 0, Mask: ^uint32(0), Value: 2}}},
		{Syscall: unix.SYS_IOCTL, Args: []Arg{{Index: 0, Mask: ^uint32(0), Value: 0}, {Index: 1, Mask: ^uint32(0), Value: unix.TCGETS}}},
		{Syscall: unix.SYS_IOCTL, Args: []Arg{{Index: 1, Mask: ^uint32(0), Value: unix.TCSETS}}},
	}
	prog, err := Build(rules)
	require.NoError(t, err)
	tests := []struct {
		name string
		in   seccompData
		want uint32
	}{
		{"allowed", call(unix.SYS_READ, 0, 0, 0), unix.SECCOMP_RET_ALLOW},
		{"not listed", call(unix.SYS_OPENAT), unix.SECCOMP_RET_TRAP},
		{"write to stderr", call(unix.SYS_WRITE, 2), unix.SECCOMP_RET_ALLOW},
		{"write elsewhere", call(unix.SYS_WRITE, 3), unix.SECCOMP_RET_TRAP},
		{"first alternative", call(unix.SYS_IOCTL, 9, 0xae80), unix.SECCOMP_RET_ALLOW},
		{"second alternative", call(unix.SYS_IOCTL, 0, unix.TCGETS), unix.SECCOMP_RET_ALLOW},
		{"second alternative, one arg fails", call(unix.SYS_IOCTL, 1, unix.TCGETS), unix.SECCOMP_RET_TRAP},
		{"third alternative", call(unix.SYS_IOCTL, 7, unix.TCSETS), unix.SECCOMP_RET_ALLOW},
		{"no alternative", call(unix.SYS_IOCTL, 0, unix.TIOCSTI), unix.SECCOMP_RET_TRAP},
		{"number 0 listed, 1 not", call(1), unix.SECCOMP_RET_TRAP},
		{"i386", seccompData{nr: unix.SYS_READ, arch: unix.AUDIT_ARCH_I386}, unix.SECCOMP_RET_KILL_PROCESS},
		{"x32", call(unix.SYS_READ | x32Bit), unix.SECCOMP_RET_KILL_PROCESS},
		{"thread", call(unix.SYS_CLONE, unix.CLONE_VM|unix.CLONE_THREAD|unix.CLONE_SIGHAND), unix.SECCOMP_RET_ALLOW},
		{"fork", call(unix.SYS_CLONE, uint64(unix.SIGCHLD)), unix.SECCOMP_RET_TRAP},
		{"high bits do not count", call(unix.SYS_CLONE, 1<<40|unix.CLONE_THREAD), unix.SECCOMP_RET_ALLOW},
		{"errno", call(unix.SYS_CLONE3), unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{"both args hold", call(unix.SYS_KILL, 42, 15), unix.SECCOMP_RET_ALLOW},
		{"first arg fails", call(unix.SYS_KILL, 1, 15), unix.SECCOMP_RET_TRAP},
		{"second arg fails", call(unix.SYS_KILL, 42, 9), unix.SECCOMP_RET_TRAP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, run(t, prog, tt.in))
		})
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name  string
		rules []Rule
		want  error
	}{
		{"negative number", []Rule{{Syscall: -1}}, ErrBadRule},
		{"huge number", []Rule{{Syscall: 1 << 20}}, ErrBadRule},
		{"twice", []Rule{{Syscall: unix.SYS_READ}, {Syscall: unix.SYS_READ}}, ErrBadRule},
		{"twice, once unconditionally", []Rule{{Syscall: unix.SYS_READ, Args: []Arg{{Index: 0, Mask: 1, Value: 1}}}, {Syscall: unix.SYS_READ}}, ErrBadRule},
		{"twice, with an errno", []Rule{{Syscall: unix.SYS_READ, Errno: unix.EPERM}, {Syscall: unix.SYS_READ, Args: []Arg{{Index: 0, Mask: 1, Value: 1}}}}, ErrBadRule},
		{"too many alternatives", func() (r []Rule) {
			for i := range 100 {
				r = append(r, Rule{Syscall: unix.SYS_IOCTL, Args: []Arg{{Index: 1, Mask: ^uint32(0), Value: uint32(i)}}})
			}
			return r
		}(), ErrTooLong},
		{"argument 6", []Rule{{Syscall: unix.SYS_READ, Args: []Arg{{Index: 6}}}}, ErrBadRule},
		{"value outside mask", []Rule{{Syscall: unix.SYS_READ, Args: []Arg{{Index: 0, Mask: 1, Value: 2}}}}, ErrBadRule},
		{"errno and args", []Rule{{Syscall: unix.SYS_READ, Errno: unix.EPERM, Args: []Arg{{Index: 0, Mask: 1, Value: 1}}}}, ErrBadRule},
		{"too many arg checks", []Rule{{Syscall: unix.SYS_READ, Args: make([]Arg, 100)}}, ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(tt.rules)
			assert.ErrorIs(t, err, tt.want)
		})
	}
}

func TestVMMPolicy(t *testing.T) {
	prog, err := Build(VMM())
	require.NoError(t, err)
	pid := uint64(unix.Getpid())
	tests := []struct {
		name string
		in   seccompData
		want uint32
	}{
		{"KVM_RUN", call(unix.SYS_IOCTL, 5, 0xae80), unix.SECCOMP_RET_ALLOW},
		{"KVM_SET_USER_MEMORY_REGION", call(unix.SYS_IOCTL, 4, 0x4020ae46), unix.SECCOMP_RET_ALLOW},
		{"terminal mode", call(unix.SYS_IOCTL, 0, unix.TCGETS), unix.SECCOMP_RET_ALLOW},
		{"raw terminal", call(unix.SYS_IOCTL, 0, unix.TCSETS), unix.SECCOMP_RET_ALLOW},
		{"TIOCSTI", call(unix.SYS_IOCTL, 0, unix.TIOCSTI), unix.SECCOMP_RET_TRAP},
		{"TIOCSETD", call(unix.SYS_IOCTL, 0, unix.TIOCSETD), unix.SECCOMP_RET_TRAP},
		{"TUNSETIFF", call(unix.SYS_IOCTL, 6, unix.TUNSETIFF), unix.SECCOMP_RET_TRAP},
		{"TUNSETOFFLOAD without nets", call(unix.SYS_IOCTL, 6, unix.TUNSETOFFLOAD), unix.SECCOMP_RET_TRAP},
		{"heap", call(unix.SYS_MMAP, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE), unix.SECCOMP_RET_ALLOW},
		{"executable memory", call(unix.SYS_MMAP, 0, 1<<20, unix.PROT_READ|unix.PROT_EXEC), unix.SECCOMP_RET_TRAP},
		{"mprotect executable", call(unix.SYS_MPROTECT, 0, 4096, unix.PROT_EXEC), unix.SECCOMP_RET_TRAP},
		{"balloon", call(unix.SYS_MADVISE, 0, 4096, unix.MADV_DONTNEED), unix.SECCOMP_RET_ALLOW},
		{"new thread", call(unix.SYS_CLONE, 0x50f00), unix.SECCOMP_RET_ALLOW},
		{"fork", call(unix.SYS_CLONE, uint64(unix.SIGCHLD)), unix.SECCOMP_RET_TRAP},
		{"vfork", call(unix.SYS_VFORK), unix.SECCOMP_RET_TRAP},
		{"clone3", call(unix.SYS_CLONE3), unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{"kick a vCPU", call(unix.SYS_TGKILL, pid, 7, uint64(unix.SIGURG)), unix.SECCOMP_RET_ALLOW},
		{"signal another process", call(unix.SYS_TGKILL, 1, 1, uint64(unix.SIGKILL)), unix.SECCOMP_RET_TRAP},
		{"kill another process", call(unix.SYS_KILL, 1, uint64(unix.SIGKILL)), unix.SECCOMP_RET_TRAP},
		{"socket", call(unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_RAW), unix.SECCOMP_RET_TRAP},
		{"execve", call(unix.SYS_EXECVE), unix.SECCOMP_RET_TRAP},
		{"ptrace", call(unix.SYS_PTRACE), unix.SECCOMP_RET_TRAP},
		{"name a mapping", call(unix.SYS_PRCTL, unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME), unix.SECCOMP_RET_ALLOW},
		{"other prctl", call(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 1), unix.SECCOMP_RET_TRAP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, run(t, prog, tt.in))
		})
	}
}

func TestSharesPolicy(t *testing.T) {
	without, err := Build(VMM())
	require.NoError(t, err)
	with, err := Build(append(VMM(), Shares()...))
	require.NoError(t, err)
	for _, nr := range []int{unix.SYS_OPENAT2, unix.SYS_MKDIRAT, unix.SYS_GETDENTS64, unix.SYS_UTIMENSAT} {
		assert.Equal(t, uint32(unix.SECCOMP_RET_TRAP), run(t, without, call(nr)), "nr %d without shares", nr)
		assert.Equal(t, uint32(unix.SECCOMP_RET_ALLOW), run(t, with, call(nr)), "nr %d with shares", nr)
	}
	// Device nodes are never made, shares or not.
	assert.Equal(t, uint32(unix.SECCOMP_RET_TRAP), run(t, with, call(unix.SYS_MKNODAT)))
	assert.Equal(t, uint32(unix.SECCOMP_RET_TRAP), run(t, with, call(unix.SYS_EXECVE)))
}

func TestNetsPolicy(t *testing.T) {
	without, err := Build(VMM())
	require.NoError(t, err)
	with, err := Build(append(VMM(), Nets()...))
	require.NoError(t, err)
	for _, nr := range []int{unix.SYS_READV, unix.SYS_WRITEV} {
		assert.Equal(t, uint32(unix.SECCOMP_RET_TRAP), run(t, without, call(nr)), "nr %d without nets", nr)
		assert.Equal(t, uint32(unix.SECCOMP_RET_ALLOW), run(t, with, call(nr)), "nr %d with nets", nr)
	}
	assert.Equal(t, uint32(unix.SECCOMP_RET_ALLOW), run(t, with, call(unix.SYS_IOCTL, 6, unix.TUNSETOFFLOAD)))
	assert.Equal(t, uint32(unix.SECCOMP_RET_ALLOW), run(t, with, call(unix.SYS_IOCTL, 5, 0xae80)), "KVM_RUN")
	assert.Equal(t, uint32(unix.SECCOMP_RET_TRAP), run(t, with, call(unix.SYS_IOCTL, 6, unix.TUNSETIFF)))
	// Still no sockets of other families than AF_UNIX.
	assert.Equal(t, uint32(unix.SECCOMP_RET_TRAP), run(t, with, call(unix.SYS_SOCKET, unix.AF_INET)))
}

func TestShimPolicy(t *testing.T) {
	prog, err := Build(Shim())
	require.NoError(t, err)
	tests := []struct {
		name string
		in   seccompData
		want uint32
	}{
		{"KVM_RUN", call(unix.SYS_IOCTL, 5, 0xae80), unix.SECCOMP_RET_ALLOW},
		{"a share's openat2", call(unix.SYS_OPENAT2), unix.SECCOMP_RET_ALLOW},
		{"a FIFO", call(unix.SYS_OPENAT, 3, 0, unix.O_WRONLY), unix.SECCOMP_RET_ALLOW},
		{"dial containerd", call(unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM), unix.SECCOMP_RET_ALLOW},
		{"unmount the root", call(unix.SYS_UMOUNT2, 0, 0), unix.SECCOMP_RET_ALLOW},
		{"detach a mount", call(unix.SYS_UMOUNT2, 0, unix.MNT_DETACH), unix.SECCOMP_RET_TRAP},
		{"force an unmount", call(unix.SYS_UMOUNT2, 0, unix.MNT_FORCE), unix.SECCOMP_RET_TRAP},
		{"is it FUSE", call(unix.SYS_STATFS), unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{"where am I", call(unix.SYS_GETCWD), unix.SECCOMP_RET_ALLOW},
		{"reap", call(unix.SYS_WAIT4, ^uint64(0), 0, unix.WNOHANG), unix.SECCOMP_RET_ALLOW},
		{"mount", call(unix.SYS_MOUNT), unix.SECCOMP_RET_TRAP},
		{"fork for fusermount", call(unix.SYS_CLONE, unix.CLONE_VM|unix.CLONE_VFORK|uint64(unix.SIGCHLD)), unix.SECCOMP_RET_TRAP},
		{"execve", call(unix.SYS_EXECVE), unix.SECCOMP_RET_TRAP},
		{"a device node", call(unix.SYS_MKNODAT), unix.SECCOMP_RET_TRAP},
		{"socket", call(unix.SYS_SOCKET, unix.AF_INET), unix.SECCOMP_RET_TRAP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, run(t, prog, tt.in))
		})
	}
}

func TestSyscallName(t *testing.T) {
	assert.Equal(t, "read", SyscallName(0))
	assert.Equal(t, "socket", SyscallName(unix.SYS_SOCKET))
	assert.Equal(t, "newfstatat", SyscallName(unix.SYS_NEWFSTATAT))
	assert.Equal(t, "syscall_1000", SyscallName(1000))
	assert.Equal(t, "syscall_-1", SyscallName(-1))
}

// The handler in sigsys_amd64.s reads each message's length from a byte.
func TestDenyMessagesFit(t *testing.T) {
	denyMessagesOnce.Do(fillDenyMessages)
	for nr := range msgSlots {
		n := int(denyMessages[nr][0])
		require.NotZero(t, n, "slot %d", nr)
		require.Less(t, n, msgSize-1, "slot %d", nr)
		assert.Equal(t, byte('\n'), denyMessages[nr][n], "slot %d is cut short", nr)
	}
}

func TestSnapshotsPolicy(t *testing.T) {
	without, err := Build(VMM())
	require.NoError(t, err)
	with, err := Build(append(VMM(), Snapshots()...))
	require.NoError(t, err)
	for _, nr := range []int{unix.SYS_MKDIRAT, unix.SYS_GETDENTS64, unix.SYS_FTRUNCATE} {
		assert.Equal(t, uint32(unix.SECCOMP_RET_TRAP), run(t, without, call(nr)), "nr %d without snapshots", nr)
		assert.Equal(t, uint32(unix.SECCOMP_RET_ALLOW), run(t, with, call(nr)), "nr %d with snapshots", nr)
	}
}
