package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/correlate"
	"github.com/porttrace/porttrace/tracer/history"
	"github.com/porttrace/porttrace/tracer/linux"
	"github.com/porttrace/porttrace/tracer/metrics"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// lossCheckInterval is how often the kernel's loss counters are read: a
// loss is repaired by a fresh snapshot within about this long.
const lossCheckInterval = time.Second

// repairCostShare bounds what repairs cost: a snapshot walks every socket
// and every process's open files (tens of milliseconds on a quiet host,
// more with tens of thousands of sockets), so after one that took d the
// next waits at least d/repairCostShare. A storm that keeps losing events
// (the kernel skips runs under load) then costs at most that share of a
// CPU, and is repaired a little later.
const repairCostShare = 0.05

// Config says what the daemon serves and keeps.
type Config struct {
	// Socket is the API's unix socket.
	Socket string
	// DataDir keeps the history; "" keeps none.
	DataDir string
	// History bounds the history store (zero values: its defaults).
	HistoryMaxAge   time.Duration
	HistoryMaxBytes int64
	// MetricsAddress serves Prometheus metrics on /metrics; "" serves none.
	MetricsAddress string
	// Source is what to trace: every port by default.
	Source tracer.Config
	// Logf receives the daemon's log lines.
	Logf func(format string, args ...any)
}

// daemon is one running service. The loop owns the correlator; everything
// else here reads what the loop publishes or what the kernel says now.
type daemon struct {
	cfg      Config
	src      *linux.LinuxSource
	loop     *correlate.Loop
	store    *history.Store
	resolver *proc.Resolver
	own      linux.Namespace
	sharers  *linux.Sharers
	// answers coalesces who's answers (see who).
	answers singleflight.Group
	unheld  unheldPorts
}

// Run runs the daemon until ctx ends. It stops within a second of that:
// the source is detached, the API and metrics servers closed, the history
// committed.
func Run(ctx context.Context, cfg Config) error {
	d := &daemon{cfg: cfg, resolver: proc.NewResolver()}
	// Another daemon on the socket: said before the start, not after it.
	if err := api.Vacant(cfg.Socket); err != nil {
		return err
	}
	var err error
	if d.own, err = linux.CurrentNamespace(); err != nil {
		return fmt.Errorf("reading the network namespace: %w", err)
	}
	var sinks []tracer.Sink
	if cfg.DataDir != "" {
		d.store, err = history.Open(cfg.DataDir, history.Options{
			MaxAge: cfg.HistoryMaxAge, MaxBytes: cfg.HistoryMaxBytes, Logf: cfg.Logf, Describe: d.describe,
		})
		if err != nil {
			return err
		}
		defer d.store.Close()
		sinks = append(sinks, d.store)
	}
	src, err := linux.Open(cfg.Source)
	if err != nil {
		return err
	}
	defer src.Close()
	d.src = src
	// With a verbose source, the source has logged each hook already.
	if cfg.Source.Logf == nil {
		for _, h := range src.Hooks() {
			cfg.Logf("%s", h)
		}
	}
	if d.sharers, err = linux.LoadSharers(); err != nil {
		return err
	}
	defer d.sharers.Close()
	cfg.Logf("who: iter/task socket_refs finds the sockets held more than once, iter/task held_sockets which processes a fork left holding them")
	var m *metrics.Metrics
	if cfg.MetricsAddress != "" {
		opts := metrics.Options{Index: d.seededIndex, Lost: src.Lost}
		if d.store != nil {
			opts.HistoryDropped = d.store.Dropped
		}
		m = metrics.New(opts)
		sinks = append(sinks, m)
	}
	d.loop = correlate.NewLoop(sinks...)
	if err := d.seed(); err != nil {
		return err
	}
	srv, err := api.Listen(cfg.Socket, api.Backend{Index: d.seededIndex, Who: d.who, History: d.history})
	if err != nil {
		return err
	}
	defer srv.Close()
	if m != nil {
		stop, err := serveMetrics(cfg.MetricsAddress, m.Handler(), cfg.Logf)
		if err != nil {
			return err
		}
		defer stop()
	}
	// Loading the programs and the first snapshot leave garbage a
	// long-running service need not keep until the runtime's scavenger
	// gets to it, minutes later.
	debug.FreeOSMemory()
	cfg.Logf("serving the API on %s", cfg.Socket)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.repairLosses(ctx)
	}()
	err = d.loop.Run(ctx, src)
	wg.Wait()
	if err == nil {
		cfg.Logf("stopped; in all, %s", lostLine(src.Lost(), tracer.Lost{}))
	}
	return err
}

