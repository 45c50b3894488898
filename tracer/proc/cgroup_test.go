package proc

import (
	"strings"
	"testing"
)

// Container ids and pod uids as the runtimes and Kubernetes write them.
const (
	id1    = "3f4e8d1c2b7a6950e1d2c3b4a5968778695a4b3c2d1e0f9e8d7c6b5a49382716"
	id2    = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
	pod    = "6b0a3bde-6c73-4a41-9f3a-1c2d3e4f5a6b"
	podSD  = "6b0a3bde_6c73_4a41_9f3a_1c2d3e4f5a6b" // the systemd driver's spelling
	static = "f4b1d8e4c3a2b1c0d9e8f7a6b5c4d3e2"     // a static pod's config hash
)

func TestParseCgroupPath(t *testing.T) {
	for _, tc := range []struct {
		name, path    string
		unit, manager string
		container     *Container
	}{
		{"the root", "/", "", "", nil},
		{"empty", "", "", "", nil},
		{"systemd itself", "/init.scope", "init.scope", "", nil},
		{"a system service", "/system.slice/nginx.service", "nginx.service", "", nil},
		{"a templated service in its own slice", "/system.slice/system-getty.slice/getty@tty1.service", "getty@tty1.service", "", nil},
		{"a login session", "/user.slice/user-1000.slice/session-2.scope", "session-2.scope", "", nil},
		{"a user's service manager", "/user.slice/user-1000.slice/user@1000.service/init.scope", "init.scope", "user@1000.service", nil},
		{"a user service", "/user.slice/user-1000.slice/user@1000.service/app.slice/syncthing.service", "syncthing.service", "user@1000.service", nil},
		{"a user's terminal app scope", "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-org.gnome.Terminal-4242.scope", "app-gnome-org.gnome.Terminal-4242.scope", "user@1000.service", nil},

		{"docker, systemd driver", "/system.slice/docker-" + id1 + ".scope", "docker-" + id1 + ".scope", "", &Container{ID: id1, Runtime: "docker"}},
		{"docker, cgroupfs driver", "/docker/" + id1, "", "", &Container{ID: id1, Runtime: "docker"}},
		{"docker in docker", "/docker/" + id1 + "/docker/" + id2, "", "", &Container{ID: id2, Runtime: "docker"}},
		{"docker, rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-" + id1 + ".scope", "docker-" + id1 + ".scope", "user@1000.service", &Container{ID: id1, Runtime: "docker"}},
		{"dockerd itself", "/system.slice/docker.service", "docker.service", "", nil},
		{"podman, rootful", "/machine.slice/libpod-" + id1 + ".scope", "libpod-" + id1 + ".scope", "", &Container{ID: id1, Runtime: "podman"}},
		{"podman, rootful, split cgroup", "/machine.slice/libpod-" + id1 + ".scope/container", "libpod-" + id1 + ".scope", "", &Container{ID: id1, Runtime: "podman"}},
		{"podman, rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id1 + ".scope/container", "libpod-" + id1 + ".scope", "user@1000.service", &Container{ID: id1, Runtime: "podman"}},
		{"podman, cgroupfs", "/libpod_parent/libpod-" + id1, "", "", &Container{ID: id1, Runtime: "podman"}},
		{"podman's monitor is not the container", "/machine.slice/libpod-conmon-" + id1 + ".scope", "libpod-conmon-" + id1 + ".scope", "", nil},

		{"kubernetes burstable, systemd driver, containerd",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podSD + ".slice/cri-containerd-" + id1 + ".scope",
			"cri-containerd-" + id1 + ".scope", "", &Container{ID: id1, Runtime: "containerd", PodUID: pod}},
		{"kubernetes besteffort, systemd driver, cri-o",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podSD + ".slice/crio-" + id1 + ".scope",
			"crio-" + id1 + ".scope", "", &Container{ID: id1, Runtime: "crio", PodUID: pod}},
		{"kubernetes guaranteed, systemd driver",
			"/kubepods.slice/kubepods-pod" + podSD + ".slice/cri-containerd-" + id1 + ".scope",
			"cri-containerd-" + id1 + ".scope", "", &Container{ID: id1, Runtime: "containerd", PodUID: pod}},
		{"cri-o's monitor is not the container",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podSD + ".slice/crio-conmon-" + id1 + ".scope",
			"crio-conmon-" + id1 + ".scope", "", nil},
		{"kubernetes burstable, cgroupfs driver", "/kubepods/burstable/pod" + pod + "/" + id1, "", "", &Container{ID: id1, PodUID: pod}},
		{"kubernetes besteffort, cgroupfs driver", "/kubepods/besteffort/pod" + pod + "/" + id1, "", "", &Container{ID: id1, PodUID: pod}},
		{"kubernetes guaranteed, cgroupfs driver", "/kubepods/pod" + pod + "/" + id1, "", "", &Container{ID: id1, PodUID: pod}},
		{"kubernetes, cgroupfs driver, cri-o", "/kubepods/burstable/pod" + pod + "/crio-" + id1, "", "", &Container{ID: id1, Runtime: "crio", PodUID: pod}},
		{"a static pod", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + static + ".slice/cri-containerd-" + id1 + ".scope",
			"cri-containerd-" + id1 + ".scope", "", &Container{ID: id1, Runtime: "containerd", PodUID: static}},
		{"kind: a pod in a node that is a docker container", "/docker/" + id2 + "/kubepods/besteffort/pod" + pod + "/" + id1, "", "", &Container{ID: id1, PodUID: pod}},
		{"kind: the node's own processes", "/docker/" + id2 + "/system.slice/containerd.service", "containerd.service", "", &Container{ID: id2, Runtime: "docker"}},
		{"the kubelet", "/system.slice/kubelet.service", "kubelet.service", "", nil},

		{"an id that is too short", "/docker/" + id1[:12], "", "", nil},
		{"an id with upper case", "/docker/" + strings.ToUpper(id1), "", "", nil},
		{"a pod directory outside kubepods", "/pod" + pod + "/" + id1, "", "", nil},
		{"user@ without a number", "/user.slice/user@me.service/a.service", "a.service", "", nil},
		{"a v1 hierarchy's path on this machine", "/process_api/876bd19d67c0b66dfeeb1eb91474f30d", "", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ParseCgroupPath(tc.path)
			if c.Path != tc.path || c.ID != 0 {
				t.Errorf("path %q id %d, want %q and 0", c.Path, c.ID, tc.path)
			}
			if c.Unit != tc.unit || c.UserManager != tc.manager {
				t.Errorf("unit %q of %q, want %q of %q", c.Unit, c.UserManager, tc.unit, tc.manager)
			}
			switch {
			case c.Container == nil && tc.container == nil:
			case c.Container == nil || tc.container == nil || *c.Container != *tc.container:
				t.Errorf("container %+v, want %+v", c.Container, tc.container)
			}
		})
	}
}

// FuzzParseCgroupPath: any path parses without a panic, and what it names
// is part of the path.
func FuzzParseCgroupPath(f *testing.F) {
	for _, s := range []string{
		"/", "/system.slice/nginx.service", "/docker/" + id1,
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podSD + ".slice/cri-containerd-" + id1 + ".scope",
		"/kubepods/pod" + pod + "/" + id1, "/user.slice/user-1000.slice/user@1000.service/app.slice/a.service",
		"kubepods-pod.slice", "//docker//", "user@.service",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		c := ParseCgroupPath(path)
		for _, s := range []string{c.Unit, c.UserManager} {
			if !strings.Contains(path, s) {
				t.Fatalf("%q names %q, which is not in it", path, s)
			}
		}
		if ct := c.Container; ct != nil {
			if !isContainerID(ct.ID) || !strings.Contains(path, ct.ID) {
				t.Fatalf("%q names container %q", path, ct.ID)
			}
			if ct.PodUID != "" && !strings.Contains(strings.ReplaceAll(path, "_", "-"), ct.PodUID) {
				t.Fatalf("%q names pod %q", path, ct.PodUID)
			}
		}
	})
}
