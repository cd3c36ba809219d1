package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gvmm-dev/gvmm/machine/unixsock"
)

// ErrSocketInUse is returned by Listen when a server already answers on
// the socket path.
var ErrSocketInUse = unixsock.ErrInUse

// Server timeouts. Every request is small and answered at once.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 60 * time.Second
	closeTimeout      = 2 * time.Second // for requests in flight at Close
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
	}
	removed, err := unixsock.RemoveStale(path)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	if removed {
		s.log.Info("api removed a stale socket", "socket", path)
	}
	ln, sock, err := unixsock.Listen(path)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	s.ln, s.path, s.sock = ln, path, sock
	s.log.Info("api listening", "socket", path)
	return nil
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
	if rmErr := unixsock.Remove(path, sock); rmErr != nil && err == nil {
		err = rmErr
	}
	s.log.Info("api closed", "socket", path)
	if err != nil {
		return fmt.Errorf("api: closing: %w", err)
	}
	return nil
}
