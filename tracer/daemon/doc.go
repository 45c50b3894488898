// Package daemon is porttrace's service: the composition root that traces
// every port, keeps the owner of every socket in the event loop's index
// (seeded by one snapshot, kept current by events, reconciled with a fresh
// snapshot whenever the kernel reports lost events), records ownership in
// the history store, exports metrics, and serves the local API: `porttrace
// who`, `why` and `history` ask it first.
//
// UDP sockets change no TCP state, so events alone cannot keep them: the
// daemon's who answers them by reconciliation, walking every process's
// files for a port whose sockets its cache cannot all name.
package daemon
