package tracer

// cacheDir holds the sockets of running watches: root's only.
const cacheDir = "/run/porttrace"
