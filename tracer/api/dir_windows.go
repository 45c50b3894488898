package api

import (
	"os"
	"path/filepath"
)

// Dir holds the sockets of running porttrace servers (Windows 10 1803 and
// later have unix sockets).
var Dir = filepath.Join(os.Getenv("ProgramData"), "porttrace")