// seed starts the loop from one snapshot of every socket in every network
// namespace.
func (d *daemon) seed() error {
	r, _, err := d.snapshotAll()
	if err != nil {
		return fmt.Errorf("the starting snapshot: %w", err)
	}
	// Dated when it is complete: the loop takes it after every event
	// until then (Correlator.Seed).
	takenNs := time.Now().UnixNano()
	d.loop.Seed(r, takenNs)
	if d.store != nil {
		d.store.AwaitSnapshot(takenNs)
	}
	d.unheld.remember(r)
	d.cfg.Logf("started from %d sockets", len(r.Sockets))
	return nil
}

// seededWait bounds how long an answer waits for the loop to take the
// starting snapshot: a loop held up longer answers with what it has.
const seededWait = 5 * time.Second

// seededIndex is the loop's index, once it holds the starting snapshot:
// the loop takes that only after the events older than it, so the first
// answers (the API's, who's, the metrics'), asked as the daemon starts,
// wait for it.
func (d *daemon) seededIndex() *correlate.Index {
	select {
	case <-d.loop.Seeded():
	default:
		t := time.NewTimer(seededWait)
		defer t.Stop()
		select {
		case <-d.loop.Seeded():
		case <-t.C:
		}
	}
	return d.loop.Index()
}

func (d *daemon) snapshotAll() (*snapshot.PortReport, int64, error) {
	namespaces, err := linux.AllNamespaces()
	if err != nil {
		return nil, 0, err
	}
	at := time.Now().UnixNano()
	r, err := linux.WhoIn(0, namespaces, d.resolver)
	return r, at, err
}

// repairLosses reconciles the loop's table with a fresh snapshot whenever
// the kernel's count of lost events grows, so that a loss never leaves the
// daemon wrong for long.
func (d *daemon) repairLosses(ctx context.Context) {
	t := time.NewTicker(lossCheckInterval)
	defer t.Stop()
	seen := d.src.Lost()
	var next time.Time // no repair before this
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lost := d.src.Lost()
		if lost.Total() == seen.Total() || time.Now().Before(next) {
			continue
		}
		d.cfg.Logf("%s: reconciling with a fresh snapshot", lostLine(lost, seen))
		seen = lost
		start := time.Now()
		r, at, err := d.snapshotAll()
		next = time.Now().Add(time.Duration(float64(time.Since(start)) / repairCostShare))
		if err != nil {
			d.cfg.Logf("reconciling after lost events: %v", err)
			continue
		}
		d.loop.Reseed(r, at)
		d.unheld.remember(r)
	}
}

func lostLine(now, before tracer.Lost) string {
	return fmt.Sprintf("%d events lost (%d ring full, %d runs skipped, %d undecodable)",
		now.Total()-before.Total(), now.Dropped-before.Dropped, now.Skipped-before.Skipped, now.Undecodable-before.Undecodable)
}

