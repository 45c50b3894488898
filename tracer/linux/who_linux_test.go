package linux

import (
	"strings"
	"testing/iotest"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/correlate"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/render"
	"github.com/porttrace/porttrace/tracer/snapshot"

	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/bpf"
)

func TestOwnerDecoderMatchesCLayout(t *testing.T) {
	var o bpf.OwnersOwner
	if got := int(unsafe.Sizeof(o)); got != ownerSize {
		t.Fatalf("struct owner is %d bytes, decoder expects %d", got, ownerSize)
	}
	offsets := map[string]uintptr{
		"Sock": offOwnerSock, "Inode": offOwnerInode, "Saddr": offOwnerSAddr, "Daddr": offOwnerDAddr,
		"StartNs": offOwnerStart, "CgroupId": offOwnerCgroup, "Pid": offOwnerPID, "Netns": offOwnerNetNS, "Family": offOwnerFamily, "Proto": offOwnerProto,
		"Sport": offOwnerSPort, "Dport": offOwnerDPort, "State": offOwnerState, "V6only": offOwnerV6Only,
		"Fd": offOwnerFD, "Comm": offOwnerComm, "Subflow": offOwnerSubflow,
	}
	checkOffsets(t, reflect.TypeOf(o), offsets)

	o = bpf.OwnersOwner{Sock: 0xffff8881, Inode: 77, StartNs: 5_000_000_000, CgroupId: 9, Pid: 42, Netns: 4026531833, Family: unix.AF_INET6,
		Proto: 262, Sport: 8080, Dport: 0, State: uint8(tracer.StateListen), V6only: 1, Fd: 7, Subflow: 0xffff8882}
	copy(o.Saddr[:], netip.MustParseAddr("::").AsSlice())
	for i, c := range "server" {
		o.Comm[i] = int8(c)
	}
	var buf bytes.Buffer
	binary.Write(&buf, binary.NativeEndian, &o)
	buf.Write(buf.Bytes()) // two records
	got, err := readOwners(iotest.HalfReader(bytes.NewReader(buf.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	want := owner{sock: 0xffff8881, inode: 77, subflow: 0xffff8882, netns: 4026531833, family: tracer.FamilyIPv6, proto: tracer.ProtoMPTCP,
		state: tracer.StateListen, local: netip.MustParseAddrPort("[::]:8080"), peer: netip.MustParseAddrPort("[::]:0"),
		v6only: true, fd: 7, process: tracer.Process{PID: 42, StartNs: 5_000_000_000, Comm: tracer.CommFrom("server"), CgroupID: 9}}
	if len(got) != 2 || got[0] != want || got[1] != want {
		t.Errorf("decoded %+v, want twice %+v", got, want)
	}
}

// FuzzDecodeOwners reads records one byte a read: a record split across
// reads decodes as a whole one.
func FuzzDecodeOwners(f *testing.F) {
	f.Add(make([]byte, ownerSize))
	f.Add(make([]byte, ownerSize+1))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := readOwners(iotest.OneByteReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		if len(got) != len(raw)/ownerSize {
			t.Fatalf("%d records from %d bytes", len(got), len(raw))
		}
		for _, o := range got {
			if (o.family == tracer.FamilyIPv4) != o.local.Addr().Is4() || o.state >= tracer.StateCount {
				t.Fatalf("inconsistent owner %+v", o)
			}
		}
	})
}

// diagMsg builds an inet_diag_msg as the kernel sends it, with queues of
// 3 and 5 bytes, uid 1000, cookie 0xc00c1e.
func diagMsg(family uint8, state tracer.State, local, remote netip.AddrPort, timer uint8, expiresMs, inode uint32, v6only bool) []byte {
	b := make([]byte, inetDiagMsgLen)
	b[0], b[1], b[2] = family, uint8(state), timer
	binary.BigEndian.PutUint16(b[4:], local.Port())
	binary.BigEndian.PutUint16(b[6:], remote.Port())
	copy(b[8:24], local.Addr().AsSlice())
	copy(b[24:40], remote.Addr().AsSlice())
	binary.NativeEndian.PutUint64(b[44:], 0xc00c1e)
	binary.NativeEndian.PutUint32(b[52:], expiresMs)
	binary.NativeEndian.PutUint32(b[56:], 3)
	binary.NativeEndian.PutUint32(b[60:], 5)
	binary.NativeEndian.PutUint32(b[64:], 1000)
	binary.NativeEndian.PutUint32(b[68:], inode)
	if family == unix.AF_INET6 {
		// struct nlattr {len 5, type INET_DIAG_SKV6ONLY}, u8, padded to 8.
		attr := []byte{5, 0, inetDiagSkV6Only, 0, 0, 0, 0, 0}
		if v6only {
			attr[4] = 1
		}
		b = append(b, attr...)
	}
	return b
}

func TestDecodeDiagMsg(t *testing.T) {
	tw := diagMsg(unix.AF_INET, tracer.StateTimeWait, netip.MustParseAddrPort("127.0.0.1:8080"), netip.MustParseAddrPort("127.0.0.1:40000"), 3, 58_200, 0, false)
	s, err := decodeDiagMsg(tw, tracer.ProtoTCP)
	if err != nil {
		t.Fatal(err)
	}
	want := snapshot.PortSocket{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateTimeWait, Local: netip.MustParseAddrPort("127.0.0.1:8080"),
		Remote: netip.MustParseAddrPort("127.0.0.1:40000"), Timer: "timewait", TimerNs: 58_200_000_000, RecvQ: 3, SendQ: 5, UID: 1000}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %+v\nwant %+v", s, want)
	}
	l6 := diagMsg(unix.AF_INET6, tracer.StateListen, netip.MustParseAddrPort("[::]:8080"), netip.MustParseAddrPort("[::]:0"), 0, 0, 991, true)
	s, err = decodeDiagMsg(l6, tracer.ProtoUDP)
	if err != nil || !s.V6Only || s.Inode != 991 || s.Family != tracer.FamilyIPv6 || s.TimerNs != 0 || s.Proto != tracer.ProtoUDP {
		t.Errorf("IPv6 listener: %+v, %v", s, err)
	}
	if _, err := decodeDiagMsg(l6[:inetDiagMsgLen-1], tracer.ProtoTCP); err == nil {
		t.Error("short message accepted")
	}
}

// nlmsg is a netlink message of type typ answering request seq, padded to
// 4 bytes.
func nlmsg(typ uint16, seq uint32, payload []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(payload)+3)
	binary.NativeEndian.PutUint32(b, uint32(unix.NLMSG_HDRLEN+len(payload)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestEachAnswer(t *testing.T) {
	errno := func(e unix.Errno) []byte { return binary.NativeEndian.AppendUint32(nil, uint32(-int32(e))) }
	for _, tc := range []struct {
		name     string
		read     []byte
		payloads []string
		done     bool
		err      error
	}{
		{"two answers, more to come", slices.Concat(nlmsg(20, 7, []byte("a")), nlmsg(20, 7, []byte("bcde"))), []string{"a", "bcde"}, false, nil},
		{"the end", slices.Concat(nlmsg(20, 7, []byte("a")), nlmsg(unix.NLMSG_DONE, 7, make([]byte, 4))), []string{"a"}, true, nil},
		{"an earlier request's answer", slices.Concat(nlmsg(20, 6, []byte("x")), nlmsg(20, 7, []byte("a"))), []string{"a"}, false, nil},
		{"refused", nlmsg(unix.NLMSG_ERROR, 7, errno(unix.ENOENT)), nil, true, unix.ENOENT},
		{"failed part way", nlmsg(unix.NLMSG_DONE, 7, errno(unix.EINTR)), nil, true, unix.EINTR},
		{"cut short", nlmsg(20, 7, []byte("abcdefgh"))[:20], nil, true, errShortDiag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			done, err := eachAnswer(tc.read, 7, func(msg []byte) error {
				got = append(got, string(msg))
				return nil
			})
			if done != tc.done || !errors.Is(err, tc.err) || !slices.Equal(got, tc.payloads) {
				t.Errorf("got %q, done %v, %v; want %q, done %v, %v", got, done, err, tc.payloads, tc.done, tc.err)
			}
		})
	}
}

func FuzzEachAnswer(f *testing.F) {
	f.Add(slices.Concat(nlmsg(20, 1, []byte("abc")), nlmsg(unix.NLMSG_DONE, 1, make([]byte, 4))))
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, _ = eachAnswer(raw, 1, func(msg []byte) error {
			if len(msg) > len(raw) {
				t.Fatalf("a payload longer than the read: %d > %d", len(msg), len(raw))
			}
			return nil
		})
	})
}

