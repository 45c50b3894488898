package deploy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

// decodeDaemonSet decodes a manifest as the API server does when asked
// for strict field validation (kubectl apply --validate=strict): an unknown
// field, a field in another case, a duplicate one or another kind is an
// error. (sigs.k8s.io/yaml's UnmarshalStrict is not as strict: it matches
// field names in any case, as encoding/json does, so "hostPid" passes.)
func decodeDaemonSet(b []byte) (*appsv1.DaemonSet, error) {
	scheme := runtime.NewScheme()
	if err := appsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	obj, _, err := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer().Decode(b, nil, nil)
	if err != nil {
		return nil, err
	}
	ds, ok := obj.(*appsv1.DaemonSet)
	if !ok {
		return nil, fmt.Errorf("a %T, not a DaemonSet", obj)
	}
	return ds, nil
}

// daemonSet is daemonset.yaml, decoded strictly.
func daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	b, err := os.ReadFile("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := decodeDaemonSet(b)
	if err != nil {
		t.Fatalf("daemonset.yaml: %v", err)
	}
	return ds
}

// daemonContainer is the manifest's one container, the daemon's.
func daemonContainer(t *testing.T, ds *appsv1.DaemonSet) *corev1.Container {
	t.Helper()
	if n := len(ds.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("daemonset.yaml has %d containers, want the daemon's alone", n)
	}
	return &ds.Spec.Template.Spec.Containers[0]
}

// unitCapabilities are the capabilities porttrace.service bounds the
// daemon to, as systemd and the kernel name them ("CAP_SYS_ADMIN").
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("porttrace.service")
	if err != nil {
		t.Fatal(err)
	}
	var caps []string
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "CapabilityBoundingSet="); ok {
			caps = append(caps, strings.Fields(v)...)
		}
	}
	if len(caps) == 0 {
		t.Fatal("porttrace.service sets no CapabilityBoundingSet")
	}
	slices.Sort(caps)
	return caps
}

// TestDaemonSetStrict decodes the manifest against the Kubernetes API
// types, refusing unknown fields, and checks what the API server and the
// README hold it to.
func TestDaemonSetStrict(t *testing.T) {
	ds := daemonSet(t)
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("the selector %v does not select the pod's labels %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostPID || pod.HostNetwork {
		t.Errorf("hostPID %v, hostNetwork %v; want the host's processes and the pod's own network", pod.HostPID, pod.HostNetwork)
	}
	c := daemonContainer(t, ds)
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("the container has no capabilities set")
	}
	if sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the container must say privileged: false and allowPrivilegeEscalation: false")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("drops %v, want ALL", sc.Capabilities.Drop)
	}
	var added []string
	for _, c := range sc.Capabilities.Add {
		added = append(added, "CAP_"+string(c))
	}
	slices.Sort(added)
	if want := unitCapabilities(t); !slices.Equal(added, want) {
		t.Errorf("the container adds %v, porttrace.service bounds the daemon to %v: one measured set for both", added, want)
	}

	// Memory: a request and a limit above it; no CPU limit.
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Memory().IsZero() || req.Cpu().IsZero() || lim.Memory().Cmp(*req.Memory()) <= 0 {
		t.Errorf("resources %v: want cpu and memory requests, and a memory limit above the request", c.Resources)
	}
	if _, ok := lim[corev1.ResourceCPU]; ok {
		t.Error("a CPU limit throttles the tracer into losing events: request CPU, do not limit it")
	}

	// The port Prometheus is told to scrape is the one the daemon serves.
	port := ds.Spec.Template.Annotations["prometheus.io/port"]
	i := slices.Index(c.Args, "--metrics-address")
	if i < 0 || i+1 == len(c.Args) {
		t.Fatalf("args %q: no --metrics-address", c.Args)
	}
	if _, served, err := net.SplitHostPort(c.Args[i+1]); err != nil || served != port {
		t.Errorf("prometheus.io/port %q, --metrics-address %q", port, c.Args[i+1])
	}
	if ds.Spec.Template.Annotations["prometheus.io/scrape"] != "true" || !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
		return p.Name == "metrics" && strconv.Itoa(int(p.ContainerPort)) == port
	}) {
		t.Errorf("want prometheus.io/scrape \"true\" and a container port named metrics, %s", port)
	}

	// Every mount has a volume, every volume is the host's and mounted.
	volumes := map[string]bool{}
	for _, v := range pod.Volumes {
		if v.HostPath == nil {
			t.Errorf("volume %s is not a host path", v.Name)
		}
		volumes[v.Name] = false
	}
	for _, m := range c.VolumeMounts {
		if _, ok := volumes[m.Name]; !ok {
			t.Errorf("mount %s: no such volume", m.Name)
		}
		volumes[m.Name] = true
	}
	for name, mounted := range volumes {
		if !mounted {
			t.Errorf("volume %s is never mounted", name)
		}
	}
}

// TestDaemonSetStrictRefuses: the strict decoding catches what the API
// server would refuse, so that TestDaemonSetStrict can fail.
func TestDaemonSetStrictRefuses(t *testing.T) {
	b, err := os.ReadFile("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, from, to string }{
		{"a misspelt field", "hostPID:", "hostPid:"},
		{"a field in the wrong place", "      hostPID: true", "      hostPID: true\n      readOnlyRootFilesystem: true"},
		{"a wrong type", "containerPort: 9813", "containerPort: metrics"},
		{"a duplicate field", "      hostPID: true", "      hostPID: true\n      hostPID: true"},
		{"another kind", "kind: DaemonSet", "kind: Deployment"},
		{"another version", "apiVersion: apps/v1", "apiVersion: apps/v1beta2"},
	} {
		if !bytes.Contains(b, []byte(tc.from)) {
			t.Fatalf("%s: daemonset.yaml has no %q", tc.name, tc.from)
		}
		_, err := decodeDaemonSet(bytes.Replace(b, []byte(tc.from), []byte(tc.to), 1))
		if err == nil {
			t.Errorf("%s (%q for %q) decoded without an error", tc.name, tc.to, tc.from)
		}
		t.Logf("%s: %v", tc.name, err)
	}
}
