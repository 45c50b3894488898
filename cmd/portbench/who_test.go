//go:build linux

package main

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
	"time"

	pt "github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/render"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// What the who commands printed on stdout while two portbench holders,
// pids 27886 and 27887, held port 24777 (Debian 12: iproute2 6.1, lsof
// 4.95, psmisc 23.6).
const (
	ssSample = `State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess                                 
LISTEN 0      4096       127.0.0.1:24777      0.0.0.0:*    users:(("pb-portbench",pid=27886,fd=5))
LISTEN 0      4096       127.0.0.1:24777      0.0.0.0:*    users:(("pb-portbench",pid=27887,fd=5))
`
	lsofSample = `COMMAND     PID USER   FD   TYPE DEVICE SIZE/OFF NODE NAME
pb-portbe 27886 root    5u  IPv4  98971      0t0  TCP localhost:24777 (LISTEN)
pb-portbe 27887 root    5u  IPv4  98969      0t0  TCP localhost:24777 (LISTEN)
`
	// fuser's stdout: "24777/tcp:" and its "Cannot stat" complaints went to
	// stderr.
	fuserSample = " 27886 27887\n"
)

// porttraceWhoSample is porttrace who's report for the same port, written
// by the product's render.WhoText: the holders, their connections (whose
// peers' ports are in the pid range), and a TIME_WAIT socket whose owner,
// seen by a watch, no longer holds it.
func porttraceWhoSample() string {
	lo := netip.MustParseAddr("127.0.0.1")
	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(lo, port) }
	sock := func(state pt.State, remote netip.AddrPort, pids ...uint32) snapshot.PortSocket {
		return snapshot.PortSocket{Proto: pt.ProtoTCP, Family: pt.FamilyIPv4, State: state,
			Local: at(24777), Remote: remote, NetNS: 4026531833, PIDs: pids}
	}
	unspec := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	tw := sock(pt.StateTimeWait, at(46601))
	tw.TimerNs = 41e9
	tw.Seen = &proc.Process{Identity: proc.Identity{PID: 31000}, Name: "curl"}
	holder := func(pid uint32) *proc.Process {
		return &proc.Process{Identity: proc.Identity{PID: pid}, Name: "pb-portbench", User: "root", Exe: "/tmp/pb-portbench",
			Cmdline: "/tmp/pb-portbench hold --port 24777 --conns 5000"}
	}
	r := &snapshot.PortReport{
		Port: 24777,
		Sockets: []snapshot.PortSocket{
			sock(pt.StateListen, unspec, 27886),
			sock(pt.StateEstablished, at(46616), 27886),
			sock(pt.StateEstablished, at(46630), 27886),
			sock(pt.StateListen, unspec, 27887),
			sock(pt.StateEstablished, at(46648), 27887),
			tw,
		},
		Processes: map[uint32]*proc.Process{27886: holder(27886), 27887: holder(27887)},
	}
	var b bytes.Buffer
	render.WhoText(&b, r, render.WhoOptions{Now: time.Now()})
	return b.String()
}

func TestWhoPIDs(t *testing.T) {
	holders := []int{27886, 27887}
	for _, tc := range []struct {
		name   string
		pids   func(string) []int
		stdout string
		want   []int
	}{
		{"ss", ssPIDs, ssSample, holders},
		{"ss, nobody", ssPIDs, "State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess\n", nil},
		{"lsof", lsofPIDs, lsofSample, holders},
		{"lsof, nobody", lsofPIDs, "", nil},
		{"fuser", fuserPIDs, fuserSample, holders},
		{"porttrace who", porttraceWhoPIDs, porttraceWhoSample(), holders},
		{"porttrace who, nobody", porttraceWhoPIDs, "port 24777: no process holds it\n", nil},
		{"porttrace why", porttraceHeldByPIDs, porttraceWhySample, []int{27886}},
		{"porttrace why, free", porttraceHeldByPIDs, "bind(0.0.0.0:24777) over TCP would succeed now (tried)\n", nil},
		{"porttrace free --dry-run", porttraceFreePIDs, porttraceFreeSample, holders},
		{"porttrace free --dry-run, nobody", porttraceFreePIDs, "port 24777: no process holds it\n", nil},
	} {
		if got := tc.pids(tc.stdout); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v; stdout:\n%s", tc.name, got, tc.want, tc.stdout)
		}
	}
}

// TestNamesAny: an answer is right only when it names a holder, not when a
// holder's pid happens to equal a number printed for something else.
func TestNamesAny(t *testing.T) {
	who := porttraceWhoSample()
	for _, tc := range []struct {
		name   string
		named  []int
		holder []int
		want   bool
	}{
		{"both", porttraceWhoPIDs(who), []int{27886, 27887}, true},
		{"one of them", porttraceWhoPIDs(who), []int{27887}, true},
		{"the port", porttraceWhoPIDs(who), []int{24777}, false},
		{"a peer's port", porttraceWhoPIDs(who), []int{46616}, false},
		{"the TIME_WAIT socket's past owner", porttraceWhoPIDs(who), []int{31000}, false},
		{"a number in the cmdline", porttraceWhoPIDs(who), []int{5000}, false},
		{"ss's fd", ssPIDs(ssSample), []int{5}, false},
		{"lsof's device", lsofPIDs(lsofSample), []int{98971}, false},
		{"nothing named", nil, []int{27886}, false},
	} {
		if got := namesAny(tc.named, tc.holder); got != tc.want {
			t.Errorf("%s: namesAny(%v, %v) = %v, want %v", tc.name, tc.named, tc.holder, got, tc.want)
		}
	}
}

// porttraceWhySample and porttraceFreeSample are why's and free --dry-run's
// answers, as porttrace printed them here for a listener held by a
// process and the child it forked.
const (
	porttraceWhySample = `bind(0.0.0.0:24777) over TCP would fail now: EADDRINUSE (tried)

1. a listener on 127.0.0.1:24777 (0.0.0.0 covers 127.0.0.1)
   held by pb-portbench 27886 (user root)
   to unblock: stop the process holding it (porttrace free 24777)
`
	porttraceFreeSample = `port 24777: held by 2 process(es); stopping would end:
  pb-portbench 27886  user root  /tmp/pb-portbench hold --port 24777 --conns 5000
    and the holders it started: pb-portbench 27887
`
)
