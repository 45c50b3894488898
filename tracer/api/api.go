// Package api is porttrace's versioned local API: HTTP with JSON over a unix
// socket, the habit of Docker, containerd and systemd. A running watch
// serves it, and so will the daemon; `porttrace who` asks every server it
// finds. Requests are bounded in size and time, and each connection's peer
// is checked (root, or a member of the group porttrace).
package api

import (
	"net/netip"
	"path/filepath"
	"strconv"

	"github.com/porttrace/porttrace/tracer/snapshot"
)

// Version is the API's version, the first element of every path.
const Version = "v1"

// The paths: ownersPath answers GET ?port=N with an OwnersResponse (every
// server; &unheld=1 keeps the sockets in tracer.UnheldStates and the
// timewait ones: those whose owner only a tracer can name); whoPath with a
// WhoResponse and historyPath (?port=N&since=NS&until=NS) with a
// history.Result (the daemon).
const (
	ownersPath  = "/" + Version + "/owners"
	whoPath     = "/" + Version + "/who"
	historyPath = "/" + Version + "/history"
)

// WhoResponse is the daemon's answer to who: the report, and how it was
// made.
type WhoResponse struct {
	Report *snapshot.PortReport `json:"report"`
	// From says where the owners came from: "cache" (the daemon's event
	// cache) or "walk" (a walk of every process's files, when the cache
	// could not name a socket's owner).
	From string `json:"from"`
}

// Group is the group whose members may use the API besides root.
const Group = "porttrace"

// Socket is one socket whose owner a server knows.
type Socket struct {
	Proto  string `json:"proto"`
	Family string `json:"family"`
	State  string `json:"state"`
	// TimeWait marks a connection no process holds any more: only a
	// tracer that saw it can name its owner.
	TimeWait bool           `json:"timewait,omitempty"`
	NetNS    uint32         `json:"netns"`
	Local    netip.AddrPort `json:"local"`
	Remote   netip.AddrPort `json:"remote"`
	PID      uint32         `json:"pid"`
	Comm     string         `json:"comm"`
	Thread   string         `json:"thread,omitempty"`
	// StartNs is the owner's start time (see tracer.Process): a later
	// process with the same pid is not the owner.
	StartNs  uint64 `json:"start_ns,omitempty"`
	CgroupID uint64 `json:"cgroup_id,omitempty"`
	OwnerVia string `json:"owner_via"`
	// Exited says the owner has exited: the socket outlived it.
	Exited bool `json:"exited,omitempty"`
}

// OwnersResponse lists the sockets on both sides of a port whose owners a
// server knows: those on the port here, and those connected to it from
// this host.
type OwnersResponse struct {
	Port uint16 `json:"port"`
	// AtNs is when the server's index was built (ns since the epoch).
	AtNs    int64    `json:"at_ns"`
	Sockets []Socket `json:"sockets"`
}

// ErrorResponse is the body of every answer that is not 200.
type ErrorResponse struct {
	Error string `json:"error"`
}

// WatchSocket is where the watch with this pid serves the API.
func WatchSocket(pid int) string {
	return filepath.Join(Dir, "watch-"+strconv.Itoa(pid)+".sock")
}

// DaemonSocket is where the daemon serves the API by default.
var DaemonSocket = filepath.Join(Dir, "porttrace.sock")
