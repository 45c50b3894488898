package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// deployTest opts in to TestDocker, which needs a Docker daemon (make
// test-deploy sets it).
const deployTest = "PORTTRACE_TEST_DEPLOY"

// TestDocker builds the image (make image: FROM scratch, nothing pulled)
// and runs it under Docker as daemonset.yaml runs it: the manifest's
// capabilities, arguments, environment, memory limit and mounts, the
// host's processes, a network and a cgroup namespace of its own (as a pod
// has on cgroup v2). From the host, it asks the daemon who holds a port
// this test listens on, and who holds a port in another container (its
// container named), reads the metrics in the pod's network, and stops it.
func TestDocker(t *testing.T) {
	if os.Getenv(deployTest) != "1" {
		t.Skip("set " + deployTest + "=1 (make test-deploy) to run the image under Docker")
	}
	needRoot(t)
	need(t, "docker", "docker.io")
	need(t, "make", "make")
	need(t, "nsenter", "util-linux")
	busybox := need(t, "busybox", "busybox-static")
	docker := dockerClient(t)

	image := fmt.Sprintf("porttrace-deploy-test:%d", os.Getpid())
	build := exec.Command("make", "image", "IMAGE="+image)
	build.Dir = moduleRoot(t)
	build.Env = docker.env
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Cleanup(func() { docker.run(t, "rmi", image) })

	// The host's side of the mounts the test keeps to itself: the
	// socket's folder, the history, and /etc/group with a group porttrace.
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	runDir, historyDir, groups := filepath.Join(dir, "run"), filepath.Join(dir, "history"), groupFile(t)
	// A host process, this test, listening before the daemon starts (so
	// that its port gets a label from the starting snapshot, see
	// TestPrometheusScrapes).
	_, port := listenTCP(t)

	ds := daemonSet(t)
	name := fmt.Sprintf("porttrace-deploy-test-%d", os.Getpid())
	options := dockerRunOptions(t, ds, map[string]string{"/run/porttrace": runDir, "/var/lib/porttrace": historyDir, "/etc/group": groups})
	run := append(append([]string{"run", "-d", "--name", name}, options...), image)
	docker.run(t, append(run, daemonContainer(t, ds).Args...)...)
	t.Cleanup(func() { docker.run(t, "rm", "-f", name) })
	socket := filepath.Join(runDir, "porttrace.sock")
	waitFor(t, "the daemon's socket", 30*time.Second, func() bool {
		_, err := os.Stat(socket)
		return err == nil || docker.output(t, "inspect", "-f", "{{.State.Running}}", name) != "true"
	})
	logs := func() string { return docker.output(t, "logs", name) }
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("the container stopped:\n%s", logs())
	}
	// The metrics, where the pod serves them: in its own network.
	inPod := []string{"nsenter", "-t", docker.output(t, "inspect", "-f", "{{.State.Pid}}", name), "-n"}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%s%s", ds.Spec.Template.Annotations["prometheus.io/port"], ds.Spec.Template.Annotations["prometheus.io/path"])
	scrape := func() []byte {
		out, err := exec.Command(inPod[0], append(inPod[1:], busybox, "wget", "-q", "-O", "-", metricsURL)...).Output()
		if err != nil {
			t.Fatalf("%s in the pod's network: %v", metricsURL, err)
		}
		return out
	}
	scraped := scrape()
	checkSocket(t, socket)

	a := who(t, socket, port)
	if !a.FromDaemon || len(a.Processes) != 1 || a.Processes[0].PID != uint32(os.Getpid()) || a.Processes[0].Exe == "" || a.Processes[0].User != "root" {
		t.Errorf("who %d (this test, pid %d): from the daemon %v, %+v; want this test, root's, with its executable", port, os.Getpid(), a.FromDaemon, a.Processes)
	}

	// A process in another container, in its own network namespace.
	busyboxImage := image + "-busybox"
	docker.build(t, busyboxImage, busybox, `FROM scratch
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox"]
`)
	t.Cleanup(func() { docker.run(t, "rmi", busyboxImage) })
	const containerPort = 8080
	other := docker.output(t, "run", "-d", "--rm", "--network", "none", busyboxImage, "httpd", "-f", "-p", fmt.Sprintf("127.0.0.1:%d", containerPort))
	t.Cleanup(func() { docker.run(t, "rm", "-f", other) })
	inOther := []string{"nsenter", "-t", docker.output(t, "inspect", "-f", "{{.State.Pid}}", other), "-n"}
	waitListening(t, inOther, containerPort)
	a = who(t, socket, containerPort, inOther...)
	if !a.FromDaemon || len(a.Processes) != 1 || a.Processes[0].Container == nil || a.Processes[0].Container.ID != other {
		t.Errorf("who %d in container %s: from the daemon %v, %+v; want its busybox, in that container", containerPort, other, a.FromDaemon, a.Processes)
	}

	if want := fmt.Sprintf(`porttrace_tcp_sockets{port="%d",state="listen"} 1`, port); !strings.Contains(string(scraped), want) {
		t.Errorf("no %s in %s in the pod's network:\n%s", want, metricsURL, scraped)
	}

	start := time.Now()
	docker.run(t, "stop", "-t", "10", name)
	t.Logf("docker stop took %v", time.Since(start).Round(time.Millisecond))
	if state := docker.output(t, "inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", name); state != "0 false" {
		t.Errorf("after docker stop, exit code and OOM killed: %s, want 0 false; logs:\n%s", state, logs())
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after the daemon stopped (%v)", err)
	}
}

