package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/porttrace/porttrace/cmd/internal/clidoc"
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/render"
	"github.com/porttrace/porttrace/tracer/why"
)

// whyCommand answers "would bind() to ADDR:PORT succeed now, and if not,
// why?": exit status 0 when it would, 1 when it would not, 2 for bad usage.
func whyCommand() *command {
	fs := newFlagSet("porttrace why")
	var req why.Request
	var v6only, asJSON bool
	fs.BoolVar(&req.UDP, "udp", false, "ask about a UDP socket (default TCP)")
	fs.BoolVar(&req.ReuseAddr, "reuseaddr", false, "the socket would set SO_REUSEADDR")
	fs.BoolVar(&req.ReusePort, "reuseport", false, "the socket would set SO_REUSEPORT")
	fs.BoolVar(&v6only, "v6only", false, "an IPv6 socket would set IPV6_V6ONLY (default: the system's)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object (fields in the README)")
	return &command{
		snapshot: true,
		answers:  true,
		doc: &clidoc.Command{
			Name:    "why",
			Args:    "PORT [ADDR]",
			Summary: "say whether bind(ADDR:PORT) would succeed now, and if not, what blocks it",
			Description: `Would bind(ADDR:PORT) succeed now, and if not, which sockets block it, who
holds them and what would unblock them. ADDR defaults to 0.0.0.0. The
verdict comes from a real trial bind of a throwaway socket; the kernel's
rules explain it. Exit status 0 if it would succeed, 1 if not.`,
			Flags: fs,
		},
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) < 1 || len(args) > 2 {
				return usageError("why takes a port and, optionally, an address: porttrace why 8080 127.0.0.1")
			}
			port, err := tracer.ParsePort(args[0])
			if err != nil {
				return usageError("%v", err)
			}
			r := req
			r.Port = port
			if len(args) == 2 {
				if r.Addr, err = netip.ParseAddr(args[1]); err != nil {
					return usageError("invalid address %q: want an IPv4 or IPv6 address such as 127.0.0.1 or ::1", args[1])
				}
			}
			r.UID = uint32(os.Geteuid())
			if r.V6Only, err = v6onlyDefault(fs.Changed("v6only"), v6only); err != nil {
				return err
			}
			verdict, err := judge(ctx, r)
			if err != nil {
				return err
			}
			verdict.Notes = append(verdict.Notes, recentFailedBinds(ctx, port)...)
			if asJSON {
				err = render.WhyJSON(stdout, verdict)
			} else {
				render.WhyText(stdout, verdict)
			}
			if err != nil {
				return err
			}
			if !verdict.Free {
				return exitError{code: 1}
			}
			return nil
		},
	}
}

// recentFailedBinds are the port's failed binds of the last hour that the
// daemon recorded, newest last, as notes; none when no daemon answers.
func recentFailedBinds(ctx context.Context, port uint16) []string {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	now := time.Now()
	res, err := api.History(ctx, daemonSocket(""), port, now.Add(-time.Hour), now)
	if err != nil || len(res.FailedBinds) == 0 {
		return nil
	}
	binds := res.FailedBinds[max(0, len(res.FailedBinds)-maxFailedBinds):]
	note := fmt.Sprintf("%d failed bind(s) of port %d in the last hour (porttrace daemon saw them):", len(res.FailedBinds), port)
	for _, b := range binds {
		note += fmt.Sprintf("\n  %s  %s %d  %s %s:%d  %s", time.Unix(0, b.TimeNs).Format("15:04:05"),
			tracer.Printable(b.By.Comm), b.By.PID, b.Socket.Proto, b.Socket.Addr, b.Socket.Port, tracer.ErrnoName(b.Errno))
	}
	return []string{note}
}

// maxFailedBinds is how many recent failed binds why lists.
const maxFailedBinds = 5
