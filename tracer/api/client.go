package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/porttrace/porttrace/tracer/history"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// maxResponseBytes bounds what a client reads of one answer.
const maxResponseBytes = 64 << 20

// AskAll asks every server with a socket in Dir (running watches and the
// daemon), all at once, for the sockets on port no process may hold whose
// owners they know (who names those; a busy port's other sockets, tens of
// thousands, would only cost the asking), and returns what those that
// answered before ctx ended said. A stopped server costs nothing: its
// socket refuses at once, and is removed. also are more servers' sockets
// (the daemon's, where --socket puts it elsewhere), never removed.
func AskAll(ctx context.Context, port uint16, also ...string) []Socket {
	return askAllIn(ctx, Dir, port, also...)
}

func askAllIn(ctx context.Context, dir string, port uint16, also ...string) []Socket {
	found, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
	paths := slices.Clone(found)
	for _, path := range also {
		if !slices.Contains(paths, path) {
			paths = append(paths, path)
		}
	}
	answers := make(chan []Socket, len(paths))
	for _, path := range paths {
		go func() {
			resp, err := Ask(ctx, path, port, true)
			if errors.Is(err, syscall.ECONNREFUSED) && slices.Contains(found, path) {
				_ = os.Remove(path) // nobody serves it: a killed server's remains
			}
			if err != nil {
				answers <- nil
				return
			}
			answers <- resp.Sockets
		}()
	}
	var out []Socket
	for range paths {
		select {
		case s := <-answers:
			out = append(out, s...)
		case <-ctx.Done():
			return out
		}
	}
	return out
}

// Ask asks the server at path for the owners it knows on port; unheldOnly
// keeps those of the sockets no process may hold.
func Ask(ctx context.Context, path string, port uint16, unheldOnly bool) (*OwnersResponse, error) {
	var out OwnersResponse
	target := ownersPath + "?port=" + strconv.Itoa(int(port))
	if unheldOnly {
		target += "&unheld=1"
	}
	if err := get(ctx, path, target, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// get asks the server at path for target and decodes its JSON answer into
// out. It speaks HTTP/1.1 on the connection itself rather than through an
// http.Client, whose transport starts goroutines (and so threads) a
// one-question command has no use for: a who answered by the daemon
// spends its time starting, not asking.
func get(ctx context.Context, path, target string, out any) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("asking %s: %w", path, err)
	}
	defer conn.Close()
	// Ending ctx ends whatever read or write is under way.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://porttrace"+target, nil)
	if err != nil {
		return err
	}
	req.Close = true
	resp, err := roundTrip(conn, req)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("asking %s: %w", path, err)
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxResponseBytes)
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.NewDecoder(body).Decode(&e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return fmt.Errorf("asking %s: %s", path, e.Error)
	}
	if err := json.NewDecoder(body).Decode(out); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("reading %s's answer: %w", path, err)
	}
	return nil
}

func roundTrip(conn net.Conn, req *http.Request) (*http.Response, error) {
	w := bufio.NewWriter(conn)
	if err := req.Write(w); err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	return http.ReadResponse(bufio.NewReader(conn), req)
}

// Seen keys what servers answered by connection, for
// snapshot.PortReport.NameSeen.
func Seen(sockets []Socket) map[snapshot.SocketKey]proc.Process {
	seen := make(map[snapshot.SocketKey]proc.Process, len(sockets))
	for _, s := range sockets {
		seen[snapshot.KeyOf(s.NetNS, s.Local, s.Remote)] = proc.Process{Identity: proc.Identity{PID: s.PID, StartNs: s.StartNs}, Name: s.Comm,
			Cgroup: proc.Cgroup{ID: s.CgroupID}, Exited: s.Exited}
	}
	return seen
}

// Who asks the daemon at path who holds port, in the caller's network
// namespace.
func Who(ctx context.Context, path string, port uint16) (*WhoResponse, error) {
	var out WhoResponse
	if err := get(ctx, path, whoPath+"?port="+strconv.Itoa(int(port)), &out); err != nil {
		return nil, err
	}
	if out.Report == nil {
		return nil, fmt.Errorf("asking %s: an answer without a report", path)
	}
	return &out, nil
}

// History asks the daemon at path who held port between since and until
// (zero times: no bound).
func History(ctx context.Context, path string, port uint16, since, until time.Time) (*history.Result, error) {
	q := "?port=" + strconv.Itoa(int(port))
	if !since.IsZero() {
		q += "&since=" + strconv.FormatInt(since.UnixNano(), 10)
	}
	if !until.IsZero() {
		q += "&until=" + strconv.FormatInt(until.UnixNano(), 10)
	}
	var out history.Result
	if err := get(ctx, path, historyPath+q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
