package windows

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer"
)

func TestImagePathOfOurProcess(t *testing.T) {
	path, err := ImagePath(uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := imageBaseName(path), filepath.Base(exe); !strings.EqualFold(got, want) {
		t.Errorf("image %q, want base name %q", path, want)
	}
	if comm := newNameCache().comm(uint32(os.Getpid()), 0); !strings.EqualFold(comm.String(), tracer.CommFrom(filepath.Base(exe)).String()) {
		t.Errorf("comm %q for image %q", comm, path)
	}
}

func TestImagePathOfNoProcess(t *testing.T) {
	// Pids are multiples of 4: this one never exists.
	const noPid = 0xfffffffd
	if path, err := ImagePath(noPid); err == nil {
		t.Fatalf("image %q for pid %#x", path, noPid)
	}
	if comm := newNameCache().comm(noPid, 0); comm != (tracer.Comm{}) {
		t.Errorf("comm %q for a missing process", comm)
	}
}
