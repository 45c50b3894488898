//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/linux"
)

// holdCommand is the hidden mode in which portbench re-runs itself to hold
// connections open.
const holdCommand = "hold"

// perHolder is the connections one holder process opens. It holds both
// ends of about that many (its own clients, and the share of all holders'
// connections the kernel hands its listener), so about twice as many
// descriptors: well under the 20000 that ulimit -n allows here.
const perHolder = 5000

// runHolder listens on the port with SO_REUSEPORT beside the other
// holders, says "listening", waits for "dial" on stdin, opens its
// connections, says "held", and keeps every socket open until stdin
// closes.
func runHolder(args []string) error {
	fs := pflag.NewFlagSet("portbench hold", pflag.ContinueOnError)
	port := fs.Int("port", 0, "loopback port")
	conns := fs.Int("conns", perHolder, "connections to open")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := raiseFileLimit(); err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(*port))
	l, err := linux.ListenReusePort("tcp4", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	defer l.Close()
	var held heldConns
	defer held.closeAll()
	go held.acceptFrom(l)
	fmt.Println("listening")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for dial: %w", err)
	}
	if err := held.dial(addr, *conns); err != nil {
		return err
	}
	fmt.Println("held")
	_, err = io.Copy(io.Discard, in)
	return err
}

// raiseFileLimit lifts the soft descriptor limit to the hard one: root
// here lacks CAP_SYS_RESOURCE, so the hard limit is the ceiling.
func raiseFileLimit() error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("reading the descriptor limit: %w", err)
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raising the descriptor limit: %w", err)
	}
	return nil
}

// heldConns keeps both ends of the connections open.
type heldConns struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (h *heldConns) keep(c net.Conn) {
	h.mu.Lock()
	h.conns = append(h.conns, c)
	h.mu.Unlock()
}

func (h *heldConns) acceptFrom(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		h.keep(c)
	}
}

// dial opens n connections, a few at a time: more would overflow the
// listeners' accept queues and stall on SYN retransmits.
func (h *heldConns) dial(addr string, n int) error {
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	for range workers {
		wg.Go(func() {
			d := net.Dialer{}
			d.SetMultipathTCP(false)
			for range jobs {
				c, err := d.Dial("tcp4", addr)
				if err != nil {
					errs <- fmt.Errorf("dialing %s: %w", addr, err)
					return
				}
				h.keep(c)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (h *heldConns) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
}

// holders are the holder processes of one measurement.
type holders struct {
	procs []*holderProc
}

type holderProc struct {
	c     *child
	stdin io.WriteCloser
	lines chan string // what it says, one line at a time
}

// holdConnections starts enough holders for total connections on port
// and returns once all of them are open.
func (b *bench) holdConnections(ctx context.Context, port, total int) (*holders, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding portbench's own binary: %w", err)
	}
	h := &holders{}
	for left := total; left > 0; left -= perHolder {
		p, err := startHolder(self, port, min(left, perHolder))
		if err != nil {
			h.release()
			return nil, err
		}
		h.procs = append(h.procs, p)
	}
	// Every listener first, so that the kernel spreads the connections
	// over all of them.
	if err := h.expect(ctx, "listening", 30*time.Second); err != nil {
		h.release()
		return nil, err
	}
	for _, p := range h.procs {
		fmt.Fprintln(p.stdin, "dial")
	}
	if err := h.expect(ctx, "held", 120*time.Second); err != nil {
		h.release()
		return nil, err
	}
	return h, nil
}

func startHolder(self string, port, conns int) (*holderProc, error) {
	cmd := exec.Command(self, holdCommand, "--port", strconv.Itoa(port), "--conns", strconv.Itoa(conns))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("starting a holder: %w", err)
	}
	// A pipe of its own rather than StdoutPipe: the reader below may still
	// be reading when the child's Wait returns.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("starting a holder: %w", err)
	}
	cmd.Stdout = w
	c, err := startChild("holder", cmd)
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	p := &holderProc{c: c, stdin: stdin, lines: make(chan string, 4)}
	go func() {
		defer r.Close()
		s := bufio.NewScanner(r)
		for s.Scan() {
			p.lines <- s.Text()
		}
		close(p.lines)
	}()
	return p, nil
}

// expect waits for every holder to say want.
func (h *holders) expect(ctx context.Context, want string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for _, p := range h.procs {
		select {
		case line, ok := <-p.lines:
			if !ok || line != want {
				<-p.c.done
				return errors.Join(fmt.Errorf("holder said %q, not %q", line, want), p.c.exitError())
			}
		case <-deadline:
			return fmt.Errorf("holders: no %q after %v", want, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (h *holders) pids() []int {
	var pids []int
	for _, p := range h.procs {
		pids = append(pids, p.c.pid())
	}
	return pids
}

// release closes the holders' stdin, on which they close every
// connection and exit; stop covers one that does not.
func (h *holders) release() error {
	var errs []error
	for _, p := range h.procs {
		p.stdin.Close()
	}
	for _, p := range h.procs {
		select {
		case <-p.c.done:
			errs = append(errs, p.c.exitError())
		case <-time.After(stopTimeout):
			errs = append(errs, p.c.stop())
		}
	}
	return errors.Join(errs...)
}
