package render

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porttrace/porttrace/tracer"
)

// Output goes out in chunks through a bounded queue to one writer
// goroutine, so that a stalled reader (a pipe nobody reads, a terminal on
// hold) never stops the event loop: when every chunk is taken, lines are
// dropped and counted instead.
//
// A storm's JSON comes at some 60 MB/s, and a file's writes stall now and
// then for tens of milliseconds (the file system's journal, writeback):
// 4 MiB of queue lost thousands of lines to such stalls. The queue holds
// half a second of a storm; its chunks are allocated when the writer falls
// behind, so a watch whose reader keeps up holds only a few.
const (
	chunkSize   = 64 << 10
	chunkCount  = 512 // 32 MiB of output may wait for a slow reader
	chunkFirst  = 4   // allocated at the start
	chunkFlush  = chunkSize - lineMaxSize
	lineMaxSize = 4096 // no line is longer: a record's fields and Labels are bounded, and a connection in JSON, every state of both ends, is about 1.5 KiB
)

// chunk is a run of whole lines on its way to the writer.
type chunk struct {
	b     []byte
	lines uint64
}

// Printer is the Output of a live watch: it formats records and
// connections as text or JSON lines and hands them to a writer goroutine.
// Record, Connection and Tick are called by the event loop only; Dropped
// and Err from anywhere.
type Printer struct {
	opts PrinterOptions

	cur     *chunk // being filled; nil while no chunk is free
	chunks  int    // allocated so far, at most chunkCount
	free    chan *chunk
	full    chan *chunk
	done    chan struct{}
	failed  chan struct{} // closed at the first write error
	queued  atomic.Int64  // lines handed to the writer and not yet written
	dropped atomic.Uint64 // lines that never reached the writer
	errOnce sync.Once
	err     atomic.Pointer[error]
	closed  bool
	// sentNs is when Tick last handed a chunk to the writer.
	sentNs int64
	// kept keeps what JSON lines repeat.
	kept jsonKept
}

// PrinterOptions shape a Printer's output.
type PrinterOptions struct {
	JSON bool
	// Text shapes text lines: time format, zone, colours, labels.
	Text Text
}

// NewPrinter starts a Printer writing to w. Close stops it.
func NewPrinter(w io.Writer, opts PrinterOptions) *Printer {
	p := &Printer{
		opts:   opts,
		free:   make(chan *chunk, chunkCount),
		full:   make(chan *chunk, chunkCount),
		done:   make(chan struct{}),
		failed: make(chan struct{}),
	}
	for range chunkFirst {
		p.free <- newChunk()
	}
	p.chunks = chunkFirst
	p.cur = <-p.free
	go p.write(w)
	return p
}

// write is the writer goroutine: the only one that may block on w.
func (p *Printer) write(w io.Writer) {
	defer close(p.done)
	for c := range p.full {
		if p.err.Load() == nil {
			if _, err := w.Write(c.b); err != nil {
				p.errOnce.Do(func() {
					p.err.Store(&err)
					close(p.failed)
				})
			}
		}
		if p.err.Load() != nil {
			p.dropped.Add(c.lines)
		}
		p.queued.Add(-int64(c.lines))
		c.b, c.lines = c.b[:0], 0
		p.free <- c
	}
}

// Header sends the column titles of the text format to the writer at once:
// an idle watch may not tick its sinks for a long time, and a reader such as
// head -1 must not wait for the first event to see them.
func (p *Printer) Header() {
	if !p.opts.JSON && p.cur != nil {
		p.cur.b = p.opts.Text.AppendHeader(p.cur.b)
		p.send()
	}
}

// Record implements tracer.Sink.
func (p *Printer) Record(r *tracer.Record) { p.print(r, nil) }

// Connection implements tracer.Output.
func (p *Printer) Connection(c *tracer.Connection) { p.print(nil, c) }

