package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer/render"
	"github.com/porttrace/porttrace/tracer/why"
)

// whyCmd answers "would bind() to ADDR:PORT succeed now, and if not, why?":
// exit status 0 when it would, 1 when it would not, 2 for bad usage.
func whyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("porttrace why", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: porttrace why PORT [ADDR] [flags]\n\nWould bind(ADDR:PORT) succeed now, and if not, which sockets block it, who holds\nthem and what would unblock them. ADDR defaults to 0.0.0.0. The verdict comes\nfrom a real trial bind; exit status 0 if it would succeed, 1 if not.\n\nFlags:\n%s", fs.FlagUsages())
	}
	var req why.Request
	var v6only bool
	fs.BoolVar(&req.UDP, "udp", false, "ask about a UDP socket (default TCP)")
	fs.BoolVar(&req.ReuseAddr, "reuseaddr", false, "the socket would set SO_REUSEADDR")
	fs.BoolVar(&req.ReusePort, "reuseport", false, "the socket would set SO_REUSEPORT")
	fs.BoolVar(&v6only, "v6only", false, "an IPv6 socket would set IPV6_V6ONLY (default: net.ipv6.bindv6only)")
	asJSON := fs.Bool("json", false, "print one JSON object (fields in the README)")
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return err
		}
		return usageError("%v", err)
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usageError("why takes a port and, optionally, an address: porttrace why 8080 127.0.0.1")
	}
	port, err := parsePort(fs.Arg(0))
	if err != nil {
		return err
	}
	req.Port = port
	if fs.NArg() == 2 {
		if req.Addr, err = netip.ParseAddr(fs.Arg(1)); err != nil {
			return usageError("invalid address %q: want an IPv4 or IPv6 address such as 127.0.0.1 or ::1", fs.Arg(1))
		}
	}
	req.UID = uint32(os.Geteuid())
	if req.V6Only, err = v6onlyDefault(fs.Changed("v6only"), v6only); err != nil {
		return err
	}
	verdict, err := judge(ctx, req)
	if err != nil {
		return err
	}
	if *asJSON {
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
}