func FuzzDecodeDiagMsg(f *testing.F) {
	f.Add(diagMsg(unix.AF_INET6, tracer.StateListen, netip.MustParseAddrPort("[::]:8080"), netip.MustParseAddrPort("[::]:0"), 0, 0, 1, true))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := decodeDiagMsg(raw, tracer.ProtoTCP)
		if err == nil && ((s.Family == tracer.FamilyIPv4) != s.Local.Addr().Is4() || s.State >= tracer.StateCount) {
			t.Fatalf("inconsistent socket %+v", s)
		}
	})
}

func TestKernelWhoListenerStartedBefore(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	pid, _ := startHolder(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), false)

	r, err := Who(port)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Held() {
		t.Fatalf("port %d not held; report %+v", port, r)
	}
	p := r.Processes[pid]
	self, _ := os.Executable()
	if p == nil || p.Exe != self || p.User != "root" || !bytes.Contains([]byte(p.Cmdline), []byte(filepath.Base(self))) {
		t.Fatalf("process %d: %+v, want exe %s, user root", pid, p, self)
	}
	var listeners []snapshot.PortSocket
	for _, s := range r.Sockets {
		if s.State == tracer.StateListen {
			listeners = append(listeners, s)
		}
	}
	// Go listens with MPTCP where the kernel has it: the process holds the
	// MPTCP socket, not its kernel-internal TCP subflow.
	if len(listeners) != 1 || !slices.Equal(listeners[0].PIDs, []uint32{pid}) || listeners[0].Sock == 0 ||
		!strings.HasPrefix(snapshot.Scope(listeners[0].Local.Addr(), false), "127.0.0.1 only: this host") {
		t.Fatalf("listeners: %+v, want one held by %d", listeners, pid)
	}
}

