package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/filter"
	"github.com/porttrace/porttrace/tracer/linux"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
	"github.com/porttrace/porttrace/tracer/why"
)

func openSource(cfg tracer.Config) (tracer.Source, error) {
	return linux.Open(cfg)
}

func snapshotPort(port uint16) (*snapshot.PortReport, error) {
	return linux.Who(port)
}

// snapshotTraced is what a watch or top starts from: port's sockets (0:
// every socket) in every network namespace, all of which the tracer
// follows. Of its own namespace alone, an older connection in a
// container read "-  ?" on its lines.
func snapshotTraced(port uint16) (*snapshot.PortReport, error) {
	return snapshotIn(port, "", true)
}

// snapshotIn answers who for the namespace --netns names, or every one with
// --all-netns, or porttrace's own.
func snapshotIn(port uint16, netns string, all bool) (*snapshot.PortReport, error) {
	var namespaces []linux.Namespace
	switch {
	case all:
		all, err := linux.AllNamespaces()
		if err != nil {
			return nil, err
		}
		namespaces = all
	case netns != "":
		ns, err := linux.FindNamespace(netns)
		if err != nil {
			return nil, usageError("%v", err)
		}
		namespaces = []linux.Namespace{ns}
	default:
		ns, err := linux.CurrentNamespace()
		if err != nil {
			return nil, err
		}
		namespaces = []linux.Namespace{ns}
	}
	r, err := linux.WhoIn(port, namespaces, proc.NewResolver())
	if linux.IsPrivilegeError(err) && !all && netns == "" {
		// What any user may see, and a note that says what is missing.
		return linux.WhoUnprivileged(port, proc.NewResolver())
	}
	return r, err
}

// judge takes a snapshot of the port, names the owners a running porttrace
// saw, reads the namespace's settings and makes a trial bind.
func judge(ctx context.Context, req why.Request) (*why.Verdict, error) {
	report, err := snapshotPort(req.Port)
	if err != nil {
		return nil, err
	}
	nameSeen(ctx, report)
	sys, err := linux.ReadSystem(req.Port)
	if err != nil {
		return nil, err
	}
	trial, err := linux.TrialBind(req)
	if err != nil {
		return nil, err
	}
	v := why.Judge(req, report, sys, trial)
	return &v, nil
}

// v6onlyDefault is IPV6_V6ONLY as the flag says, or the system's default.
func v6onlyDefault(set, value bool) (bool, error) {
	if set {
		return value, nil
	}
	return linux.BindV6OnlyDefault()
}

func parentOf(id proc.Identity) (proc.Identity, error) { return proc.Parent(id) }

// containerTest is the test of --container: of the container that Docker
// or Podman knows by spec (a name or an id), or else whose id starts with
// spec, 12 hex digits or more, as docker ps and crictl ps show them.
func containerTest(spec string) (*filter.Container, string, error) {
	id, known := runtimeContainerID(spec)
	if !known {
		id = strings.ToLower(spec)
		if len(id) < 12 || strings.Trim(id, "0123456789abcdef") != "" {
			return nil, "", usageError("invalid --container %q: neither docker nor podman knows a container of that name, and it is not a container id (12 hex digits or more, as docker ps and crictl ps show)", spec)
		}
	}
	return filter.NewContainer(id, watchResolver().CgroupByID), id, nil
}

// watchResolver is the watch's one Resolver, which its lines' labels and
// --container share: one index of the cgroup tree, walked for both.
var watchResolver = sync.OnceValue(proc.NewResolver)

// runtimeContainerID asks the container runtimes installed for the full id
// of the container spec names.
func runtimeContainerID(spec string) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, runtime := range []string{"docker", "podman"} {
		if _, err := exec.LookPath(runtime); err != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, runtime, "inspect", "--type", "container", "--format", "{{.Id}}", spec).Output()
		if id := strings.TrimSpace(string(out)); err == nil && id != "" {
			return id, true
		}
	}
	return "", false
}

// processName is the command name of process pid, or why there is no such
// process: sockets belong to processes, so a thread's id names none.
func processName(pid uint32) (string, error) {
	f, err := os.Open("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if errors.Is(err, fs.ErrNotExist) {
		return "", errors.New("no such process")
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	var name, tgid string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, value, _ := strings.Cut(sc.Text(), ":")
		switch key {
		case "Name":
			name = strings.TrimSpace(value)
		case "Tgid":
			tgid = strings.TrimSpace(value)
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if tgid != strconv.FormatUint(uint64(pid), 10) {
		return "", fmt.Errorf("a thread of process %s: give the process", tgid)
	}
	return name, nil
}

// readerGone says that a write failed because the reader of a pipe has
// gone (porttrace | head).
func readerGone(err error) bool {
	return errors.Is(err, syscall.EPIPE)
}
