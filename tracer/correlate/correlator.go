package correlate

import (
	"net/netip"
	"slices"

	"github.com/porttrace/porttrace/tracer"
)

const (
	// holdTimeoutNs bounds how long a socket's lines wait for what would
	// complete them (the accepting process, the local port of a connect).
	holdTimeoutNs = int64(1e9)
	// holdCapacity is how many lines one socket may hold back.
	holdCapacity = 4
	// timeWaitLenNs is TCP_TIMEWAIT_LEN, Linux's fixed TIME_WAIT lifetime.
	timeWaitLenNs = int64(60e9)
	// cancelGraceNs is how long a stopped timewait timer may wait for the
	// re-arm or expiry that would follow at once on the same CPU before
	// the stop counts as the socket being killed early.
	cancelGraceNs = int64(100e6)
	// exitGraceNs is how long after its owner's exit a socket may take to
	// close before porttrace looks for who else holds it: a process's
	// files are closed right after its exit is reported.
	exitGraceNs = int64(100e6)
)

// HoldNs is the longest the correlator holds a line back, and so the
// longest a Window waits for one: a line held longer comes out late.
const HoldNs = holdTimeoutNs

// Timewait reasons of a TIME_WAIT -> CLOSE record.
const (
	ReasonExpired = "expired"
	ReasonKilled  = "killed"
)

// heldLine is a transition held back until its socket's record is complete.
type heldLine struct {
	timeNs     int64
	durationNs int64
	timeoutNs  int64
	// err is the errno of a transition into CLOSE made for an error.
	err      int32
	old, new tracer.State
	typ      tracer.RecordType
}

// sockState is what the correlator knows of one live socket.
type sockState struct {
	id     tracer.SockID
	proto  tracer.Proto
	family tracer.Family
	state  tracer.State
	netns  uint32
	saddr  netip.Addr
	daddr  netip.Addr
	sport  uint16
	dport  uint16
	// inode names the socket in snapshots; 0 unless a snapshot or its
	// listen gave it.
	inode    uint64
	sinceNs  int64 // when it entered state; 0 if unseen
	owner    tracer.Process
	ownerVia tracer.OwnerVia
	// sockCgroup is the socket's own cgroup, the one its lines name
	// while no owner is known.
	sockCgroup uint64
	// parent is the MPTCP socket of a subflow, 0 for plain TCP.
	parent tracer.SockID
	// ownerSlot is the slot of the owner's list the socket is on, plus
	// one (0: on none), between ownerPrev and ownerNext (indexes plus
	// one, 0 at either end).
	ownerSlot, ownerPrev, ownerNext int32
	// ownerExited says the owner has exited. exitNs is when, while
	// porttrace has still to look for the socket's next holder (0 when it
	// has not); asking says the loop is looking.
	ownerExited bool
	exitNs      int64
	asking      bool
	// passive marks a socket born from a listener: its owner is whoever
	// accepts it, which is only known later.
	passive bool
	// role is which end of its connection the socket is: known from its
	// connect or its birth from a listener, or from the snapshot's
	// listeners for a socket older than the trace.
	role tracer.Role
	// handedOver marks a full socket that has handed its connection to a
	// timewait socket: its coming X -> CLOSE is bookkeeping, not news.
	handedOver bool
	// timewait marks a timewait socket.
	timewait bool
	// cancelNs is when a timewait socket's timer was stopped, 0 if armed;
	// endState and endExpiresNs are its substate and timer expiry then.
	cancelNs     int64
	endState     tracer.State
	endExpiresNs int64
	// heldAt is the slot of its held lines in the correlator's heldLines
	// plus one (0: none); nheld how many there are.
	heldAt int32
	nheld  uint8
	heldNs int64 // when the first held line was held
	// places are the socket's keys and positions in the correlator's
	// queues (deadline.go).
	places [queueKinds]queuePlace
}

// tupleKey identifies a connection across the full socket and the timewait
// socket that succeeds it. Plain bytes, without netip.Addr's zone pointer
// or padding, hash in one pass: the maps keyed by it are looked up on
// every connection's opening and closing.
type tupleKey struct {
	saddr, daddr [16]byte
	netns        uint32
	sport, dport uint16
}

// makeTuple keys a connection by its ends, an IPv4 address and its
// IPv4-mapped IPv6 form alike: a dual-stack socket sees its IPv4 peer as
// ::ffff:a.b.c.d, while the peer, if local, is an IPv4 socket. (An IPv6
// zone is left out: the kernel keeps a link-local address's interface
// apart, and two connections of one netns that differ only in it do not
// meet on one host.)
func makeTuple(netns uint32, saddr netip.Addr, sport uint16, daddr netip.Addr, dport uint16) tupleKey {
	return tupleKey{netns: netns, saddr: saddr.As16(), daddr: daddr.As16(), sport: sport, dport: dport}
}

