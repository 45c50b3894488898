package correlate

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// publishIntervalNs is the shortest interval between rebuilds of the
// published index: a storm pays for at most one rebuild per interval. A
// rebuild copies and sorts every owned socket (a storm leaves tens of
// thousands in TIME_WAIT: 100,000 take about 15 ms), so the interval grows
// to publishCostFactor times what a rebuild costs (publishCost): the index
// takes about 0.7% of the loop's time, a few percent of its CPU while a
// storm keeps it busy. It never grows past publishMaxIntervalNs, which
// bounds how late a reader sees a change.
const (
	publishIntervalNs    = int64(100e6)
	publishCostFactor    = 150
	publishMaxIntervalNs = int64(5e9)
)

// answerPollNs is how often the loop looks for the holder goroutine's
// answer while a question is out. Polled rather than woken for (as a
// Reseed is): the answer comes milliseconds after the question, and the
// pace keeps searches (runs of iterators and map updates) from following
// one another back to back.
const answerPollNs = int64(10e6)

// Loop is the one owner of a Correlator. The source calls it from one
// goroutine; it passes records to its sinks and, on ticks, publishes an
// immutable Index for readers on other goroutines. Nothing else touches the
// correlator, so nothing needs a lock, and no reader can stall the events.
//
// Where the source can find who holds a socket (tracer.HolderFinder), a
// goroutine of the loop's own does that, one batch at a time: the ticks
// hand it the correlator's questions and take back its answers, so the
// walk of every process's files never runs on the event path.
type Loop struct {
	corr  *Correlator
	sinks []tracer.Sink
	index atomic.Pointer[Index]
	// asks and answers reach the holder goroutine while Run runs (nil
	// otherwise); asking says a batch is under way.
	asks    chan []tracer.HolderQuery
	answers chan holderAnswer
	asking  bool
	// reseeds carries fresh snapshots to reconcile the table with (see
	// Reseed); the loop takes them on its ticks.
	reseeds chan reseed
	// waker is the running source's tracer.Waker, if it is one: Reseed
	// wakes it.
	waker atomic.Value
	// publishedNs and publishedAt say when the index was last built and
	// how many events and records the correlator had handled then.
	publishedNs int64
	publishedAt uint64
	// publishEvery is the interval between rebuilds now, publishCostNs
	// what one costs (see publishIntervalNs).
	publishEvery  int64
	publishCostNs int64
	// onDemand says the index is rebuilt only when a reader asks
	// (FreshIndex), which wanted says it did.
	onDemand bool
	wanted   atomic.Bool
	// seeded is closed once the snapshots are taken and published.
	seeded chan struct{}
}

var _ tracer.Handler = (*Loop)(nil)

// NewLoop returns a loop whose correlator's records go to sinks, in order.
func NewLoop(sinks ...tracer.Sink) *Loop {
	l := &Loop{sinks: sinks, reseeds: make(chan reseed, 1), publishEvery: publishIntervalNs, seeded: make(chan struct{})}
	l.corr = NewCorrelator(l.emit)
	l.index.Store(newIndex(0, Stats{}, nil, nil))
	return l
}

func (l *Loop) emit(r *tracer.Record) {
	for _, s := range l.sinks {
		s.Record(r)
	}
}

// Seed starts the correlator from a snapshot of the sockets that exist,
// complete at timeNs (see Correlator.Seed): the loop takes it once Run has
// handled the events until then, and then publishes its index (a loop
// that publishes on demand, when asked). Call it before Run only.
func (l *Loop) Seed(r *snapshot.PortReport, timeNs int64) { l.corr.Seed(r, timeNs) }

// Adopt is Seed without its lines (see Correlator.Adopt). Call it before
// Run only.
func (l *Loop) Adopt(r *snapshot.PortReport, timeNs int64) { l.corr.Adopt(r, timeNs) }

// Seeded is closed once Run has taken the snapshots given to Seed and
// Adopt and published an index with their sockets: a daemon is ready to
// answer then.
func (l *Loop) Seeded() <-chan struct{} { return l.seeded }

// PublishOnDemand has the loop rebuild its index only when a reader asks
// for it with FreshIndex (and when it stops), not as it changes: for a
// watch, whose index is read only by porttrace who asking it, seldom,
// while every rebuild in a storm copies and sorts tens of thousands of
// sockets. Call it before Run.
func (l *Loop) PublishOnDemand() { l.onDemand = true }

// freshIndexWait bounds how long FreshIndex waits for the loop: a loop
// held up longer answers with the index it has.
const freshIndexWait = time.Second

// FreshIndex returns an index built after the call. On a loop that
// publishes as its table changes, that is the latest index; on one that
// publishes on demand it asks for a rebuild, wakes the source, and waits
// for the next tick (a batch of events at most: 25 ms in a storm). Safe
// from any goroutine.
func (l *Loop) FreshIndex() *Index {
	old := l.index.Load()
	if !l.onDemand {
		return old
	}
	l.wanted.Store(true)
	l.wake()
	for deadline := time.Now().Add(freshIndexWait); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if idx := l.index.Load(); idx != old {
			return idx
		}
	}
	return l.index.Load()
}

// holderAnswer is what FindHolders said.
type holderAnswer struct {
	holders []tracer.Holder
	err     error
}

