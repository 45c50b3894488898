package api

import "net"

// peerRule is empty on Windows: AF_UNIX there has no peer credentials, so
// the socket directory's ACL (under ProgramData, writable by
// administrators) is what keeps others out.
type peerRule struct{}

func restrict(string) (peerRule, error) { return peerRule{}, nil }

func (peerRule) check(net.Conn) (int32, error) { return 0, nil }