func eventTuple(ev *tracer.Event) tupleKey {
	return makeTuple(ev.NetNS, ev.SAddr, ev.SPort, ev.DAddr, ev.DPort)
}

// portKey identifies a listening port.
type portKey struct {
	netns uint32
	port  uint16
}

// Stats counts what the correlator saw, for the closing summary.
type Stats struct {
	Events      uint64
	Records     uint64
	Opened      uint64 // sockets that reached ESTABLISHED
	Closed      uint64 // connections that closed (into TIME_WAIT or CLOSE)
	Transitions [tracer.StateCount]uint64
	Binds       uint64
	BindErrors  uint64
	// Gaps counts transitions whose old state was not the state porttrace
	// last saw: an event was missed (lost in the kernel, or the socket
	// predates porttrace).
	Gaps uint64
	// Exits counts the processes seen exiting (any process, not only
	// owners); Handovers the sockets that changed hands; HolderErrors the
	// searches for an exited owner's successor that failed.
	Exits        uint64
	Handovers    uint64
	HolderErrors uint64
	// Reconciled counts the fresh snapshots the table was reconciled
	// with after lost events.
	Reconciled uint64
}

// Correlator turns a source's events into owner-attributed records. It
// keeps one entry per live socket and forgets it when the socket closes, so
// its memory follows the number of live sockets, not the traffic.
type Correlator struct {
	emit func(*tracer.Record)

	socks sockTable
	free  []int32
	byID  map[tracer.SockID]int32
	// closing indexes sockets in the states tcp_time_wait() is called from,
	// so that a new timewait socket finds the connection it continues.
	closing   map[tupleKey]int32
	listeners map[portKey][]int32
	// mptcp indexes MPTCP connections by their MPTCP socket: the subflow
	// whose owner the process's own connect or accept named, so that the
	// subflows the kernel adds later (MP_JOIN, opened by a kworker or
	// born from the listener) take that owner.
	mptcp map[tracer.SockID]int32
	// Each owner's list of sockets: ownerHeads[slot] is its first (an
	// index plus one), byOwner the slot of an owner's list, freeSlots
	// those of lists emptied since. A socket knows its list's slot, so
	// that taking it off looks nothing up; lastOwner's slot, lastSlot
	// (-1: none), spares the lookup for the owner met last, which in a
	// storm is nearly always the next.
	byOwner    map[ownerKey]int32
	ownerHeads []int32
	freeSlots  []int32
	lastOwner  ownerKey
	lastSlot   int32
	// findsHolders says the loop can look up who holds a socket; queries
	// are the lookups to make, for the sockets waiting (by id), and asked
	// the sockets of the lookup under way.
	findsHolders bool
	queries      []tracer.HolderQuery
	waiting      []tracer.SockID
	asked        []tracer.SockID
	// queue holds the sockets that wait on a deadline (held lines, a
	// stopped timewait timer), earliest first: the only ones Tick looks at.
	// pending holds those with a line to put out dated in the past, the
	// oldest first.
	queue, pending sockQueue
	// heldLines are the slots of the sockets' held lines, heldFree the
	// unused ones: few sockets hold lines at a time, and a slot in each
	// socket's entry made every entry a third bigger.
	heldLines [][holdCapacity]heldLine
	heldFree  []int32

	// seeds are snapshots waiting for the events older than them (see
	// Seed); seedsAtNs is when the last of them was taken.
	seeds     []waitingSeed
	seedsAtNs int64
	// seedListeners are the waiting snapshots' listeners, by port, until
	// they are taken: a socket first seen mid-life meanwhile (an older
	// connection closing) learns its role from them.
	seedListeners map[portKey][]netip.Addr
	// startTimeWaits are the timewait sockets a snapshot found, by their
	// ends, under the ids they were given (startTimeWaitIDs counts them):
	// the snapshot has no kernel address for them, their first timer
	// event gives it (claimStartTimeWait).
	startTimeWaits   map[tupleKey]tracer.SockID
	startTimeWaitIDs uint64
	// gone are the sockets the events saw end while snapshots waited, by
	// id and by ends: one a snapshot still shows was dumped before it
	// ended (by its ends, where its holder had closed it before the walk
	// of the processes' files could name it).
	gone *goneSockets

	rec   tracer.Record
	stats Stats
	// ownerExits counts the exits of processes that owned sockets: the
	// others (most, on a busy machine) change nothing readers see.
	ownerExits uint64
}