func TestKernelWhoReusePortGroup(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("0.0.0.0", strconv.Itoa(int(port)))
	pid1, _ := startHolder(t, addr, true)
	pid2, _ := startHolder(t, addr, true)
	r, err := Who(port)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint32
	for _, s := range r.Sockets {
		if s.State == tracer.StateListen && s.Proto == tracer.ProtoTCP {
			if !strings.HasPrefix(snapshot.Scope(s.Local.Addr(), s.V6Only), "every IPv4 address") {
				t.Errorf("scope of %v: %s", s.Local, snapshot.Scope(s.Local.Addr(), s.V6Only))
			}
			got = append(got, s.PIDs...)
		}
	}
	slices.Sort(got)
	want := []uint32{min(pid1, pid2), max(pid1, pid2)}
	if !slices.Equal(got, want) {
		t.Fatalf("listener owners %v, want %v", got, want)
	}
}

func TestKernelWhoDualStack(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "::")
	pid, _ := startHolder(t, net.JoinHostPort("::", strconv.Itoa(int(port))), false)
	r, err := Who(port)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range r.Sockets {
		if s.State == tracer.StateListen && slices.Contains(s.PIDs, pid) {
			if got := snapshot.Scope(s.Local.Addr(), s.V6Only); !strings.HasPrefix(got, "every IPv6 address and every IPv4 address") {
				t.Fatalf("scope %q", got)
			}
			return
		}
	}
	t.Fatalf("no listener of %d in %+v", pid, r.Sockets)
}

