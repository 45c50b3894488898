package proc

import "strings"

// Cgroup is a process's cgroup and what its path says would restart the
// process: a systemd unit, a container runtime, Kubernetes.
type Cgroup struct {
	// Path is the cgroup v2 path as /proc/PID/cgroup shows it
	// ("/system.slice/nginx.service"), relative to the cgroup2 mount.
	Path string `json:"cgroup,omitempty"`
	// ID is the cgroup's id: the inode number of its directory in the
	// cgroup2 mount, which is the id bpf_get_current_cgroup_id() returns
	// and `ss --cgroup` shows. 0 where there is no cgroup2 mount.
	ID uint64 `json:"cgroup_id,omitempty"`
	// Unit is the innermost systemd service or scope ("nginx.service",
	// "session-2.scope", "docker-<id>.scope"): for a container the
	// runtime, not systemd, restarts it.
	Unit string `json:"unit,omitempty"`
	// UserManager is the user's service manager ("user@1000.service") the
	// Unit belongs to; empty for the system's (systemctl --user, not
	// systemctl, restarts it).
	UserManager string `json:"user_manager,omitempty"`
	// Container is the container the process runs in, nil for none.
	Container *Container `json:"container,omitempty"`
}

// Container is a container named by a cgroup path.
type Container struct {
	// ID is the runtime's container id (64 hex digits).
	ID string `json:"id"`
	// Runtime is "docker", "containerd", "crio" or "podman"; empty where
	// the path does not say (Kubernetes' cgroupfs driver).
	Runtime string `json:"runtime,omitempty"`
	// PodUID is the Kubernetes pod's uid, empty outside Kubernetes.
	PodUID string `json:"pod_uid,omitempty"`
}

// Container runtimes as their systemd scopes and cgroupfs directories name
// them: "<prefix><id>.scope" or "<prefix><id>". A runtime's monitor
// ("crio-conmon-<id>", "libpod-conmon-<id>") is not the container and does
// not match, since what follows the prefix must be an id.
var runtimePrefixes = []struct{ prefix, runtime string }{
	{"docker-", "docker"},
	{"cri-containerd-", "containerd"},
	{"crio-", "crio"},
	{"libpod-", "podman"},
}

// ParseCgroupPath names what a cgroup path says about its processes: the
// systemd unit, the container (the innermost, for nested ones) and the
// Kubernetes pod. Path is set to path and ID left 0. Any string is
// accepted; what it does not name stays empty.
func ParseCgroupPath(path string) Cgroup {
	c := Cgroup{Path: path}
	var (
		kubepods  bool   // inside a kubepods hierarchy
		podUID    string // the pod, once seen
		container *Container
		parent    string
	)
	for el := range strings.SplitSeq(path, "/") {
		if strings.HasSuffix(el, ".service") || strings.HasSuffix(el, ".scope") {
			if isUserManager(c.Unit) {
				c.UserManager = c.Unit
			}
			c.Unit = el
		}
		if strings.HasPrefix(el, "kubepods") {
			kubepods = true
		}
		if uid, ok := podOf(el, kubepods); ok {
			podUID, container = uid, nil
		}
		if ct, ok := containerOf(el, parent, podUID != ""); ok {
			ct.PodUID = podUID
			container = &ct
		}
		parent = el
	}
	c.Container = container
	return c
}

// isUserManager reports whether unit is a user's service manager,
// user@UID.service.
func isUserManager(unit string) bool {
	uid, ok := strings.CutPrefix(unit, "user@")
	uid, ok2 := strings.CutSuffix(uid, ".service")
	return ok && ok2 && uid != "" && strings.Trim(uid, "0123456789") == ""
}

// podOf finds a pod's uid in a path element: "pod<uid>" under kubepods
// (cgroupfs driver), or "kubepods[-<qos>]-pod<uid>.slice" (systemd driver,
// which writes the uid's dashes as underscores).
func podOf(el string, kubepods bool) (string, bool) {
	var uid string
	if rest, ok := strings.CutSuffix(el, ".slice"); ok && strings.HasPrefix(rest, "kubepods") {
		i := strings.LastIndex(rest, "-pod")
		if i < 0 {
			return "", false
		}
		uid = strings.ReplaceAll(rest[i+len("-pod"):], "_", "-")
	} else if rest, ok := strings.CutPrefix(el, "pod"); ok && kubepods {
		uid = rest
	} else {
		return "", false
	}
	// A uid is a UUID, or 32 hex digits for a static pod (a config hash).
	if len(uid) < 32 || strings.Trim(uid, "0123456789abcdef-") != "" {
		return "", false
	}
	return uid, true
}

// containerOf finds a container in a path element: a runtime's scope or
// directory, "<id>" under "docker" (Docker's cgroupfs driver), or "<id>"
// in a pod (Kubernetes' cgroupfs driver, runtime unknown).
func containerOf(el, parent string, inPod bool) (Container, bool) {
	for _, rt := range runtimePrefixes {
		if rest, ok := strings.CutPrefix(el, rt.prefix); ok {
			id := strings.TrimSuffix(rest, ".scope")
			if isContainerID(id) {
				return Container{ID: id, Runtime: rt.runtime}, true
			}
		}
	}
	switch {
	case !isContainerID(el):
	case parent == "docker":
		return Container{ID: el, Runtime: "docker"}, true
	case inPod:
		return Container{ID: el}, true
	}
	return Container{}, false
}

// isContainerID reports whether s is a container id as the runtimes write
// them: 64 lower-case hex digits.
func isContainerID(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}