// NewCorrelator returns a correlator that passes each record to emit. The
// record is only valid during the call.
func NewCorrelator(emit func(*tracer.Record)) *Correlator {
	return &Correlator{
		emit:      emit,
		byID:      make(map[tracer.SockID]int32),
		closing:   make(map[tupleKey]int32),
		listeners: make(map[portKey][]int32),
		mptcp:     make(map[tracer.SockID]int32),
		byOwner:   make(map[ownerKey]int32),
		lastSlot:  -1,
		queue:     sockQueue{kind: byDeadline},
		pending:   sockQueue{kind: byPending},
	}
}

// Stats returns the counters so far.
func (c *Correlator) Stats() Stats { return c.stats }

// Live returns how many sockets the correlator is tracking.
func (c *Correlator) Live() int { return len(c.byID) }

// appendIndexed appends to owned every live socket with a known owner,
// timewait sockets included, and to unowned the timewait sockets whose
// owner porttrace never saw (older than the trace): what readers of the
// published index need.
func (c *Correlator) appendIndexed(owned, unowned []Owned) ([]Owned, []Owned) {
	// The table in its own order, not the map's: the map's is a cache
	// miss a socket. A free slot is zeroed (no id).
	for i := range c.socks.len() {
		s := c.socks.at(i)
		if s.id == 0 || s.ownerVia == tracer.OwnerUnknown && !s.timewait {
			continue
		}
		proto, held := s.proto, s.id
		if s.parent != 0 {
			// A subflow: its process holds the MPTCP socket.
			proto, held = tracer.ProtoMPTCP, s.parent
		}
		o := Owned{
			Proto: proto, Family: s.family, State: s.state, SinceNs: s.ageSince(), TimeWait: s.timewait, NetNS: s.netns,
			Local: netip.AddrPortFrom(s.saddr, s.sport), Remote: netip.AddrPortFrom(s.daddr, s.dport), Inode: s.inode,
			Sock: held, Process: s.owner, Via: s.ownerVia, Role: s.role, Exited: s.ownerExited,
		}
		if s.ownerVia == tracer.OwnerUnknown {
			unowned = append(unowned, o)
		} else {
			owned = append(owned, o)
		}
	}
	return owned, unowned
}

// Handle implements Handler.
func (c *Correlator) Handle(ev *tracer.Event) {
	c.seedsDue(ev.TimeNs)
	if ev.Kind == tracer.KindExit {
		// Any process's: counted apart from the sockets' events.
		c.onExit(ev)
		return
	}
	c.stats.Events++
	switch ev.Kind {
	case tracer.KindState:
		c.onState(ev)
	case tracer.KindAccept, tracer.KindConnect:
		c.onOwner(ev)
	case tracer.KindBind:
		c.onBind(ev)
	case tracer.KindTimeWaitStart:
		c.claimStartTimeWait(ev)
		c.onTimeWaitStart(ev)
	case tracer.KindTimeWaitCancel:
		c.claimStartTimeWait(ev)
		if i, ok := c.byID[ev.Sock]; ok && c.socks.at(i).timewait {
			s := c.socks.at(i)
			s.cancelNs, s.endState, s.endExpiresNs = ev.TimeNs, ev.NewState, ev.TimeNs+ev.TimeoutNs
			c.schedule(i)
		}
	case tracer.KindTimeWaitExpire:
		c.claimStartTimeWait(ev)
		if i, ok := c.byID[ev.Sock]; ok && c.socks.at(i).timewait {
			s := c.socks.at(i)
			s.endState, s.endExpiresNs = ev.NewState, ev.TimeNs+ev.TimeoutNs
			c.endTimeWait(i, ev.TimeNs, ReasonExpired)
		} else if c.gone != nil {
			// One a waiting snapshot may list: gone before it is taken.
			c.gone.ends[eventTuple(ev)] = false
		}
	}
}

// Tick implements Handler: it releases held lines, settles stopped
// timewait timers and asks who holds the sockets an exited owner left
// open, once their deadlines have passed. Each step takes a deadline away
// from the earliest socket, so the loop ends. It returns the earliest
// deadline still ahead.
func (c *Correlator) Tick(nowNs int64) int64 {
	c.seedsDue(nowNs)
	if len(c.seeds) > 0 {
		return c.seedsAtNs + 1
	}
	for {
		i, ok := c.queue.first()
		if !ok {
			return tracer.NoDeadline
		}
		if d := c.socks.at(i).places[byDeadline].key; d > nowNs {
			return d
		}
		s := c.socks.at(i)
		if s.cancelNs != 0 && nowNs-s.cancelNs >= cancelGraceNs {
			c.endTimeWait(i, s.cancelNs, ReasonKilled)
			continue
		}
		if s.exitNs != 0 && nowNs-s.exitNs >= exitGraceNs {
			s.exitNs = 0
			c.askHolders(i)
			c.schedule(i)
			continue
		}
		c.release(i)
	}
}

