package tracer

import (
	"os"
	"path/filepath"
)

// cacheDir holds the sockets of running watches (Windows 10 1803 and later
// have unix sockets).
var cacheDir = filepath.Join(os.Getenv("ProgramData"), "porttrace")
