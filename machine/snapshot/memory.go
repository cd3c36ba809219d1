package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// pageSize is the granularity of the memory file's holes.
const pageSize = 4096

var zeroPage [pageSize]byte

// WriteMemory writes guest RAM, its regions one after another, to a new
// file at path, leaving every all-zero page as a hole: a guest's untouched
// memory and the pages its balloon gave back (which the host dropped, so
// they read as zero) take no disk space, and a restore maps the holes as
// zero pages without reading anything.
func WriteMemory(path string, regions [][]byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("snapshot: memory file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("snapshot: memory file: %w", cerr)
		}
	}()
	var off int64
	for _, r := range regions {
		if len(r)%pageSize != 0 {
			return fmt.Errorf("snapshot: a RAM region of %d bytes is not whole pages", len(r))
		}
		if err := writeSparse(f, r, off); err != nil {
			return err
		}
		off += int64(len(r))
	}
	if err := f.Truncate(off); err != nil {
		return fmt.Errorf("snapshot: memory file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("snapshot: memory file: %w", err)
	}
	return nil
}

// writeSparse writes the runs of non-zero pages of r at base+offset.
func writeSparse(f *os.File, r []byte, base int64) error {
	for i := 0; i < len(r); {
		if bytes.Equal(r[i:i+pageSize], zeroPage[:]) {
			i += pageSize
			continue
		}
		j := i + pageSize
		for j < len(r) && !bytes.Equal(r[j:j+pageSize], zeroPage[:]) {
			j += pageSize
		}
		if _, err := f.WriteAt(r[i:j], base+int64(i)); err != nil {
			return fmt.Errorf("snapshot: memory file: %w", err)
		}
		i = j
	}
	return nil
}

// ErrMemoryFile is wrapped when the memory file does not match the state.
var ErrMemoryFile = errors.New("snapshot memory file does not match the state")

// OpenMemory opens a snapshot's memory file read-only and checks that it
// holds size bytes: a truncated file would fault the guest with SIGBUS on
// its first access past the end.
func OpenMemory(path string, size uint64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("snapshot: memory file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("snapshot: memory file: %w", err)
	}
	if !st.Mode().IsRegular() || uint64(st.Size()) != size {
		f.Close()
		return nil, fmt.Errorf("%w: %s has %d bytes, the guest has %d", ErrMemoryFile, path, st.Size(), size)
	}
	return f, nil
}