// who answers who from the cache: the kernel's sockets on the port now (one
// sock_diag dump, filtered by the kernel) with the owners the loop knows.
// Where the cache cannot name a socket's holder (UDP, or a socket from
// before a loss), it walks every process's files for the port instead.
func (d *daemon) who(ctx context.Context, port uint16, peerPID int32) (*api.WhoResponse, error) {
	ns := d.own
	if peerPID > 0 {
		found, err := linux.ProcessNamespace(int(peerPID), d.own)
		if err != nil {
			return nil, err
		}
		ns = found
	}
	// Clients asking about the same port and namespace at once share one
	// answer: a crowd costs the kernel one walk of its sockets, not one
	// each. The answer is made on a goroutine of its own, so that an asker
	// who gives up is let go at once: reading a process's facts can block
	// (/proc/PID/cmdline waits for the process's memory lock), and each
	// asker waiting for it would hold one of the API's connection slots.
	key := strconv.Itoa(int(port)) + "/" + strconv.FormatUint(uint64(ns.Inode), 10)
	select {
	case res := <-d.answers.DoChan(key, func() (any, error) { return d.answer(port, ns) }):
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*api.WhoResponse), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// answer answers who for port in ns.
func (d *daemon) answer(port uint16, ns linux.Namespace) (*api.WhoResponse, error) {
	x := d.seededIndex()
	if n := connections(x, port, ns.Inode); n > maxLookups {
		return nil, fmt.Errorf("port %d has %d connections: a snapshot answers sooner", port, n)
	}
	owned := ownedByEnds(x, port)
	r, complete, err := d.fromCache(port, ns, owned)
	if err != nil {
		return nil, err
	}
	from := "cache"
	if !complete {
		if r, err = linux.WhoIn(port, []linux.Namespace{ns}, d.resolver); err != nil {
			return nil, err
		}
		r.NameSeen(seenOwners(owned), proc.Identify)
		from = "walk"
	}
	if !r.Held() {
		r.Notes = append(r.Notes, d.lastHolder(port)...)
	}
	return &api.WhoResponse{Report: r, From: from}, nil
}

// lastHolder says who held a free port last and when it let go, from the
// history.
func (d *daemon) lastHolder(port uint16) []string {
	if d.store == nil {
		return nil
	}
	h, ok, err := d.store.LastHolder(port)
	if err != nil || !ok || h.Held() {
		return nil
	}
	return []string{fmt.Sprintf("last held by %s %d (%s %s:%d) until %s (%s)", tracer.Printable(h.Owner.Comm), h.Owner.PID,
		h.Socket.Proto, h.Socket.Addr, h.Socket.Port, time.Unix(0, h.UntilNs).Format("2006-01-02 15:04:05"), h.End)}
}

// connections counts the sockets of the index on both sides of port in
// netns that are not listeners: what the daemon would look up one by one
// (see maxLookups). Counted before anything is copied, a busy port is
// declined at once: indexing its 40,000 sockets first cost 80 ms.
func connections(x *correlate.Index, port uint16, netns uint32) int {
	n := 0
	for o := range x.OnPort(port) {
		if o.NetNS == netns && o.State != tracer.StateListen {
			n++
		}
	}
	return n
}

// ownedByEnds indexes the sockets on both sides of port whose owners the
// loop knows by their ends. The index has TCP sockets only (UDP changes
// no state to trace).
func ownedByEnds(x *correlate.Index, port uint16) map[snapshot.SocketKey][]correlate.Owned {
	owned := map[snapshot.SocketKey][]correlate.Owned{}
	for o := range x.OnPort(port) {
		k := snapshot.KeyOf(o.NetNS, o.Local, o.Remote)
		owned[k] = append(owned[k], *o)
	}
	return owned
}

// seenOwners are the owners the loop saw of connections, for the sockets
// a walk finds no process holding (TIME_WAIT, orphans).
func seenOwners(owned map[snapshot.SocketKey][]correlate.Owned) map[snapshot.SocketKey]proc.Process {
	seen := make(map[snapshot.SocketKey]proc.Process, len(owned))
	for k, entries := range owned {
		if len(entries) == 1 {
			seen[k] = seenProcess(&entries[0])
		}
	}
	return seen
}

func seenProcess(o *correlate.Owned) proc.Process {
	return proc.Process{Identity: proc.Identity{PID: o.Process.PID, StartNs: o.Process.StartNs}, Name: o.Process.Comm.String(), Exited: o.Exited}
}

// fromCache builds who's report from the kernel's sockets and the loop's
// index. Sockets are known by their ends; listeners sharing theirs
// (SO_REUSEPORT) by their inodes. The owner the loop followed may share a
// socket with the children it forked (linux.Sharers finds them). complete
// is false when a socket some process holds has no owner in the index
// that is surely its own, when a holder has exited (the loop has yet to
// learn who holds its sockets now), or when the search for the processes
// sharing the owners' sockets cannot name them all.
func (d *daemon) fromCache(port uint16, ns linux.Namespace, owned map[snapshot.SocketKey][]correlate.Owned) (*snapshot.PortReport, bool, error) {
	r, err := d.portSockets(port, ns, owned)
	if err != nil {
		return nil, false, err
	}
	sharing := map[snapshot.SocketKey]int{}
	for i := range r.Sockets {
		if s := &r.Sockets[i]; s.Proto == tracer.ProtoTCP {
			sharing[snapshot.KeyOf(s.NetNS, s.Local, s.Remote)]++
		}
	}
	r.Processes = map[uint32]*proc.Process{}
	// lookup describes a holder, false once it has exited: the cache is
	// behind.
	lookup := func(id proc.Identity) bool {
		if _, done := r.Processes[id.PID]; done {
			return true
		}
		p, err := d.resolver.Lookup(id)
		if err != nil || p.Exited {
			return false
		}
		r.Processes[id.PID] = &p
		return true
	}
	byOwner := map[proc.Identity][]linux.OwnedSocket{}
	for i := range r.Sockets {
		s := &r.Sockets[i]
		k := snapshot.KeyOf(s.NetNS, s.Local, s.Remote)
		var o correlate.Owned
		ok := s.Proto == tracer.ProtoTCP
		if ok {
			o, ok = ownerOf(owned[k], s, sharing[k] > 1)
		}
		switch {
		case ok && (o.TimeWait || s.Inode == 0):
			seen := seenProcess(&o)
			s.Seen = &seen
		case ok:
			s.Proto = o.Proto // MPTCP, where the socket is a subflow
			s.PIDs = []uint32{o.Process.PID}
			owner := proc.Identity{PID: o.Process.PID, StartNs: o.Process.StartNs}
			if !lookup(owner) {
				return nil, false, nil
			}
			byOwner[owner] = append(byOwner[owner], linux.OwnedSocket{Sock: uint64(o.Sock), Inode: s.Inode})
		case s.Inode != 0:
			return nil, false, nil // held by a process the cache does not know
		}
	}
	// Every holder, with its descriptor: the owner's, and its children's
	// through a fork.
	holding, err := d.sharers.Find(byOwner)
	if errors.Is(err, linux.ErrSearchIncomplete) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	for i := range r.Sockets {
		if s := &r.Sockets[i]; len(holding[s.Inode]) > 0 {
			s.PIDs, s.FDs = nil, nil
			for _, h := range holding[s.Inode] {
				if !lookup(h.Process) {
					return nil, false, nil
				}
				s.PIDs, s.FDs = append(s.PIDs, h.Process.PID), append(s.FDs, h.FD)
			}
		}
	}
	// An owner that closed its descriptor once a child held one holds
	// none of the port's sockets any more.
	held := r.PIDs()
	maps.DeleteFunc(r.Processes, func(pid uint32, _ *proc.Process) bool { return !slices.Contains(held, pid) })
	return r, true, nil
}

// maxLookups is how many connections on a port the daemon looks up one by
// one. Past it, the daemon would walk every TCP socket as who's own
// snapshot does, then send them all, tens of thousands on a busy port,
// as JSON that who must read back: 0.47 s where the snapshot takes 0.12.
// It declines instead, and who takes the snapshot, asking the daemon
// only for the owners of the sockets no process holds.
const maxLookups = 256

// portSockets lists port's sockets in ns. The loop knows the port's TCP
// sockets, so the kernel is asked for each by its ends rather than walking
// every TCP socket on the machine: who about a quiet port costs the same
// beside 40 sockets or 40,000. The loop may not know the port's sockets no
// process held when the daemon last took a snapshot (TIME_WAIT older than
// it): for a port that had some, the kernel walks for those too, until a
// walk finds none it does not know.
func (d *daemon) portSockets(port uint16, ns linux.Namespace, owned map[snapshot.SocketKey][]correlate.Owned) (*snapshot.PortReport, error) {
	// Listeners come from the kernel's listening table.
	known := func(k snapshot.SocketKey) bool {
		return slices.ContainsFunc(owned[k], func(o correlate.Owned) bool { return o.State != tracer.StateListen })
	}
	var conns []snapshot.SocketKey
	for k := range owned {
		if k.NetNS == ns.Inode && known(k) {
			conns = append(conns, k)
		}
	}
	walk := d.unheld.has(ns.Inode, port)
	r, err := linux.SocketsByEnds(port, ns, conns, walk)
	if err != nil {
		return nil, err
	}
	if walk && !slices.ContainsFunc(r.Sockets, func(s snapshot.PortSocket) bool {
		return s.Proto == tracer.ProtoTCP && s.State != tracer.StateListen && !known(snapshot.KeyOf(s.NetNS, s.Local, s.Remote))
	}) {
		d.unheld.forget(ns.Inode, port)
	}
	return r, nil
}

// ownerOf picks socket s's entry among the index's entries with its ends:
// the one with its inode, or, where no other socket has its ends (sharing
// is false), the only one, unless that one names another inode.
func ownerOf(entries []correlate.Owned, s *snapshot.PortSocket, sharing bool) (correlate.Owned, bool) {
	for _, o := range entries {
		if o.Inode != 0 && o.Inode == s.Inode {
			return o, true
		}
	}
	if sharing || len(entries) != 1 {
		return correlate.Owned{}, false
	}
	o := entries[0]
	if o.Inode != 0 && s.Inode != 0 {
		return correlate.Owned{}, false // another socket's entry
	}
	return o, true
}

// history answers history from the store.
func (d *daemon) history(port uint16, since, until time.Time) (*history.Result, error) {
	if d.store == nil {
		return nil, errors.New("this daemon keeps no history (start it with --data-dir)")
	}
	// History commits twice a second: what the loop handed it before the
	// question goes in first, so that a question right after a bind sees
	// it. A disk that hangs in a commit delays the answer by
	// historySyncWait at most, and a history stopped by a full disk
	// answers from what it wrote (its answer counts what it dropped).
	ctx, cancel := context.WithTimeout(context.Background(), historySyncWait)
	_ = d.store.SyncContext(ctx)
	cancel()
	res, err := d.store.Query(port, since, until)
	return &res, err
}

// historySyncWait bounds how long a history question waits for the
// commit of what came before it.
const historySyncWait = time.Second

// describe adds what /proc says of a process to history's facts.
func (d *daemon) describe(p *history.Process) {
	facts, err := d.resolver.Resolve(p.PID)
	if err != nil {
		return
	}
	p.User, p.Exe, p.Cmdline = facts.User, facts.Exe, facts.Cmdline
	if !facts.StartTime.IsZero() {
		p.StartNs = facts.StartTime.UnixNano()
	}
}

// serveMetrics serves h on addr until the returned function is called.
func serveMetrics(addr string, h http.Handler, logf func(string, ...any)) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serving metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf("metrics: %v", err)
		}
	}()
	logf("serving metrics on http://%s/metrics", ln.Addr())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