// Flush releases everything held, as at the end of a trace. Stopped
// timewait timers are left unsettled: nothing says yet how they end.
func (c *Correlator) Flush() {
	if len(c.seeds) > 0 {
		c.takeSeeds()
	}
	for _, i := range slices.Clone(c.queue.socks) {
		c.release(i)
	}
}

func (c *Correlator) lookup(ev *tracer.Event) (int32, bool) {
	if i, ok := c.byID[ev.Sock]; ok {
		return i, false
	}
	return c.insert(ev), true
}

// insert starts the table's entry for ev's socket, which it has none of.
func (c *Correlator) insert(ev *tracer.Event) int32 {
	var i int32
	if n := len(c.free); n > 0 {
		i = c.free[n-1]
		c.free = c.free[:n-1]
	} else {
		i = c.socks.add()
	}
	*c.socks.at(i) = sockState{id: ev.Sock, proto: ev.Proto}
	c.byID[ev.Sock] = i
	return i
}

func (c *Correlator) forget(i int32) {
	s := c.socks.at(i)
	if j, ok := c.mptcp[s.parent]; ok && j == i {
		delete(c.mptcp, s.parent)
	}
	c.unlink(i)
	c.leaveState(i)
	c.unschedule(i)
	delete(c.byID, s.id)
	if c.gone != nil {
		c.gone.ids[s.id], c.gone.ends[s.tuple()] = true, false
	}
	c.freeHeld(i)
	*s = sockState{}
	c.free = append(c.free, i)
}

// learn copies what the event says of the socket: its addresses, which
// fill in over a socket's life (a connect gets its local port after
// SYN_SENT), and where the event has them its cgroup and its MPTCP socket
// (a passive subflow names the listener's until its connection has one).
func (s *sockState) learn(ev *tracer.Event) {
	s.family, s.netns = ev.Family, ev.NetNS
	s.saddr, s.sport = ev.SAddr, ev.SPort
	s.daddr, s.dport = ev.DAddr, ev.DPort
	if ev.SockCgroupID != 0 {
		s.sockCgroup = ev.SockCgroupID
	}
	if ev.Inode != 0 {
		s.inode = ev.Inode
	}
	if ev.Parent != 0 {
		s.parent = ev.Parent
	}
}

// setOwner makes the event's process socket i's owner. A subflow whose
// owner connected or accepted stands for its MPTCP connection.
func (c *Correlator) setOwner(i int32, ev *tracer.Event, via tracer.OwnerVia) {
	c.assignOwner(i, ev.Process, via, false)
	s := c.socks.at(i)
	if s.parent != 0 && (via == tracer.OwnerConnect || via == tracer.OwnerAccept) {
		if _, ok := c.mptcp[s.parent]; !ok {
			c.mptcp[s.parent] = i
		}
	}
}

// joinConnection gives a subflow with no owner its MPTCP connection's.
func (c *Correlator) joinConnection(i int32) {
	s := c.socks.at(i)
	if s.parent == 0 || s.ownerVia != tracer.OwnerUnknown {
		return
	}
	if j, ok := c.mptcp[s.parent]; ok && j != i {
		c.assignOwner(i, c.socks.at(j).owner, tracer.OwnerMPTCP, c.socks.at(j).ownerExited)
	}
}

// complete says whether the socket's lines can be printed as they are.
func (s *sockState) complete() bool {
	if s.passive && s.ownerVia == tracer.OwnerUnknown {
		return false
	}
	return !(s.state == tracer.StateSynSent && s.sport == 0)
}

// ageSince is when the socket entered its state as the index tells it:
// for a timewait socket found in TIME_WAIT at the start, when its timer
// was armed (TIME_WAIT lasts a fixed time, so its expiry dates it); else
// sinceNs.
func (s *sockState) ageSince() int64 {
	if s.sinceNs == 0 && s.timewait && s.state == tracer.StateTimeWait && s.endState == tracer.StateTimeWait && s.cancelNs == 0 {
		return s.endExpiresNs - timeWaitLenNs
	}
	return s.sinceNs
}

// durationUntil is the time from entering the current state to timeNs, or -1
// when porttrace did not see the socket enter it.
func (s *sockState) durationUntil(timeNs int64) int64 {
	if s.sinceNs == 0 {
		return -1
	}
	return timeNs - s.sinceNs
}

