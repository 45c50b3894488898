package api

import "net"

// write sends b: Windows has no SIGPIPE to avoid.
func write(c net.Conn, b []byte) (int, error) { return c.Write(b) }