func TestKernelWhoNobody(t *testing.T) {
	needPrivileges(t)
	r, err := Who(unusedPort(t))
	if err != nil {
		t.Fatal(err)
	}
	if r.Held() || len(r.Sockets) != 0 {
		t.Fatalf("a free port is held: %+v", r)
	}
}

// unusedPort is a port no TCP socket of this network namespace has at
// either end. freePort's is only free to bind: an earlier test's TIME_WAIT
// can still have it as its remote end, which who rightly shows.
func unusedPort(t *testing.T) uint16 {
	t.Helper()
	for range 100 {
		port := freePort(t, "127.0.0.1")
		if !portInProcNet(t, port) {
			return port
		}
	}
	t.Fatal("no port unused at both ends in 100 tries")
	return 0
}

// portInProcNet says whether a socket of /proc/net/tcp or tcp6 has port
// at either end ("0100007F:1F90", the port in hex after the colon).
func portInProcNet(t *testing.T, port uint16) bool {
	t.Helper()
	suffix := fmt.Sprintf(":%04X", port)
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 2 && (strings.HasSuffix(fields[1], suffix) || strings.HasSuffix(fields[2], suffix)) {
				return true
			}
		}
	}
	return false
}

// watchServingAPI runs a watch of port as porttrace does (a source into a
// loop whose index the API serves) until the test ends. It returns who
// for the namespaces given (porttrace's own if none), with the owners the
// watch saw named, as porttrace who asks for them.
func watchServingAPI(t *testing.T, port uint16) (who func(namespaces ...Namespace) *snapshot.PortReport) {
	t.Helper()
	src, err := Open(tracer.Config{Ports: tracer.Ports{port}})
	if err != nil {
		t.Fatal(err)
	}
	loop := correlate.NewLoop()
	runUntilCleanup(t, src, func(ctx context.Context) error { return loop.Run(ctx, src) })
	srv, err := api.Listen(filepath.Join(t.TempDir(), "watch.sock"), api.Backend{Index: loop.Index})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return func(namespaces ...Namespace) *snapshot.PortReport {
		t.Helper()
		if len(namespaces) == 0 {
			current, err := CurrentNamespace()
			if err != nil {
				t.Fatal(err)
			}
			namespaces = []Namespace{current}
		}
		r, err := WhoIn(port, namespaces, proc.NewResolver())
		if err != nil {
			t.Fatal(err)
		}
		answer, err := api.Ask(t.Context(), srv.Path(), port, false)
		if err != nil {
			t.Fatal(err)
		}
		r.NameSeen(api.Seen(answer.Sockets), proc.Identify)
		return r
	}
}

