package proc

import (
	"bytes"
	"context"
	"os/exec"
	"os/user"
	"strconv"
	"time"
)

// porttrace is built without cgo (a static binary starts in half the
// time, which a who answered by the daemon feels), so os/user reads
// /etc/passwd and /etc/group only. Users and groups that only the name
// service switch knows (LDAP, sssd) are asked of getent, which goes
// through NSS as a cgo build would: once per uid or group, only when the
// files do not have them.

// UserName is uid's login name, or "" when no database has it.
func UserName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	if f := getent("passwd", id); len(f) > 0 {
		return f[0]
	}
	return ""
}

// GroupID is the id of the group called name, or -1 when no database has
// it.
func GroupID(name string) int {
	if g, err := user.LookupGroup(name); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			return gid
		}
	}
	if f := getent("group", name); len(f) > 2 {
		if gid, err := strconv.Atoi(f[2]); err == nil {
			return gid
		}
	}
	return -1
}

// getentTimeout bounds a name service that does not answer (an LDAP server
// gone): porttrace then shows the number.
const getentTimeout = 2 * time.Second

// getent asks the name service switch for key in database, and returns
// the entry's colon-separated fields, or nil.
func getent(database, key string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), getentTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getent", database, key).Output()
	if err != nil {
		return nil
	}
	line, _, _ := bytes.Cut(out, []byte("\n"))
	var fields []string
	for f := range bytes.SplitSeq(line, []byte(":")) {
		fields = append(fields, string(f))
	}
	return fields
}
