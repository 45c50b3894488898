package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// maxResponseBytes bounds what a client reads of one answer.
const maxResponseBytes = 64 << 20

// AskAll asks every server with a socket in Dir (running watches and the
// daemon), all at once, for the sockets on port whose owners they know,
// and returns what those that answered before ctx ended said. A stopped
// server costs nothing: its socket refuses at once, and is removed.
func AskAll(ctx context.Context, port uint16) []Socket {
	return askAllIn(ctx, Dir, port)
}

func askAllIn(ctx context.Context, dir string, port uint16) []Socket {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
	answers := make(chan []Socket, len(paths))
	for _, path := range paths {
		go func() {
			resp, err := Ask(ctx, path, port)
			if errors.Is(err, syscall.ECONNREFUSED) {
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

// Ask asks the server at path for the owners it knows on port.
func Ask(ctx context.Context, path string, port uint16) (*OwnersResponse, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://porttrace"+ownersPath+"?port="+strconv.Itoa(int(port)), nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking %s: %w", path, err)
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxResponseBytes)
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.NewDecoder(body).Decode(&e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return nil, fmt.Errorf("asking %s: %s", path, e.Error)
	}
	var out OwnersResponse
	if err := json.NewDecoder(body).Decode(&out); err != nil {
		return nil, fmt.Errorf("reading %s's answer: %w", path, err)
	}
	return &out, nil
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
