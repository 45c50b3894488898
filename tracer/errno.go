package tracer

import "strconv"

// errnoNames names the Linux errnos that bind(2) and connect(2) return and
// that TCP closes a socket for (errno numbers are the same on every
// architecture porttrace supports). Events carry Linux errnos on every
// platform, as they carry Linux states.
var errnoNames = map[int32]string{
	1:   "EPERM",
	9:   "EBADF",
	12:  "ENOMEM",
	13:  "EACCES",
	14:  "EFAULT",
	22:  "EINVAL",
	32:  "EPIPE",
	88:  "ENOTSOCK",
	95:  "EOPNOTSUPP",
	97:  "EAFNOSUPPORT",
	98:  "EADDRINUSE",
	99:  "EADDRNOTAVAIL",
	101: "ENETUNREACH",
	103: "ECONNABORTED",
	104: "ECONNRESET",
	105: "ENOBUFS",
	110: "ETIMEDOUT",
	111: "ECONNREFUSED",
	113: "EHOSTUNREACH",
}

// ErrnoName names a (positive) errno, or spells its number.
func ErrnoName(errno int32) string {
	if name, ok := errnoNames[errno]; ok {
		return name
	}
	return "errno " + strconv.Itoa(int(errno))
}