func (s *sockState) tuple() tupleKey {
	return makeTuple(s.netns, s.saddr, s.sport, s.daddr, s.dport)
}

// processContext reports whether the kernel makes this transition only in
// the context of a process acting on the socket (connect, listen, close,
// shutdown), so that the event's PID is an owner rather than a bystander
// interrupted by a softirq. The Linux programs (process_context in
// bpf/porttrace.bpf.c) name the process of these changes alone.
func processContext(old, new tracer.State) bool {
	return new == tracer.StateSynSent || new == tracer.StateListen || closing(old, new)
}

// closing reports whether the kernel makes this transition only when a
// process closes or shuts down the socket, which it holds then.
func closing(old, new tracer.State) bool {
	switch {
	case new == tracer.StateClose && old == tracer.StateListen:
		return true
	case new == tracer.StateFinWait1 && (old == tracer.StateEstablished || old == tracer.StateSynRecv):
		return true
	case new == tracer.StateLastAck && old == tracer.StateCloseWait:
		return true
	}
	return false
}

// reused reports whether the kernel has reused a known socket's address for
// a new socket: a timewait socket's address coming back as a full socket's
// or a new timewait socket's with other ends, or a socket being born again
// (events of the old one's end were lost).
func (s *sockState) reused(ev *tracer.Event) bool {
	switch {
	case ev.Kind == tracer.KindTimeWaitStart:
		return !s.timewait || s.tuple() != eventTuple(ev)
	case s.timewait:
		return true
	case ev.Kind == tracer.KindState && ev.OldState == tracer.StateClose:
		return s.state != tracer.StateClose
	}
	return false
}

// lookupLife is lookup for an event that may start a new life at a reused
// address (newLife says the caller knows it does): the old life is ended
// first.
func (c *Correlator) lookupLife(ev *tracer.Event, newLife bool) (int32, bool) {
	// One lookup, not two, on the way every event takes: in a table of
	// every socket a storm left in TIME_WAIT, each is a cache miss or two.
	i, ok := c.byID[ev.Sock]
	switch {
	case !ok:
		return c.insert(ev), true
	case !newLife && !c.socks.at(i).reused(ev):
		return i, false
	}
	c.endReused(i, ev.TimeNs)
	return c.lookup(ev)
}

// endReused ends socket i, whose memory an event at timeNs names as
// another socket's: it was freed, its end unseen. A timewait socket was
// killed when its timer was stopped, or then if that went unseen.
func (c *Correlator) endReused(i int32, timeNs int64) {
	s := c.socks.at(i)
	if !s.timewait {
		c.release(i)
		c.forget(i)
		return
	}
	end := timeNs
	if s.cancelNs != 0 {
		end = s.cancelNs
	}
	c.endTimeWait(i, end, ReasonKilled)
}

func (c *Correlator) onState(ev *tracer.Event) {
	i, fresh := c.lookupLife(ev, false)
	s := c.socks.at(i)
	if fresh && (ev.OldState == tracer.StateListen || ev.OldState == tracer.StateSynRecv) && ev.NewState != tracer.StateClose {
		s.passive, s.role = true, tracer.RoleServer
	}
	if ev.NewState == tracer.StateSynSent {
		s.role = tracer.RoleClient
	}
	if s.handedOver && ev.NewState == tracer.StateClose {
		c.forget(i)
		return
	}
	// Another process closing a socket with a known owner holds it: it
	// was inherited (fork), or passed on (SCM_RIGHTS), since.
	if !fresh && !ev.KernelThread && s.ownerVia != tracer.OwnerUnknown && closing(ev.OldState, ev.NewState) && !s.owner.Same(&ev.Process) {
		c.handOver(i, ev.Process, tracer.OwnerClose, ev.TimeNs)
	}

	duration := int64(-1)
	switch {
	case fresh:
	case s.state == ev.OldState:
		duration = s.durationUntil(ev.TimeNs)
	default:
		c.stats.Gaps++
	}
	// A move between the states the closing index keeps, under the same
	// ends, leaves the index as it is: every connection's FIN_WAIT1 ->
	// FIN_WAIT2 would delete and insert its 40-byte key.
	keep := closingIndexed(s.state) && closingIndexed(ev.NewState) && s.tuple() == eventTuple(ev)
	if !keep {
		c.leaveState(i)
	}
	s.learn(ev)
	if fresh && s.role == tracer.RoleUnknown {
		s.role = c.roleByListeners(s)
	}
	s.state, s.sinceNs = ev.NewState, ev.TimeNs
	if !keep {
		c.enterState(i)
	}
	if ev.NewState == tracer.StateEstablished {
		c.stats.Opened++
	}

	switch {
	case ev.KernelThread:
		// A kernel thread acts on sockets it does not own (a kworker
		// closing an MPTCP subflow for its process).
	case ev.NewState == tracer.StateSynSent:
		c.setOwner(i, ev, tracer.OwnerConnect)
	case ev.NewState == tracer.StateListen:
		c.setOwner(i, ev, tracer.OwnerListen)
	case s.ownerVia == tracer.OwnerUnknown && processContext(ev.OldState, ev.NewState):
		c.setOwner(i, ev, tracer.OwnerClose)
	case processContext(ev.OldState, ev.NewState) && s.owner.Same(&ev.Process):
		// Of the owner's threads, the one that acts last is named: the
		// one that closes, say, rather than the one that accepted.
		s.owner.Thread = ev.Thread
	}
	c.joinConnection(i)

	typ := tracer.RecordState
	if ev.NewState == tracer.StateListen {
		typ = tracer.RecordListen
	}
	c.line(i, heldLine{timeNs: ev.TimeNs, durationNs: duration, err: -ev.Err, old: ev.OldState, new: ev.NewState, typ: typ})
	if ev.NewState == tracer.StateClose {
		c.release(i)
		key := s.tuple()
		c.forget(i)
		if c.gone != nil && (ev.OldState == tracer.StateFinWait2 || ev.OldState == tracer.StateClosing) {
			c.gone.ends[key] = true
		}
	}
	if ev.OldState == tracer.StateLastAck && ev.NewState == tracer.StateClose {
		c.peerAcked(ev)
	}
}

