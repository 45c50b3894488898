package history

import (
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
)

// BenchmarkHistoryWrite is the cost of one ownership change from the
// sink's Record to a commit on disk: a listen or a listener's close
// (holders, over 60000 ports), or a failed bind (over 100 ports: binds
// fail on the few ports in demand). "batched" feeds them as fast as the writer
// commits them (a storm); "commit-each" commits every change alone (a
// quiet host, where each costs a commit's syncs). db-B/op is what each
// adds to the pages in use.
func BenchmarkHistoryWrite(b *testing.B) {
	holders := func(i int) tracer.Record {
		ts, port := at(time.Duration(i)*time.Millisecond), uint16(1024+i/2%60000)
		if i%2 == 0 {
			return listenRec(ts, port, uint32(i), "server")
		}
		return listenCloseRec(ts, port, uint32(i-1), "server")
	}
	failedBinds := func(i int) tracer.Record {
		return bindRec(at(time.Duration(i)*time.Millisecond), tracer.ProtoTCP, uint16(1024+i%100), uint32(i), "client", 98)
	}
	for _, bench := range []struct {
		name        string
		record      func(i int) tracer.Record
		commitEvery int
	}{
		{"batched/holders", holders, maxBatch / 2},
		{"batched/failed-binds", failedBinds, maxBatch / 2},
		{"commit-each", holders, 1},
	} {
		b.Run(bench.name, func(b *testing.B) {
			// No retention: the benchmark measures growth.
			s := openStore(b, b.TempDir(), Options{MaxBytes: 4 << 30})
			before := s.usedBytes()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				r := bench.record(i)
				s.Record(&r)
				if i%bench.commitEvery == bench.commitEvery-1 {
					if err := s.Sync(); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := s.Sync(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if s.Dropped() != 0 {
				b.Fatalf("dropped %d changes", s.Dropped())
			}
			b.ReportMetric(float64(s.usedBytes()-before)/float64(b.N), "db-B/op")
			b.ReportMetric(float64(s.Size())/1e6, "file-MB")
		})
	}
}
