package tracer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// A running watch remembers who owned connections that no process holds any
// more (TIME_WAIT). It answers `porttrace who` over a unix socket in
// cacheDir, so that who can name those owners, which ss, lsof and netstat
// cannot.

// cacheTimeout bounds how long who waits for a watch's answer.
const cacheTimeout = 500 * time.Millisecond

// seenSocket is one answer line: a timewait socket and its owner.
type seenSocket struct {
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
	PID    uint32         `json:"pid"`
	Comm   string         `json:"comm"`
}

// ServeCache answers who's questions about port owners from p's correlator
// until ctx ends. Each connection asks one port ("8080\n") and gets one
// JSON line per timewait socket on it.
func ServeCache(ctx context.Context, p *Printer) error {
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", cacheDir, err)
	}
	path := filepath.Join(cacheDir, strconv.Itoa(os.Getpid())+".sock")
	os.Remove(path) // a previous porttrace with this pid crashed
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("serving the owner cache: %w", err)
	}
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	go func() {
		defer os.Remove(path)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go answer(c, p)
		}
	}()
	return nil
}

func answer(c net.Conn, p *Printer) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(cacheTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	port, err := strconv.ParseUint(line[:len(line)-1], 10, 16)
	if err != nil {
		return
	}
	var seen []seenSocket
	p.mu.Lock()
	p.Correlator.timeWaitOwners(uint16(port), func(s *sockState) {
		seen = append(seen, seenSocket{
			Local: netip.AddrPortFrom(s.saddr, s.sport), Remote: netip.AddrPortFrom(s.daddr, s.dport),
			PID: s.pid, Comm: s.comm.String(),
		})
	})
	p.mu.Unlock()
	enc := json.NewEncoder(c)
	for _, s := range seen {
		if enc.Encode(s) != nil {
			return
		}
	}
}

// NameTimeWaitOwners asks the running watches who owned the report's
// sockets that no process holds any more.
func (r *PortReport) NameTimeWaitOwners() {
	r.addSeen(askWatches(r.Port))
}

// askWatches asks every running watch who owned the port's timewait
// sockets, keyed by their two ends. A watch that does not answer in time
// is skipped: who must not hang on it.
func askWatches(port uint16) map[[2]netip.AddrPort]Process {
	seen := map[[2]netip.AddrPort]Process{}
	paths, _ := filepath.Glob(filepath.Join(cacheDir, "*.sock"))
	for _, path := range paths {
		c, err := net.DialTimeout("unix", path, cacheTimeout)
		if err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(cacheTimeout))
		if _, err := fmt.Fprintf(c, "%d\n", port); err == nil {
			dec := json.NewDecoder(c)
			for {
				var s seenSocket
				if err := dec.Decode(&s); err != nil {
					break
				}
				seen[[2]netip.AddrPort{s.Local, s.Remote}] = Process{PID: s.PID, Comm: s.Comm}
			}
		}
		c.Close()
	}
	return seen
}

// addSeen names the owners running watches saw for sockets no process
// holds.
func (r *PortReport) addSeen(seen map[[2]netip.AddrPort]Process) {
	for i := range r.Sockets {
		s := &r.Sockets[i]
		if p, ok := seen[[2]netip.AddrPort{s.Local, s.Remote}]; ok && len(s.PIDs) == 0 && p.PID != 0 {
			s.Seen = &p
		}
	}
}