// peerAcked: a local socket's LAST_ACK -> CLOSE means its FIN was acked. If
// the peer is a local orphan in the timewait FIN_WAIT2 substate, that FIN
// made it TIME_WAIT: the kernel re-arms its timer in a way the timer
// tracepoints often do not show, so this is the moment to tell.
func (c *Correlator) peerAcked(ev *tracer.Event) {
	peer := makeTuple(ev.NetNS, ev.DAddr, ev.DPort, ev.SAddr, ev.SPort)
	if i, ok := c.closing[peer]; ok && c.socks.at(i).timewait {
		c.enterTimeWait(i, ev.TimeNs)
	}
}

// enterTimeWait moves a timewait socket from the FIN_WAIT2 substate to
// TIME_WAIT at timeNs.
func (c *Correlator) enterTimeWait(i int32, timeNs int64) {
	s := c.socks.at(i)
	duration := s.durationUntil(timeNs)
	c.leaveState(i)
	s.state, s.sinceNs = tracer.StateTimeWait, timeNs
	c.enterState(i)
	c.line(i, heldLine{timeNs: timeNs, durationNs: duration, timeoutNs: timeWaitLenNs, old: tracer.StateFinWait2, new: tracer.StateTimeWait, typ: tracer.RecordState})
}

// leaveState and enterState keep the indexes that depend on a socket's
// state in step with it.
func (c *Correlator) leaveState(i int32) {
	s := c.socks.at(i)
	switch {
	case closingIndexed(s.state):
		delete(c.closing, s.tuple())
	case s.state == tracer.StateListen:
		key := portKey{s.netns, s.sport}
		l := c.listeners[key]
		for j, k := range l {
			if k == i {
				l = append(l[:j], l[j+1:]...)
				break
			}
		}
		// An emptied slice stays, so that the port's next listen() does
		// not allocate; ports are bounded, so is this.
		c.listeners[key] = l
	}
}

func (c *Correlator) enterState(i int32) {
	s := c.socks.at(i)
	switch {
	case closingIndexed(s.state):
		c.closing[s.tuple()] = i
	case s.state == tracer.StateListen:
		key := portKey{s.netns, s.sport}
		c.listeners[key] = append(c.listeners[key], i)
	}
}

// closingIndexed says whether the closing index keeps a socket in state
// st: one that closed first and may hand its connection to a timewait
// socket.
func closingIndexed(st tracer.State) bool {
	return st == tracer.StateFinWait1 || st == tracer.StateFinWait2 || st == tracer.StateClosing
}

// onOwner records the process that accepted or connected a socket, and
// releases the lines that were waiting for it.
func (c *Correlator) onOwner(ev *tracer.Event) {
	i, fresh := c.lookup(ev)
	s := c.socks.at(i)
	s.learn(ev)
	if ev.Kind == tracer.KindAccept {
		// What accept returned is what the process holds: an MPTCP
		// connection, or a plain TCP one (an MPTCP listener's, from a
		// client without MPTCP), whatever its birth from the
		// listener's subflow named.
		s.parent = ev.Parent
	}
	if fresh {
		s.state = ev.NewState
	}
	via := tracer.OwnerAccept
	if ev.Kind == tracer.KindConnect {
		via = tracer.OwnerConnect
	}
	if !ev.KernelThread {
		c.setOwner(i, ev, via)
	}
	if s.complete() {
		c.release(i)
	}
}

