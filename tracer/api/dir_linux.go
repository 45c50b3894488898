package api

// Dir holds the sockets of running porttrace servers.
const Dir = "/run/porttrace"
