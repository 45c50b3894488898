package render

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
)

// syncBuffer is a writer the test reads while the printer writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHeaderWithoutTick: the column titles reach the reader before any
// event or tick (porttrace | head -1 on an idle port once waited forever).
func TestHeaderWithoutTick(t *testing.T) {
	var out syncBuffer
	p := NewPrinter(&out, PrinterOptions{})
	defer p.Close(time.Second)
	p.Header()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasPrefix(out.String(), "TIME ") {
		if time.Now().After(deadline) {
			t.Fatalf("no header written without a tick: %q", out.String())
		}
		time.Sleep(time.Millisecond)
	}
}

// blockedWriter never returns until released: a reader that stopped reading.
type blockedWriter struct{ release chan struct{} }

func (b blockedWriter) Write(p []byte) (int, error) {
	<-b.release
	return len(p), nil
}

// TestStalledWriterDrops: with a writer that never returns, records are
// dropped and counted once every chunk waits, and Close returns after its
// timeout with every unwritten line counted.
func TestStalledWriterDrops(t *testing.T) {
	w := blockedWriter{release: make(chan struct{})}
	defer close(w.release)
	p := NewPrinter(w, PrinterOptions{JSON: true})
	r := &tracer.Record{Type: tracer.RecordState, SPort: 8080}
	if p.chunks != chunkFirst {
		t.Errorf("%d chunks allocated at the start, want %d", p.chunks, chunkFirst)
	}
	// Twice what the queue holds.
	records := 2 * chunkCount * chunkSize / len(AppendJSON(nil, r, nil))
	for range records {
		p.Record(r)
	}
	if p.Dropped() == 0 || p.chunks != chunkCount {
		t.Fatalf("%d lines dropped, %d chunks allocated while the writer is stalled; want some dropped once all %d are", p.Dropped(), p.chunks, chunkCount)
	}
	if err := p.Close(50 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Even the chunk in the writer's hands counts: it was not written in
	// time.
	if got := p.Dropped(); got != uint64(records) {
		t.Errorf("dropped %d of %d lines with a stalled writer", got, records)
	}
}