func (c *Correlator) onBind(ev *tracer.Event) {
	if ev.Process.Thread == tracer.TrialBindThread {
		return // porttrace's own trial (why, free)
	}
	c.stats.Binds++
	if ev.Err != 0 {
		c.stats.BindErrors++
	}
	r := &c.rec
	*r = tracer.Record{
		TimeNs: ev.TimeNs, Type: tracer.RecordBind, Proto: ev.Proto, Family: ev.Family,
		SAddr: ev.SAddr, SPort: ev.SPort, Process: ev.Process, OwnerVia: tracer.OwnerBind,
		NetNS: ev.NetNS, DurationNs: -1, Err: -ev.Err,
	}
	c.output(r)
}

// onTimeWaitStart follows a connection into its timewait socket: either a
// new one, continuing the full socket with the same 4-tuple, or a known one
// re-armed (an orphan's FIN_WAIT2 turned TIME_WAIT by the peer's FIN).
func (c *Correlator) onTimeWaitStart(ev *tracer.Event) {
	key := eventTuple(ev)
	// A full socket closing with this 4-tuple means a new timewait socket,
	// even at the address of an old one with the same ends (the kernel
	// kills a timewait socket to reuse its 4-tuple).
	full, hasFull := c.closing[key]
	hasFull = hasFull && !c.socks.at(full).timewait
	if i, ok := c.byID[ev.Sock]; ok && !hasFull && !c.socks.at(i).reused(ev) {
		s := c.socks.at(i)
		s.cancelNs = 0
		c.schedule(i)
		if s.state == tracer.StateFinWait2 && ev.NewState == tracer.StateTimeWait {
			c.enterTimeWait(i, ev.TimeNs)
		}
		return
	}

	tw, _ := c.lookupLife(ev, hasFull)
	t := c.socks.at(tw)
	t.learn(ev)
	t.timewait = true
	old, sinceNs := tracer.StateUnknown, int64(0)
	if hasFull {
		f := c.socks.at(full)
		old, sinceNs = f.state, f.sinceNs
		c.assignOwner(tw, f.owner, f.ownerVia, f.ownerExited)
		t.passive, t.role, t.sockCgroup = f.passive, f.role, f.sockCgroup
		c.freeHeld(tw)
		t.heldAt, t.nheld, t.heldNs = f.heldAt, f.nheld, f.heldNs
		c.schedule(tw)
		c.leaveState(full)
		f.state, f.handedOver, f.heldAt, f.nheld = tracer.StateClose, true, 0, 0
		c.schedule(full)
	} else {
		c.stats.Gaps++
	}
	c.stats.Closed++
	if old == ev.NewState {
		// An orphan closed in FIN_WAIT2 stays FIN_WAIT2: no transition.
		t.state, t.sinceNs = old, sinceNs
		c.enterState(tw)
		return
	}
	t.sinceNs = sinceNs
	duration := t.durationUntil(ev.TimeNs)
	if old == tracer.StateFinWait1 && ev.NewState == tracer.StateTimeWait {
		// The kernel reaches TIME_WAIT only through FIN_WAIT2 or
		// CLOSING: that state change was missed (a run the kernel
		// skipped), and no duration spans it.
		c.stats.Gaps++
		duration = -1
	}
	t.state, t.sinceNs = ev.NewState, ev.TimeNs
	c.enterState(tw)
	c.line(tw, heldLine{timeNs: ev.TimeNs, durationNs: duration, timeoutNs: ev.TimeoutNs, old: old, new: ev.NewState, typ: tracer.RecordState})
}

// endTimeWait closes a timewait socket. If it ends in TIME_WAIT while
// porttrace still has it in FIN_WAIT2, the move happened unseen: its timer
// was re-armed to TIME_WAIT's fixed lifetime then, so the expiry dates it.
func (c *Correlator) endTimeWait(i int32, timeNs int64, reason string) {
	s := c.socks.at(i)
	if s.state == tracer.StateFinWait2 && s.endState == tracer.StateTimeWait {
		c.enterTimeWait(i, max(s.endExpiresNs-timeWaitLenNs, s.sinceNs))
	}
	c.release(i)
	c.stats.Transitions[tracer.StateClose]++
	r := c.record(s, heldLine{timeNs: timeNs, durationNs: s.durationUntil(timeNs), old: s.state, new: tracer.StateClose, typ: tracer.RecordState})
	r.Reason = reason
	c.output(r)
	c.forget(i)
}

