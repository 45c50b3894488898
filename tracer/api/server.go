package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/porttrace/porttrace/tracer/correlate"
)

// Bounds on what one client can make a server spend.
const (
	// maxHeaderBytes bounds a request's line and headers (net/http adds
	// 4 KiB of slack); no request needs a body.
	maxHeaderBytes = 4 << 10
	// requestTimeout bounds reading a request and writing its answer: a
	// client that connects and says nothing is dropped after it.
	requestTimeout = 2 * time.Second
	idleTimeout    = 5 * time.Second
	// maxConns connections are served at once; more wait in the kernel's
	// backlog, costing the server nothing.
	maxConns = 128
	// shutdownTimeout is how long Close waits for answers under way.
	shutdownTimeout = 200 * time.Millisecond
)

// Server serves the API on a unix socket until Close.
type Server struct {
	path string
	http *http.Server
	done chan struct{}
}

// Listen serves the owners that index publishes on a unix socket at path:
// its directory is created, a stale socket left by a dead server replaced,
// the socket made root's and the group porttrace's, and every connection's
// peer checked. It fails if another live server answers at path.
func Listen(path string, index func() *correlate.Index) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("serving the API on %s: %w", path, err)
	}
	allowed, err := restrict(path)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return serve(ln, path, allowed, index), nil
}

func serve(ln net.Listener, path string, allowed peerRule, index func() *correlate.Index) *Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+ownersPath, func(w http.ResponseWriter, r *http.Request) { owners(w, r, index()) })
	s := &Server{
		path: path,
		done: make(chan struct{}),
		http: &http.Server{
			Handler:           requirePeer(mux),
			ReadHeaderTimeout: requestTimeout,
			ReadTimeout:       requestTimeout,
			WriteTimeout:      requestTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ConnContext:       connPeer,
			// Accept errors (EMFILE) are retried by net/http with a
			// backoff; its log lines would only clutter a watch.
			ErrorLog: log.New(io.Discard, "", 0),
		},
	}
	gl := &guardedListener{Listener: ln, slots: make(chan struct{}, maxConns), closed: make(chan struct{}), allowed: allowed}
	go func() {
		defer close(s.done)
		_ = s.http.Serve(gl)
	}()
	return s
}

// Path is where the server listens.
func (s *Server) Path() string { return s.path }

// Close stops serving, gives answers under way a moment to finish, and
// removes the socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		s.http.Close()
	}
	<-s.done
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", s.path, err)
	}
	return nil
}

func owners(w http.ResponseWriter, r *http.Request, x *correlate.Index) {
	port, err := strconv.ParseUint(r.URL.Query().Get("port"), 10, 16)
	if err != nil || port == 0 {
		writeJSON(w, http.StatusBadRequest, ErrorResponse{Error: "port must be a number from 1 to 65535"})
		return
	}
	resp := OwnersResponse{Port: uint16(port), AtNs: x.AtNs, Sockets: []Socket{}}
	for _, o := range x.ByLocalPort(uint16(port)) {
		resp.Sockets = append(resp.Sockets, Socket{
			Proto: o.Proto.String(), Family: o.Family.String(), State: o.State.String(), TimeWait: o.TimeWait,
			NetNS: o.NetNS, Local: o.Local, Remote: o.Remote, PID: o.Process.PID, Comm: o.Process.Comm.String(),
			Thread: o.Process.Thread.String(), StartNs: o.Process.StartNs, CgroupID: o.Process.CgroupID, OwnerVia: o.Via.String(),
			Exited: o.Exited,
		})
	}
	writeJSON(w, http.StatusOK, resp)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// removeStale removes a socket at path that nobody answers on: the remains
// of a server that was killed before it could clean up.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket: remove it", path)
	}
	c, err := net.DialTimeout("unix", path, shutdownTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("another porttrace already serves %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}

// guardedListener serves at most cap(slots) connections at once and checks
// each one's peer as it is accepted.
type guardedListener struct {
	net.Listener
	slots     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
	allowed   peerRule
}

func (l *guardedListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &guardedConn{Conn: c, slots: l.slots, peerErr: l.allowed.check(c)}, nil
}

func (l *guardedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

type guardedConn struct {
	net.Conn
	slots     chan struct{}
	closeOnce sync.Once
	// peerErr says why the peer may not use the API; nil if it may.
	peerErr error
}

func (c *guardedConn) Write(b []byte) (int, error) { return write(c.Conn, b) }

func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { <-c.slots })
	return err
}

type peerKey struct{}

func connPeer(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*guardedConn); ok && gc.peerErr != nil {
		return context.WithValue(ctx, peerKey{}, gc.peerErr)
	}
	return ctx
}

// requirePeer answers 403 to a peer that may not use the API.
func requirePeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err, ok := r.Context().Value(peerKey{}).(error); ok {
			writeJSON(w, http.StatusForbidden, ErrorResponse{Error: err.Error()})
			return
		}
		next.ServeHTTP(w, r)
	})
}