// Run feeds src's events to the correlator until ctx ends or src fails,
// then releases what is held and publishes a last index. It returns src's
// error.
func (l *Loop) Run(ctx context.Context, src tracer.Source) error {
	if w, ok := src.(tracer.Waker); ok {
		l.waker.Store(w)
	}
	if finder, ok := src.(tracer.HolderFinder); ok {
		stop := l.findHolders(finder)
		defer stop()
	}
	err := src.Run(ctx, l)
	l.corr.Flush()
	now := time.Now().UnixNano()
	for _, s := range l.sinks {
		s.Tick(now)
	}
	l.publish(now)
	return err
}

// findHolders starts the goroutine that answers the correlator's
// questions with finder; the returned function stops it.
func (l *Loop) findHolders(finder tracer.HolderFinder) (stop func()) {
	l.corr.findsHolders = true
	// Each holds one batch at most: a batch is asked only once the last
	// one's answer is in, so neither side ever waits on the other.
	l.asks, l.answers = make(chan []tracer.HolderQuery, 1), make(chan holderAnswer, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for q := range l.asks {
			holders, err := finder.FindHolders(q)
			l.answers <- holderAnswer{holders, err}
		}
	}()
	return func() {
		close(l.asks)
		<-done
		l.asks, l.answers, l.asking = nil, nil, false
	}
}

// PendingSinceNs is the correlator's (Window's Pending).
func (l *Loop) PendingSinceNs() (int64, bool) { return l.corr.PendingSinceNs() }

// Handle implements tracer.Handler.
func (l *Loop) Handle(ev *tracer.Event) { l.corr.Handle(ev) }

type reseed struct {
	report *snapshot.PortReport
	atNs   int64
}

// Reseed hands the loop a snapshot of every socket, taken at atNs, to
// reconcile its table with (Correlator.Reconcile) on its next tick: what a
// daemon does when the kernel reports lost events. Safe from any
// goroutine; it never blocks: a snapshot still waiting is replaced.
func (l *Loop) Reseed(r *snapshot.PortReport, atNs int64) {
	for {
		select {
		case l.reseeds <- reseed{r, atNs}:
			l.wake()
			return
		default:
		}
		select {
		case <-l.reseeds:
		default:
		}
	}
}

// wake has the source tick the loop soon, for work handed to it.
func (l *Loop) wake() {
	if w, ok := l.waker.Load().(tracer.Waker); ok {
		w.Wake()
	}
}

// Tick implements tracer.Handler. It takes what other goroutines handed
// the loop. Its deadline is the earliest of the correlator's, the sinks',
// the next look for a holder's answer while one is awaited, and the
// index's next rebuild while a change is unpublished.
func (l *Loop) Tick(nowNs int64) int64 {
	select {
	case rs := <-l.reseeds:
		l.corr.Reconcile(rs.report, rs.atNs)
	default:
	}
	if l.asking {
		select {
		case a := <-l.answers:
			l.asking = false
			l.corr.applyHolders(a.holders, a.err, nowNs)
		default:
		}
	}
	next := l.corr.Tick(nowNs)
	if l.asks != nil && !l.asking {
		if q := l.corr.takeHolderQueries(); q != nil {
			l.asks <- q
			l.asking = true
		}
	}
	if l.asking {
		next = tracer.EarlierDeadline(next, nowNs+answerPollNs)
	}
	for _, s := range l.sinks {
		next = tracer.EarlierDeadline(next, s.Tick(nowNs))
	}
	if l.announceSeeded() {
		if !l.onDemand {
			l.publish(nowNs)
		}
		close(l.seeded)
	}
	switch {
	case l.onDemand:
		if l.wanted.Swap(false) {
			l.publish(nowNs)
		}
	case l.changes() != l.publishedAt:
		if nowNs-l.publishedNs >= l.publishEvery {
			l.publish(nowNs)
		} else {
			next = tracer.EarlierDeadline(next, l.publishedNs+l.publishEvery)
		}
	}
	return next
}

// announceSeeded says the snapshots have just been taken, and Seeded is
// still open.
func (l *Loop) announceSeeded() bool {
	select {
	case <-l.seeded:
		return false
	default:
		return !l.corr.waitingSeeds()
	}
}

// changes counts what can change the index: events, owners' exits, and
// records that a tick released.
func (l *Loop) changes() uint64 {
	st := &l.corr.stats
	return st.Events + st.Records + l.corr.ownerExits + st.Reconciled
}

func (l *Loop) publish(nowNs int64) {
	start := time.Now()
	owned, unowned := l.corr.appendIndexed(nil, nil)
	l.index.Store(newIndex(nowNs, l.corr.Stats(), owned, unowned))
	l.publishedNs, l.publishedAt = nowNs, l.changes()
	l.publishCostNs = publishCost(l.publishCostNs, int64(time.Since(start)))
	l.publishEvery = min(max(publishIntervalNs, publishCostFactor*l.publishCostNs), publishMaxIntervalNs)
}

// publishCost is what a rebuild costs, from the last estimate and the
// duration of the rebuild just made. That duration is on the wall clock:
// it counts the time the loop did not run (a daemon stopped by SIGSTOP,
// or kept from a CPU by a storm), and one rebuild of one socket once took
// half a second, which held every change back from readers for 26 s.
// So the estimate may at most double from one rebuild to the next: a
// table that grows fast is caught up with in a few rebuilds.
func publishCost(lastNs, tookNs int64) int64 {
	return min(tookNs, 2*max(lastNs, publishIntervalNs/publishCostFactor))
}

// Index returns the latest published index. Safe from any goroutine.
func (l *Loop) Index() *Index { return l.index.Load() }