// line prints a transition of socket i, or holds it while the socket's
// record is incomplete.
func (c *Correlator) line(i int32, l heldLine) {
	s := c.socks.at(i)
	c.stats.Transitions[l.new]++
	if l.new == tracer.StateClose && l.old != tracer.StateListen && l.old != tracer.StateSynSent && l.old != tracer.StateTimeWait {
		c.stats.Closed++
	}
	// While a snapshot waits, every line waits with it: it may name the
	// socket's owner and role.
	if s.complete() && len(c.seeds) == 0 {
		c.release(i)
		c.output(c.record(s, l))
		return
	}
	if s.nheld == holdCapacity {
		c.release(i)
	}
	if s.nheld == 0 {
		s.heldNs = l.timeNs
	}
	if s.heldAt == 0 {
		if n := len(c.heldFree); n > 0 {
			s.heldAt, c.heldFree = c.heldFree[n-1]+1, c.heldFree[:n-1]
		} else {
			c.heldLines = append(c.heldLines, [holdCapacity]heldLine{})
			s.heldAt = int32(len(c.heldLines))
		}
	}
	c.heldLines[s.heldAt-1][s.nheld] = l
	s.nheld++
	c.schedule(i)
}

// freeHeld gives back socket i's slot of held lines.
func (c *Correlator) freeHeld(i int32) {
	s := c.socks.at(i)
	if s.heldAt != 0 {
		c.heldFree = append(c.heldFree, s.heldAt-1)
		s.heldAt, s.nheld = 0, 0
	}
}

// release prints a socket's held lines with the best owner known now:
// where nobody accepted a passive socket, the listener's owner.
func (c *Correlator) release(i int32) {
	s := c.socks.at(i)
	if s.nheld == 0 {
		return
	}
	if s.passive && s.ownerVia == tracer.OwnerUnknown {
		if l, ok := c.listenerOf(s); ok {
			c.assignOwner(i, l.owner, tracer.OwnerListener, l.ownerExited)
		}
	}
	for _, l := range c.heldLines[s.heldAt-1][:s.nheld] {
		c.output(c.record(s, l))
	}
	c.freeHeld(i)
	c.schedule(i)
}

// listenerOf finds the listener a passive socket arrived on.
func (c *Correlator) listenerOf(s *sockState) (*sockState, bool) {
	return c.listenerAt(s.netns, s.sport, s.saddr)
}

// listenerAt finds the listener that takes connections to addr and port
// in namespace netns: one bound to addr, else a wildcard one.
func (c *Correlator) listenerAt(netns uint32, port uint16, addr netip.Addr) (*sockState, bool) {
	var wildcard *sockState
	for _, i := range c.listeners[portKey{netns, port}] {
		l := c.socks.at(i)
		if l.saddr == addr {
			return l, true
		}
		if l.saddr.IsUnspecified() {
			wildcard = l
		}
	}
	return wildcard, wildcard != nil
}

// roleByListeners is the role of a connection's end first seen after its
// opening (its events lost, or in a namespace no snapshot covered): the
// server's if a listener takes connections to its local end, the
// client's if one takes them to its remote end.
func (c *Correlator) roleByListeners(s *sockState) tracer.Role {
	if s.dport == 0 {
		return tracer.RoleUnknown
	}
	if _, ok := c.listenerOf(s); ok || c.seedListening(s.netns, s.sport, s.saddr) {
		return tracer.RoleServer
	}
	if _, ok := c.listenerAt(s.netns, s.dport, s.daddr); ok || c.seedListening(s.netns, s.dport, s.daddr) {
		return tracer.RoleClient
	}
	return tracer.RoleUnknown
}

func (c *Correlator) record(s *sockState, l heldLine) *tracer.Record {
	r := &c.rec
	*r = tracer.Record{
		TimeNs: l.timeNs, Type: l.typ, Proto: s.proto, Family: s.family, Old: l.old, New: l.new,
		SAddr: s.saddr, DAddr: s.daddr, SPort: s.sport, DPort: s.dport,
		Process: s.owner, OwnerVia: s.ownerVia, Role: s.role, OwnerExited: s.ownerExited, NetNS: s.netns,
		DurationNs: l.durationNs, TimeoutNs: l.timeoutNs, Err: l.err,
	}
	if r.PID == 0 {
		r.CgroupID = s.sockCgroup
	}
	return r
}

func (c *Correlator) output(r *tracer.Record) {
	c.stats.Records++
	c.emit(r)
}
