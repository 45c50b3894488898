// Package history keeps who held which port, from when to when, after the
// fact: what a daemon saw while nobody was watching, for `porttrace
// history`, and for `who` and `why` on a port that is free now.
//
// It records ownership, not traffic: binds and listens with their owner,
// the end of each listener and bound socket, failed binds with their errno
// and who tried, owner changes, and per port and minute the count of
// connections opened and closed.
//
// # Use
//
//	store, err := history.Open(dataDir, history.Options{Logf: logf})
//	loop := correlate.NewLoop(printer, store, metrics)  // a tracer.Sink
//	loop.Seed(snapshot, now)  // so that holders survive a restart
//	store.AwaitSnapshot(now)
//	... loop.Run(ctx, src) ...
//	store.Close()             // after the loop has stopped
//	res, err := store.Query(8080, since, until)
//
// The event loop calls Record and Tick; they allocate nothing, make no
// system call and never block: changes go to a bounded queue and, when it
// is full, are dropped and counted (Dropped). A writer goroutine commits
// them at least every half second, so a kill -9 loses under a second.
// Queries (Query, LastHolder, RecentFailedBinds) may come from any
// goroutine and never wait for the writer.
//
// # Storage
//
// The database is bbolt (go.etcd.io/bbolt), one file under the data
// directory: a copy-on-write B+tree whose commit writes and syncs the new
// pages before the meta page that makes them visible, so a crash at any
// point leaves the last commit intact. Keys start with the port and then
// the time, so that a query by port and time is one seek and a forward
// scan, and retention finds each port's oldest entries at the front of its
// range. A second file, history.lock, holds an exclusive lock for as long
// as the Store is open, so that two daemons never share a data directory.
//
// Buckets: holders (port, start time, sequence -> holder), open (socket,
// holder key: the holders that still hold a port, which ends and restarts
// look up), failed_binds and owner_changes (port, time, sequence), and
// connections (port, minute -> counts).
//
// # Holders across restarts
//
// Each Open numbers a run. The start-up snapshot's sockets (RecordSocket
// records, from Loop.Seed) continue the open holders of earlier runs that
// they find again, by socket and pid; at the first other record or tick
// dated after the snapshot (AwaitSnapshot) the snapshot is taken to be
// over, and the open holders it did not find end as EndUnseen at that
// time. Without a seed, every holder of an
// earlier run ends so.
//
// # What the records do not say yet
//
// The end of a bound socket that neither listens nor connects (UDP above
// all) is not in the record stream: such a holder stays open until a
// restart finds it gone, or until the port has more such holders than
// maxOpenBound. Owner changes are derived where the records show them (a
// process listening on a socket another bound); a record type for them is
// coming and maps onto the same change (see handOver). Records carry no
// process start time: Process.StartNs is what Options.Describe adds.
//
// # Retention and size
//
// Entries older than MaxAge go every minute; a holder that still holds its
// port stays however old. The file stays under MaxBytes: see the comment
// in retention.go for how. On a write error (a full disk) history stops
// with one line to Options.Logf and drops what comes after, while the
// rest of porttrace goes on.
package history
