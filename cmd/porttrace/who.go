package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/porttrace/porttrace/cmd/internal/clidoc"
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/render"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// whoOptions are who's flags.
type whoOptions struct {
	json, all, pids bool
	netns           string
	allNetNS        bool
	socket          string
	verbose         bool
}

// whoCommand answers "who owns this port?" once and exits: status 0 when a
// process holds every port asked about, 1 when one is free, so scripts can
// test it.
func whoCommand() *command {
	fs := newFlagSet("porttrace who")
	var o whoOptions
	fs.BoolVar(&o.json, "json", false, "print one JSON object per port (fields in the README)")
	fs.BoolVar(&o.all, "all", false, "list every socket on its own line, ungrouped")
	fs.BoolVarP(&o.pids, "pids", "t", false, "print only the pids of the processes holding the port, one per line (as lsof -t), for kill $(...)")
	fs.StringVar(&o.netns, "netns", "", "answer for this network namespace: an ip netns name, a path such as /proc/PID/ns/net, or a pid")
	fs.BoolVar(&o.allNetNS, "all-netns", false, "answer for every network namespace, each socket labelled with its own")
	fs.StringVar(&o.socket, "socket", "", "ask the daemon on this socket first (default: $PORTTRACE_SOCKET, else "+api.DaemonSocket+")")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "say whether the daemon or a snapshot taken now answered")
	return &command{
		doc: &clidoc.Command{
			Name:    "who",
			Args:    "PORT...",
			Summary: "say once who holds PORT and who connects to it, and who owned its TIME_WAIT sockets",
			Description: `Both sides of each PORT (1-65535, a service name, :8080, 8080/tcp or 8080/udp):
what serves on it (listeners, bound and UDP sockets, accepted connections)
and what on this host connects to it, each process with the facts an
operator acts on (parents, unit or container, user, memory, age, command
line, descriptors), and the sockets no process holds any more (TIME_WAIT),
grouped, naming their owner when a running porttrace saw them. It answers
for porttrace's own network namespace unless told otherwise. Exit status 0
when a process holds every PORT, 1 when one is free; the headline then says
whether a bind would still fail.`,
			Flags: fs,
		},
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) == 0 {
				return usageError("who takes one or more ports, e.g. porttrace who 8080")
			}
			if o.netns != "" && o.allNetNS {
				return usageError("--netns and --all-netns exclude each other")
			}
			if o.pids && (o.json || o.all) {
				return usageError("--pids prints only pids: it excludes --json and --all")
			}
			var queries []portQuery
			for _, arg := range args {
				q, err := parsePortQuery(arg)
				if err != nil {
					return usageError("%v", err)
				}
				queries = append(queries, q)
			}
			return who(ctx, queries, o, stdout, stderr)
		},
		snapshot: true,
		answers:  true,
	}
}

// portQuery is a port asked about, with the protocol the asker named
// (8080/udp), 0 for both.
type portQuery struct {
	port  uint16
	proto tracer.Proto
}

// parsePortQuery reads the ways operators name a port: 8080, :8080,
// 8080/tcp, 8080/udp, http.
func parsePortQuery(arg string) (portQuery, error) {
	var q portQuery
	spec := strings.TrimPrefix(arg, ":")
	if p, proto, ok := strings.Cut(spec, "/"); ok {
		switch strings.ToLower(proto) {
		case "tcp":
			q.proto = tracer.ProtoTCP
		case "udp":
			q.proto = tracer.ProtoUDP
		default:
			return q, fmt.Errorf("invalid protocol in %q: want tcp or udp", arg)
		}
		spec = p
	}
	port, err := tracer.ParsePort(spec)
	q.port = port
	return q, err
}

func who(ctx context.Context, queries []portQuery, o whoOptions, stdout, stderr io.Writer) error {
	allHeld := true
	for i, q := range queries {
		report, byDaemon, err := whoReport(ctx, q.port, o, stderr)
		if err != nil {
			return err
		}
		if q.proto != 0 {
			keepProto(report, q.proto)
		}
		if !byDaemon {
			// The daemon named the owners it saw, which traces every
			// port: a watch has nothing to add. Where it declined (a
			// busy port) it still names the sockets no process holds.
			nameSeen(ctx, report, daemonSocket(o.socket))
		}
		switch {
		case o.pids:
			for _, pid := range report.PIDs() {
				if slices.ContainsFunc(report.Sockets, func(s snapshot.PortSocket) bool { return slices.Contains(s.PIDs, pid) && report.Serves(&s) }) {
					fmt.Fprintln(stdout, pid)
				}
			}
		case o.json:
			err = render.WhoJSON(stdout, report)
		default:
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			render.WhoText(stdout, report, render.WhoOptions{All: o.all, Now: time.Now()})
		}
		if err != nil {
			return err
		}
		allHeld = allHeld && report.Held()
	}
	if !allHeld {
		return exitError{code: 1}
	}
	return nil
}

// whoReport asks the daemon, which answers from its cache for the asker's
// network namespace, and takes a snapshot now when none answers (or when
// another namespace is asked about); byDaemon says which answered.
func whoReport(ctx context.Context, port uint16, o whoOptions, stderr io.Writer) (report *snapshot.PortReport, byDaemon bool, err error) {
	if o.netns == "" && !o.allNetNS {
		socket := daemonSocket(o.socket)
		actx, cancel := context.WithTimeout(ctx, daemonTimeout)
		resp, err := api.Who(actx, socket, port)
		cancel()
		if err == nil {
			if o.verbose {
				fmt.Fprintf(stderr, "porttrace: answered by the daemon on %s (from its %s)\n", socket, resp.From)
			}
			return resp.Report, true, nil
		}
		if o.verbose {
			fmt.Fprintf(stderr, "porttrace: the daemon did not answer (%v): taking a snapshot now\n", err)
		}
	}
	report, err = snapshotIn(port, o.netns, o.allNetNS)
	return report, false, err
}

// keepProto drops the sockets of the protocol not asked about (MPTCP counts
// as TCP).
func keepProto(r *snapshot.PortReport, proto tracer.Proto) {
	r.Sockets = slices.DeleteFunc(r.Sockets, func(s snapshot.PortSocket) bool {
		return (s.Proto == tracer.ProtoUDP) != (proto == tracer.ProtoUDP)
	})
}

// askTimeout bounds how long who waits for running porttraces to name the
// owners of sockets no process holds: a stopped or stalled one costs no
// more.
const askTimeout = 300 * time.Millisecond

// daemonTimeout bounds how long who and history wait for the daemon's
// answer before doing without it. Where no daemon runs, its socket
// refuses at once; a running one lists a port's 40,000 sockets in about a
// second on two busy cores, and a daemon that hangs costs no more than
// this.
const daemonTimeout = 5 * time.Second

// nameSeen asks every running porttrace (and the servers at also, the
// daemon's socket where it is not in the API's directory), at once, who
// owned the report's sockets that no process holds any more, and marks
// the owners that have exited since. Where every socket has its holder it
// asks nothing.
func nameSeen(ctx context.Context, report *snapshot.PortReport, also ...string) {
	unheld := false
	for i := range report.Sockets {
		unheld = unheld || !report.Sockets[i].Held()
	}
	if !unheld {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	report.NameSeen(api.Seen(api.AskAll(ctx, report.Port, also...)), identify)
}
