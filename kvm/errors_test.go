package kvm

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestIoctlErrorFormatsAndUnwraps(t *testing.T) {
	err := error(&IoctlError{Op: "KVM_SET_USER_MEMORY_REGION", Err: unix.EINVAL})
	assert.EqualError(t, err, "kvm: KVM_SET_USER_MEMORY_REGION: invalid argument")
	assert.ErrorIs(t, err, unix.EINVAL)
	assert.NotErrorIs(t, err, unix.EBADF)
}

// tempSystem wraps an ordinary file as a System: every KVM ioctl on it
// fails, which is what these tests need.
func tempSystem(t *testing.T) *System {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "not-kvm")
	require.NoError(t, err)
	kf, err := newKVMFile(f)
	require.NoError(t, err)
	return &System{fd: kf}
}

func TestIoctlOnClosedFileIsEBADF(t *testing.T) {
	s := tempSystem(t)
	require.NoError(t, s.Close())

	_, err := s.CheckExtension(CapUserMemory)
	var ie *IoctlError
	require.ErrorAs(t, err, &ie)
	assert.ErrorIs(t, err, unix.EBADF)
	assert.EqualError(t, err, "kvm: KVM_CHECK_EXTENSION: bad file descriptor")
}

func TestIoctlOnNonKVMFileIsENOTTY(t *testing.T) {
	s := tempSystem(t)
	defer s.Close()

	_, err := s.VCPUMmapSize()
	assert.ErrorIs(t, err, unix.ENOTTY)
	assert.EqualError(t, err, "kvm: KVM_GET_VCPU_MMAP_SIZE: inappropriate ioctl for device")
}

func TestOpenErrorClassifies(t *testing.T) {
	pathErr := func(errno unix.Errno) error {
		return &fs.PathError{Op: "open", Path: "/dev/kvm", Err: errno}
	}
	tests := []struct {
		name     string
		err      error
		sentinel error // nil: neither ErrNoKVM nor ErrPermission
		hint     string
	}{
		{"missing", pathErr(unix.ENOENT), ErrNoKVM, hintNoKVM},
		{"no driver", pathErr(unix.ENXIO), ErrNoKVM, hintNoKVM},
		{"no device", pathErr(unix.ENODEV), ErrNoKVM, hintNoKVM},
		{"not a kvm device", &IoctlError{Op: "KVM_GET_API_VERSION", Err: unix.ENOTTY}, ErrNoKVM, "is not a KVM device"},
		{"access denied", pathErr(unix.EACCES), ErrPermission, hintPermission},
		{"operation not permitted", pathErr(unix.EPERM), ErrPermission, hintPermission},
		{"other errno", pathErr(unix.EIO), nil, ""},
		{"no errno", errors.New("boom"), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := openError("/dev/kvm", tt.err)
			assert.ErrorIs(t, err, tt.err, "keeps the underlying error")
			if tt.sentinel == nil {
				assert.NotErrorIs(t, err, ErrNoKVM)
				assert.NotErrorIs(t, err, ErrPermission)
				return
			}
			assert.ErrorIs(t, err, tt.sentinel)
			assert.Contains(t, err.Error(), tt.hint)
		})
	}
}

func TestOpenPathMissing(t *testing.T) {
	_, err := OpenPath(filepath.Join(t.TempDir(), "kvm"))
	assert.ErrorIs(t, err, ErrNoKVM)
	assert.ErrorIs(t, err, unix.ENOENT)
	assert.Contains(t, err.Error(), "load the kvm-intel or kvm-amd module")
}

func TestOpenPathNotKVM(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kvm")
	require.NoError(t, os.WriteFile(path, nil, 0o600))

	_, err := OpenPath(path)
	assert.ErrorIs(t, err, ErrNoKVM)
	assert.ErrorIs(t, err, unix.ENOTTY)
}

func TestOpenPathNoPermission(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root bypasses file permissions; TestOpenErrorClassifies covers EACCES")
	}
	path := filepath.Join(t.TempDir(), "kvm")
	require.NoError(t, os.WriteFile(path, nil, 0))

	_, err := OpenPath(path)
	assert.ErrorIs(t, err, ErrPermission)
	assert.ErrorIs(t, err, unix.EACCES)
	assert.Contains(t, err.Error(), "kvm group")
}

func TestDecodeAndMSRErrorMessages(t *testing.T) {
	assert.EqualError(t,
		&DecodeError{Reason: ExitMMIO, Field: "mmio.len", Value: 9, Limit: 8},
		"kvm: decoding MMIO exit: mmio.len = 9 exceeds 8")
	assert.EqualError(t,
		&MSRError{Op: "KVM_SET_MSRS", Index: 0xc0000080, Processed: 1, Requested: 3},
		"kvm: KVM_SET_MSRS: MSR 0xc0000080 rejected (1 of 3 processed)")
}

func TestEINTRRestartsAllButRun(t *testing.T) {
	tests := []struct {
		name      string
		req       request
		wantCalls int
		wantErr   error
	}{
		{"KVM_CREATE_VM restarts", ioctlCreateVM, 3, nil},
		{"KVM_RUN returns EINTR", ioctlRun, 1, unix.EINTR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tempSystem(t)
			defer s.Close()
			calls := 0
			err := s.fd.control(tt.req, func(uintptr) unix.Errno {
				calls++
				if calls < 3 {
					return unix.EINTR
				}
				return 0
			})
			assert.Equal(t, tt.wantCalls, calls)
			if tt.wantErr == nil {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, tt.wantErr)
			}
		})
	}
}
