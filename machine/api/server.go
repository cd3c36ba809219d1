package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrSocketInUse is returned by Listen when a server already answers on
// the socket path.
var ErrSocketInUse = errors.New("another server is listening on the socket")

// Server timeouts. Every request is small and answered at once.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 60 * time.Second
	closeTimeout      = 2 * time.Second // for requests in flight at Close
	probeTimeout      = time.Second     // to ask an existing socket if it is alive
	maxSocketPath     = len(unix.RawSockaddrUnix{}.Path) - 1
)

// Server serves the API on a unix socket that only its owner may use.
//
//	s := api.NewServer(vm, log)
//	if err := s.Listen(path); err != nil { ... }
//	go s.Serve(ctx)
//	defer s.Close()
type Server struct {
	log *slog.Logger
	srv *http.Server

	mu      sync.Mutex
	ln      net.Listener
	path    string
	sock    fs.FileInfo // the socket file Listen made, to remove only that
	serving bool
	closed  bool
	closeMu sync.Mutex // held through Close, so a second Close waits for the first
}

// NewServer returns a server for vm; a nil log discards.
func NewServer(vm VM, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		log: log,
		srv: &http.Server{
			Handler:           NewHandler(vm, log),
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}
}

// Listen creates the socket at path with mode 0600. A socket file left by
// a dead server is replaced; a live one, or any other file, is an error.
func (s *Server) Listen(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("api: Listen after Close")
	case s.ln != nil:
		return fmt.Errorf("api: already listening on %s", s.path)
	case path == "":
		return errors.New("api: empty socket path")
	case len(path) > maxSocketPath:
		return fmt.Errorf("api: socket path %q is %d bytes, longer than the %d a unix socket allows", path, len(path), maxSocketPath)
	}
	if err := s.removeStale(path); err != nil {
		return err
	}
	ln, sock, err := listenPrivate(path)
	if err != nil {
		return err
	}
	s.ln, s.path, s.sock = ln, path, sock
	s.log.Info("api listening", "socket", path)
	return nil
}

// removeStale makes way for a new socket at path: nothing there is fine,
// a socket that refuses connections is removed, anything else is kept and
// reported.
func (s *Server) removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("api: %s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("api: %s: %w", path, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("api: %s exists and cannot be probed: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("api: removing stale socket: %w", err)
	}
	s.log.Info("api removed a stale socket", "socket", path)
	return nil
}

// listenPrivate binds a listening unix socket at path that is never
// reachable by others: the socket's mode is set to 0600 before bind, which
// Linux uses (less the umask) for the file it creates, so there is no
// window with the umask's looser mode; a chmod after bind undoes a
// stricter umask. Bind fails if path was created meanwhile.
func listenPrivate(path string) (net.Listener, fs.FileInfo, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("api: socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), path) // owns fd from here on
	defer f.Close()                    // net.FileListener keeps a dup
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return nil, nil, fmt.Errorf("api: fchmod socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, nil, fmt.Errorf("api: bind %s: %w", path, err)
	}
	ln, sock, err := func() (net.Listener, fs.FileInfo, error) {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, nil, fmt.Errorf("api: %w", err)
		}
		sock, err := os.Lstat(path)
		if err != nil {
			return nil, nil, fmt.Errorf("api: %w", err)
		}
		if err := unix.Listen(fd, 64); err != nil {
			return nil, nil, fmt.Errorf("api: listen %s: %w", path, err)
		}
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, nil, fmt.Errorf("api: %w", err)
		}
		return ln, sock, nil
	}()
	if err != nil {
		os.Remove(path)
		return nil, nil, err
	}
	return ln, sock, nil
}

// Path is the socket's path, or "" before Listen.
func (s *Server) Path() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.path
}

// Serve answers requests until ctx is done or Close is called, then
// closes the server; either way it returns nil. Call Listen first.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	ln, serving := s.ln, s.serving
	s.serving = ln != nil
	s.mu.Unlock()
	switch {
	case ln == nil:
		return errors.New("api: Serve before Listen")
	case serving:
		return errors.New("api: Serve called twice")
	}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
		s.Close()
		err = <-errc
	case err = <-errc:
		s.Close()
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("api: %w", err)
}

// Close stops the server, lets requests in flight finish for a moment
// and removes the socket file. It may be called more than once.
func (s *Server) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ln, path, sock := s.ln, s.path, s.sock
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	if ln == nil {
		return err
	}
	ln.Close() // if Serve never ran; otherwise already closed
	// Remove the socket only if it is still ours: a server started after
	// this one gave up may have replaced it.
	if fi, statErr := os.Lstat(path); statErr == nil && os.SameFile(fi, sock) {
		if rmErr := os.Remove(path); rmErr != nil && err == nil {
			err = rmErr
		}
	}
	s.log.Info("api closed", "socket", path)
	if err != nil {
		return fmt.Errorf("api: closing: %w", err)
	}
	return nil
}
