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
	"github.com/porttrace/porttrace/tracer/history"
)

// Bounds on what one client can make a server spend.
const (
	// maxHeaderBytes bounds a request's line and headers (net/http adds
	// 4 KiB of slack); no request needs a body.
	maxHeaderBytes = 4 << 10
	// requestTimeout bounds reading a request: a
	// client that connects and says nothing is dropped after it.
	requestTimeout = 2 * time.Second
	// answerTimeout bounds making and writing an answer, from the end of
	// its request: a reader that stops reading is dropped after it, while
	// a busy machine still gets its answers written.
	answerTimeout = 10 * time.Second
	idleTimeout   = 5 * time.Second
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
func Listen(path string, b Backend) (*Server, error) {
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
	return serve(ln, path, allowed, b), nil
}

// Backend is what a server answers from. Index is required: a watch
// serves only that; the daemon adds Who and History.
type Backend struct {
	// Index returns the event loop's latest published index.
	Index func() *correlate.Index
	// Who answers who for a port in the network namespace of the process
	// peerPID (0: the server's own).
	Who func(ctx context.Context, port uint16, peerPID int32) (*WhoResponse, error)
	// History answers history for a port between two times.
	History func(port uint16, since, until time.Time) (*history.Result, error)
}

func serve(ln net.Listener, path string, allowed peerRule, b Backend) *Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+ownersPath, func(w http.ResponseWriter, r *http.Request) { owners(w, r, b.Index()) })
	if b.Who != nil {
		mux.HandleFunc("GET "+whoPath, func(w http.ResponseWriter, r *http.Request) { who(w, r, b.Who) })
	}
	if b.History != nil {
		mux.HandleFunc("GET "+historyPath, func(w http.ResponseWriter, r *http.Request) { historyOf(w, r, b.History) })
	}
	s := &Server{
		path: path,
		done: make(chan struct{}),
		http: &http.Server{
			Handler:           requirePeer(mux),
			ReadHeaderTimeout: requestTimeout,
			ReadTimeout:       requestTimeout,
			WriteTimeout:      answerTimeout,
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

// portParam reads the request's port, answering 400 when it has none.
func portParam(w http.ResponseWriter, r *http.Request) (uint16, bool) {
	port, err := strconv.ParseUint(r.URL.Query().Get("port"), 10, 16)
	if err != nil || port == 0 {
		writeJSON(w, http.StatusBadRequest, ErrorResponse{Error: "port must be a number from 1 to 65535"})
		return 0, false
	}
	return uint16(port), true
}

func who(w http.ResponseWriter, r *http.Request, answer func(context.Context, uint16, int32) (*WhoResponse, error)) {
	port, ok := portParam(w, r)
	if !ok {
		return
	}
	pid, _ := r.Context().Value(peerPIDKey{}).(int32)
	resp, err := answer(r.Context(), port, pid)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, ErrorResponse{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func historyOf(w http.ResponseWriter, r *http.Request, answer func(uint16, time.Time, time.Time) (*history.Result, error)) {
	port, ok := portParam(w, r)
	if !ok {
		return
	}
	var since, until time.Time
	for name, t := range map[string]*time.Time{"since": &since, "until": &until} {
		if v := r.URL.Query().Get(name); v != "" {
			ns, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, ErrorResponse{Error: name + " must be nanoseconds since the epoch"})
				return
			}
			*t = time.Unix(0, ns)
		}
	}
	resp, err := answer(port, since, until)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, ErrorResponse{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func owners(w http.ResponseWriter, r *http.Request, x *correlate.Index) {
	port, ok := portParam(w, r)
	if !ok {
		return
	}
	unheldOnly := r.URL.Query().Get("unheld") == "1"
	resp := OwnersResponse{Port: port, AtNs: x.AtNs, Sockets: []Socket{}}
	for o := range x.OnPort(port) {
		if unheldOnly && !o.TimeWait && !o.State.MayBeUnheld() {
			continue
		}
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

// Vacant says whether a server could listen at path, removing a dead
// server's socket: it fails, naming why, when another live server answers
// there or path is not a socket. A service checks it before its costly
// start (loading and attaching its programs, the first snapshot); Listen
// checks again.
func Vacant(path string) error { return removeStale(path) }

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
	pid, err := l.allowed.check(c)
	return &guardedConn{Conn: c, slots: l.slots, peerPID: pid, peerErr: err}, nil
}

func (l *guardedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

type guardedConn struct {
	net.Conn
	slots     chan struct{}
	closeOnce sync.Once
	// peerPID is the peer's process (0 where the platform does not say),
	// and peerErr why it may not use the API; nil if it may.
	peerPID int32
	peerErr error
}

func (c *guardedConn) Write(b []byte) (int, error) { return write(c.Conn, b) }

func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { <-c.slots })
	return err
}

type peerKey struct{}

type peerPIDKey struct{}

func connPeer(ctx context.Context, c net.Conn) context.Context {
	gc, ok := c.(*guardedConn)
	if !ok {
		return ctx
	}
	if gc.peerErr != nil {
		ctx = context.WithValue(ctx, peerKey{}, gc.peerErr)
	}
	return context.WithValue(ctx, peerPIDKey{}, gc.peerPID)
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