// print formats a record or a connection into the current chunk.
func (p *Printer) print(r *tracer.Record, conn *tracer.Connection) {
	c := p.chunk()
	if c == nil {
		return
	}
	switch {
	case r != nil && p.opts.JSON:
		c.b = appendJSON(c.b, r, p.opts.Text.Labels, &p.kept)
	case r != nil:
		c.b = p.opts.Text.AppendRecord(c.b, r)
	case p.opts.JSON:
		c.b = AppendConnectionJSON(c.b, conn)
	default:
		c.b = p.opts.Text.AppendConnection(c.b, conn)
	}
	c.lines++
	if len(c.b) >= chunkFlush {
		p.send()
	}
}

// Line queues a line formatted elsewhere: the summary that ends a watch's
// JSON, after its last record and before Close.
func (p *Printer) Line(line []byte) {
	if c := p.chunk(); c != nil {
		c.b = append(c.b, line...)
		c.lines++
	}
}

func newChunk() *chunk { return &chunk{b: make([]byte, 0, chunkSize)} }

// chunk is the chunk to append a line to: a free one, or a new one while
// fewer than chunkCount exist. Else it is nil, and the line is dropped and
// counted.
func (p *Printer) chunk() *chunk {
	if p.cur == nil {
		select {
		case p.cur = <-p.free:
		default:
			if p.chunks == chunkCount {
				p.dropped.Add(1)
				return nil
			}
			p.chunks++
			p.cur = newChunk()
		}
	}
	return p.cur
}

// flushIntervalNs bounds how often formatted lines go to the writer between
// full chunks: each hand-over wakes the writer goroutine for a write, and
// under a storm the source runs dry thousands of times a second.
const flushIntervalNs = int64(10e6)

// Tick implements tracer.Sink: what is formatted goes to the writer, at
// most flushIntervalNs after the last hand-over, so that lines appear soon
// after the source runs dry without a write for every tick.
func (p *Printer) Tick(nowNs int64) int64 {
	if p.cur == nil || len(p.cur.b) == 0 {
		return tracer.NoDeadline
	}
	if due := p.sentNs + flushIntervalNs; nowNs < due {
		return due
	}
	p.send()
	p.sentNs = nowNs
	return tracer.NoDeadline
}

// send hands the current chunk to the writer, or drops it if the writer's
// queue is full, and takes a free chunk if there is one.
func (p *Printer) send() {
	c := p.cur
	p.cur = nil
	// Counted before it is sent: once sent, the chunk is the writer's.
	p.queued.Add(int64(c.lines))
	select {
	case p.full <- c:
	default:
		p.queued.Add(-int64(c.lines))
		p.dropped.Add(c.lines)
		c.b, c.lines = c.b[:0], 0
		p.cur = c
		return
	}
	select {
	case p.cur = <-p.free:
	default:
	}
}

// Dropped is how many lines were not written: the reader could not keep
// up, or writing failed.
func (p *Printer) Dropped() uint64 { return p.dropped.Load() }

// Failed is closed at the first write error: nothing more will be
// written, and a watch whose output fails stops at once.
func (p *Printer) Failed() <-chan struct{} { return p.failed }

// Err is the first write error, if any.
func (p *Printer) Err() error {
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

// Close sends what is left and waits up to timeout for the writer to write
// it; lines still waiting then count as dropped, and the writer is left to
// finish or stay blocked on its own. It is called once, after the event
// loop has stopped.
func (p *Printer) Close(timeout time.Duration) error {
	if p.closed {
		return p.Err()
	}
	p.closed = true
	if c := p.cur; c != nil && len(c.b) > 0 {
		p.queued.Add(int64(c.lines))
		select {
		case p.full <- c:
		case <-time.After(timeout):
			p.queued.Add(-int64(c.lines))
			p.dropped.Add(c.lines)
		}
	}
	p.cur = nil
	close(p.full)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.dropped.Add(uint64(max(p.queued.Swap(0), 0)))
	}
	return p.Err()
}
