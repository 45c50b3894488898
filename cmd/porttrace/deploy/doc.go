// Package deploy holds the files that run porttrace's daemon as a service,
// and the tests that hold them to what was measured:
//
//   - porttrace.service: systemd, root bounded to the capabilities the
//     daemon needs;
//   - Dockerfile: an image of the static binary alone (FROM scratch: no
//     base image to pull), built by `make image`;
//   - daemonset.yaml: Kubernetes, one pod per node with the same
//     capabilities, the host's processes, and the mounts it needs.
//
// The package has no code: its tests decode the manifest strictly against
// the Kubernetes API types, run the daemon with exactly the unit's
// capabilities and without each of them, scrape it with a real Prometheus
// server, and run the image under Docker as the manifest runs it (make
// test-deploy). The Kubernetes types are imported by the tests only, so
// the porttrace binary does not link them.
package deploy