// TestKernelWhoNamesTimeWaitOwner: a watch saw the connection, so who names
// the owner of its TIME_WAIT socket, which no file refers to any more.
func TestKernelWhoNamesTimeWaitOwner(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	who := watchServingAPI(t, port)

	// The server closes first: its side, on the port, goes TIME_WAIT.
	server := startRole(t, "server", addr, serverFirst)
	acceptor := server.childPID(t)
	startRole(t, "client", addr, serverFirst).wait(t)
	server.wait(t)

	deadline := time.Now().Add(10 * time.Second)
	for {
		r := who()
		for _, s := range r.Sockets {
			if s.State == tracer.StateTimeWait && s.Seen != nil {
				// The acceptor has exited since: who must say so rather
				// than offer its pid, which another program may hold now.
				if s.Seen.PID != acceptor || !s.Seen.Exited || s.TimerNs <= 0 || len(s.PIDs) != 0 {
					t.Fatalf("TIME_WAIT socket %+v seen %+v, want owner %d, exited", s, s.Seen, acceptor)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TIME_WAIT socket with a seen owner: %+v", r.Sockets)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kernelBytecode checks and runs inet_diag bytecode as the kernel does
// (inet_diag_bc_audit and inet_diag_bc_run in net/ipv4/inet_diag.c) for
// the port comparisons and JMP porttrace uses: whether a socket with
// these ports is dumped, or an error where the kernel refuses it.
func kernelBytecode(bc []byte, sport, dport uint16) (bool, error) {
	ne := binary.NativeEndian
	yes := func(at int) int { return int(bc[at+1]) }
	no := func(at int) int { return int(ne.Uint16(bc[at+2:])) }
	// valid_cc: cc bytes before the end lies on the chain of yes jumps.
	validCC := func(cc int) bool {
		for at, left := 0, len(bc); left >= 0; {
			if cc > left {
				return false
			}
			if cc == left {
				return true
			}
			if yes(at) < 4 || yes(at)&3 != 0 {
				return false
			}
			left -= yes(at)
			at += yes(at)
		}
		return false
	}
	for at, left := 0, len(bc); left > 0; {
		minLen := 4
		switch bc[at] {
		case inetDiagBCJmp:
		case inetDiagBCSGE, inetDiagBCSLE, inetDiagBCDGE, inetDiagBCDLE:
			minLen = 8
			if left < 8 {
				return false, errors.New("a port comparison without its port")
			}
		default:
			return false, fmt.Errorf("operation %d", bc[at])
		}
		if no(at) < minLen || no(at) > left+4 || no(at)&3 != 0 || no(at) < left && !validCC(left-no(at)) {
			return false, fmt.Errorf("no jump %d at %d", no(at), at)
		}
		if yes(at) < minLen || yes(at) > left+4 || yes(at)&3 != 0 {
			return false, fmt.Errorf("yes jump %d at %d", yes(at), at)
		}
		left -= yes(at)
		at += yes(at)
		if left < 0 {
			return false, errors.New("a yes jump past the end")
		}
	}
	at := 0
	for at < len(bc) {
		var ok bool
		switch port := ne.Uint16(bc[at+6:]); bc[at] {
		case inetDiagBCJmp:
		case inetDiagBCSGE:
			ok = sport >= port
		case inetDiagBCSLE:
			ok = sport <= port
		case inetDiagBCDGE:
			ok = dport >= port
		case inetDiagBCDLE:
			ok = dport <= port
		}
		if ok {
			at += yes(at)
		} else {
			at += no(at)
		}
	}
	return at == len(bc), nil
}

// TestDiagPortFilter: the kernel takes the port filters, and they keep a
// socket if its local end, or for eitherSide either end, is the port.
func TestDiagPortFilter(t *testing.T) {
	for _, tc := range []struct {
		sd           side
		sport, dport uint16
		want         bool
	}{
		{localSide, 8080, 0, true},
		{localSide, 8080, 8080, true},
		{localSide, 8079, 8080, false},
		{localSide, 8081, 80, false},
		{eitherSide, 8080, 0, true},
		{eitherSide, 40000, 8080, true},
		{eitherSide, 8080, 8080, true},
		{eitherSide, 8081, 8079, false},
		{eitherSide, 8079, 8081, false},
		{eitherSide, 80, 443, false},
	} {
		ad, err := netlink.NewAttributeDecoder(portFilter(tc.sd, 8080))
		if err != nil {
			t.Fatal(err)
		}
		var bc []byte
		for ad.Next() {
			if ad.Type() == inetDiagReqBytecode {
				bc = ad.Bytes()
			}
		}
		got, err := kernelBytecode(bc, tc.sport, tc.dport)
		if err != nil || got != tc.want {
			t.Errorf("side %d, ports %d>%d: kept %v, %v; want kept %v", tc.sd, tc.sport, tc.dport, got, err, tc.want)
		}
	}
}

// TestKernelWhoNamesTheCgroup: a listener run in a cgroup of its own is
// reported with that cgroup, path and id, in who's JSON and text.
func TestKernelWhoNamesTheCgroup(t *testing.T) {
	needPrivileges(t)
	dir, id := testCgroup(t, "who")
	port := freePort(t, "127.0.0.1")
	holder := startRoleEnv(t, "hold", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), "", "PORTTRACE_TEST_CGROUP="+dir)
	holder.expect(t, "ready")
	pid := uint32(holder.cmd.Process.Pid)
	r, err := Who(port)
	if err != nil {
		t.Fatal(err)
	}

	var b bytes.Buffer
	if err := render.WhoJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	var report struct {
		Processes []struct {
			PID      uint32 `json:"pid"`
			Cgroup   string `json:"cgroup"`
			CgroupID uint64 `json:"cgroup_id"`
		} `json:"processes"`
	}
	if err := json.Unmarshal(b.Bytes(), &report); err != nil {
		t.Fatal(err)
	}
	path := "/" + filepath.Base(dir)
	if len(report.Processes) != 1 || report.Processes[0].PID != pid || report.Processes[0].Cgroup != path || report.Processes[0].CgroupID != id {
		t.Errorf("who --json: %s\nwant process %d in cgroup %s, id %d", b.Bytes(), pid, path, id)
	}
	b.Reset()
	render.WhoText(&b, r, render.WhoOptions{Now: time.Now()})
	if want := "  cgroup   " + path + " (id " + strconv.FormatUint(id, 10) + ")\n"; !strings.Contains(b.String(), want) {
		t.Errorf("who's text:\n%s\nlacks %q", b.String(), want)
	}
}

// TestKernelSocketsByEnds: a port's connections and TIME_WAIT socket
// looked up by their ends, with its listeners from the listening table, are
// the sockets the walk of every socket finds; a connection that is gone is
// left out (the kernel answers it with the listener). So are its held
// connections looked up with its unheld sockets walked for, where a held
// socket in an unheld state (FIN_WAIT2 after a shutdown), both looked up
// and walked, is listed once.
func TestKernelSocketsByEnds(t *testing.T) {
	needPrivileges(t)
	ns, err := CurrentNamespace()
	if err != nil {
		t.Fatal(err)
	}
	l, port := listenTCP4(t)
	defer l.Close()
	connectTo(t, l) // one connection established
	// A second connection whose server end closes first: TIME_WAIT on
	// the port.
	closed, accepted := connectTo(t, l)
	accepted.Close()
	closed.Close()
	// A third whose client shuts its side down: FIN_WAIT2, still held.
	halfClosed, _ := connectTo(t, l)
	if err := halfClosed.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}

	ends := func(r *snapshot.PortReport) []string {
		var out []string
		for _, s := range r.Sockets {
			if s.Proto == tracer.ProtoTCP {
				out = append(out, fmt.Sprintf("%v %v->%v inode %d", s.State, s.Local, s.Remote, s.Inode))
			}
		}
		slices.Sort(out)
		return out
	}
	var walked *snapshot.PortReport
	var conns, held []snapshot.SocketKey
	deadline := time.Now().Add(10 * time.Second)
	for {
		if walked, err = Sockets(port, ns); err != nil {
			t.Fatal(err)
		}
		conns, held = conns[:0], held[:0]
		timeWait, finWait2 := false, false
		for _, s := range walked.Sockets {
			if s.Proto == tracer.ProtoTCP && s.State != tracer.StateListen {
				conns = append(conns, snapshot.KeyOf(s.NetNS, s.Local, s.Remote))
				if s.State != tracer.StateTimeWait {
					held = append(held, snapshot.KeyOf(s.NetNS, s.Local, s.Remote))
				}
			}
			timeWait = timeWait || s.State == tracer.StateTimeWait
			finWait2 = finWait2 || s.State == tracer.StateFinWait2
		}
		if timeWait && finWait2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TIME_WAIT and FIN_WAIT2 sockets on port %d: %q", port, ends(walked))
		}
		time.Sleep(10 * time.Millisecond)
	}
	gone := snapshot.KeyOf(ns.Inode, netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", port)), netip.MustParseAddrPort("127.0.0.1:1"))
	for _, tc := range []struct {
		conns  []snapshot.SocketKey
		unheld bool
	}{{append(slices.Clone(conns), gone), false}, {append(slices.Clone(held), gone), true}} {
		looked, err := SocketsByEnds(port, ns, tc.conns, tc.unheld)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := ends(looked), ends(walked); !slices.Equal(got, want) {
			t.Errorf("looked up by their ends (unheld walked: %v):\n%s\nwalking every socket:\n%s", tc.unheld, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}