// dockerRunOptions are `docker run`'s options for the manifest's pod, the
// host paths of its mounts replaced as hostPaths says. The pod's network is Docker's "none" (a
// namespace of its own, with no bridge here), its cgroup namespace
// private, its seccomp profile Docker's default (RuntimeDefault).
func dockerRunOptions(t *testing.T, ds *appsv1.DaemonSet, hostPaths map[string]string) []string {
	t.Helper()
	pod := ds.Spec.Template.Spec
	c := daemonContainer(t, ds)
	args := []string{"--network", "none", "--cgroupns", "private"}
	if pod.HostNetwork {
		args = []string{"--network", "host", "--cgroupns", "private"}
	}
	if pod.HostPID {
		args = append(args, "--pid", "host")
	}
	sc := c.SecurityContext
	for _, cap := range sc.Capabilities.Drop {
		args = append(args, "--cap-drop", string(cap))
	}
	for _, cap := range sc.Capabilities.Add {
		args = append(args, "--cap-add", string(cap))
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		args = append(args, "--security-opt", "no-new-privileges")
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		args = append(args, "--read-only")
	}
	if sc.RunAsUser != nil {
		args = append(args, "--user", strconv.FormatInt(*sc.RunAsUser, 10))
	}
	if limit := c.Resources.Limits.Memory(); !limit.IsZero() {
		args = append(args, "--memory", strconv.FormatInt(limit.Value(), 10))
	}
	for _, e := range c.Env {
		args = append(args, "--env", e.Name+"="+e.Value)
	}
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		hostPath := pod.Volumes[i].HostPath
		host := hostPath.Path
		if mine, ok := hostPaths[host]; ok {
			host = mine
		}
		if hostPath.Type != nil && *hostPath.Type == corev1.HostPathDirectoryOrCreate {
			if err := os.MkdirAll(host, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		spec := host + ":" + m.MountPath
		if m.ReadOnly {
			spec += ":ro"
		}
		args = append(args, "--volume", spec)
	}
	return args
}

// dockerCLI runs docker against a daemon that answers.
type dockerCLI struct {
	env []string
}

// dockerClient finds the Docker daemon that answers, or starts one of its
// own (Debian's dockerd, no bridge, no iptables, its files in a temporary
// folder) until the test ends.
func dockerClient(t *testing.T) *dockerCLI {
	t.Helper()
	d := &dockerCLI{env: os.Environ()}
	if d.answers() {
		return d
	}
	dockerd := need(t, "dockerd", "docker.io")
	dir, err := os.MkdirTemp("", "porttrace-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	cmd := exec.Command(dockerd, "--bridge=none", "--iptables=false", "--data-root", filepath.Join(dir, "root"),
		"--exec-root", filepath.Join(dir, "exec"), "--pidfile", filepath.Join(dir, "docker.pid"), "--host", "unix://"+sock)
	log := filepath.Join(dir, "dockerd.log")
	outputTo(t, cmd, log)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		os.RemoveAll(dir)
	})
	d.env = append(os.Environ(), "DOCKER_HOST=unix://"+sock)
	waitFor(t, "dockerd to answer", 60*time.Second, func() bool {
		select {
		case <-exited:
			out, _ := os.ReadFile(log)
			t.Fatalf("dockerd exited: %v\n%s", cmd.ProcessState, out)
		default:
		}
		return d.answers()
	})
	return d
}

func (d *dockerCLI) answers() bool {
	cmd := exec.Command("docker", "info")
	cmd.Env = d.env
	return cmd.Run() == nil
}

// output runs docker and returns its standard output, trimmed.
func (d *dockerCLI) output(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = d.env
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(string(out))
}

func (d *dockerCLI) run(t *testing.T, args ...string) {
	t.Helper()
	d.output(t, args...)
}

// build builds image tag from a context holding file and a Dockerfile.
func (d *dockerCLI) build(t *testing.T, tag, file, dockerfile string) {
	t.Helper()
	ctx := t.TempDir()
	copyFile(t, file, filepath.Join(ctx, filepath.Base(file)), 0o755)
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	d.run(t, "build", "-q", "-t", tag, ctx)
}

// moduleRoot is the folder of go.mod, where make runs.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}
