package proc

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dockerTest opts in to TestResolveDocker, which needs a running Docker
// daemon (Debian's docker.io: dockerd --bridge=none --iptables=false) and
// busybox-static's /bin/busybox, and is left out of the default run.
const dockerTest = "PORTTRACE_TEST_DOCKER"

// TestResolveDocker resolves a process in a Docker container, built from
// a static busybox without pulling: the container, its runtime, and a
// chain of ancestors that ends at the container's init.
func TestResolveDocker(t *testing.T) {
	if os.Getenv(dockerTest) != "1" {
		t.Skip("set " + dockerTest + "=1 with dockerd running to resolve a container's process")
	}
	needRoot(t)
	docker := func(stdin []byte, args ...string) string {
		t.Helper()
		cmd := exec.Command("docker", args...)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	const image = "porttrace-proc-test:busybox"
	docker(busyboxImage(t), "import", "-", image)
	defer exec.Command("docker", "rmi", image).Run()
	id := docker(nil, "run", "-d", "--network", "none", image, "/bin/sh", "-c", "sleep 1000 & wait")
	defer exec.Command("docker", "rm", "-f", id).Run()
	initPID, err := strconv.ParseUint(docker(nil, "inspect", "-f", "{{.State.Pid}}", id), 10, 32)
	if err != nil {
		t.Fatal(err)
	}

	r := NewResolver()
	var sleep Process
	waitFor(t, "the container's sleep", func() bool {
		for _, pid := range childrenOf(uint32(initPID)) {
			if p, err := r.Resolve(pid); err == nil && p.Name == "sleep" {
				sleep = p
				return true
			}
		}
		return false
	})
	want := Container{ID: id, Runtime: "docker"}
	if sleep.Container == nil || *sleep.Container != want {
		t.Errorf("a process in container %s resolved to %+v (cgroup %q)", id, sleep.Container, sleep.Path)
	}
	if want := []Ancestor{{uint32(initPID), "sh"}}; !slices.Equal(sleep.Ancestors, want) {
		t.Errorf("ancestors %v, want the container's init only, %v", sleep.Ancestors, want)
	}
	init, err := r.Resolve(uint32(initPID))
	if err != nil || init.Container == nil || *init.Container != want || len(init.Ancestors) == 0 || !strings.HasPrefix(init.Ancestors[0].Name, "containerd-shim") {
		t.Errorf("the container's init resolved to %+v, %v; want container %s, child of a containerd-shim", init, err, id)
	}
}

// busyboxImage is a tar of a file system holding busybox as /bin/sh and
// /bin/sleep, for docker import.
func busyboxImage(t *testing.T) []byte {
	bin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("%v (apt-get install busybox-static)", err)
	}
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	w.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755})
	w.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin))})
	w.Write(bin)
	for _, name := range []string{"sh", "sleep"} {
		w.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + name, Linkname: "busybox"})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
