// Command portstorm is porttrace's load generator: a storm of short TCP
// connections on one loopback port, each making exactly 10 TCP state
// transitions (5 per end), so that a tracer's output can be counted
// against what really happened.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "portstorm: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := pflag.NewFlagSet("portstorm", pflag.ContinueOnError)
	port := fs.Uint16("port", 18080, "loopback port to storm")
	conns := fs.Int("conns", 20000, "connections to make")
	workers := fs.Int("workers", 4, "concurrent clients")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *conns < 1 || *workers < 1 || *port == 0 {
		return errors.New("--conns, --workers and --port must be positive")
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(*port)))
	// Plain TCP on both ends, as a C server would have: Go listens with
	// MPTCP by default.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp4", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	var served sync.WaitGroup
	served.Add(*conns)
	go serve(l, &served)

	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *workers)
	start := time.Now()
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{}
			d.SetMultipathTCP(false)
			for next.Add(1) <= int64(*conns) {
				if err := connectOnce(&d, addr); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// The storm is over when the server has closed its end of every
	// connection too: the clients finish first, and closing the listener
	// then would reset the connections it had not yet accepted, whose ends
	// make other transitions than the 10 promised.
	if err := waitServed(&served, serverTimeout); err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Printf("connections=%d seconds=%.3f rate=%.0f transitions=%d\n", *conns, elapsed.Seconds(), float64(*conns)/elapsed.Seconds(), *conns*10)
	return nil
}

// serve accepts and waits for the client's FIN before closing, so the
// client closes first: client CLOSE->SYN_SENT->ESTABLISHED->FIN_WAIT1->
// FIN_WAIT2->TIME_WAIT, server LISTEN->SYN_RECV->ESTABLISHED->CLOSE_WAIT->
// LAST_ACK->CLOSE.
func serve(l net.Listener, served *sync.WaitGroup) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			var buf [1]byte
			c.Read(buf[:])
			c.Close()
			served.Done()
		}()
	}
}

// serverTimeout bounds the wait for the server's last closes.
const serverTimeout = 10 * time.Second

func waitServed(served *sync.WaitGroup, timeout time.Duration) error {
	done := make(chan struct{})
	go func() {
		served.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("the server had not closed every connection %v after the clients", timeout)
	}
}

func connectOnce(d *net.Dialer, addr string) error {
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return err
	}
	return c.Close()
}
