package render

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// update rewrites every golden file of the package: go test -update, then
// review the diff.
var update = flag.Bool("update", false, "rewrite the golden files")

// golden compares got with testdata/name, or writes it there with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		line, g, w := firstDiff(got, want)
		t.Errorf("%s differs from the golden file from line %d:\n got: %q\nwant: %q\n(go test -update rewrites it: review its diff)", name, line, g, w)
	}
}

// firstDiff finds the first line where got and want differ, counting from
// 1, with that line of each ("" past the end): a golden file holds many
// cases, and the whole of it hides which one changed.
func firstDiff(got, want []byte) (int, string, string) {
	g, w := bytes.Split(got, []byte("\n")), bytes.Split(want, []byte("\n"))
	for i := 0; ; i++ {
		var gl, wl []byte
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if !bytes.Equal(gl, wl) || i >= len(g) || i >= len(w) {
			return i + 1, string(gl), string(wl)
		}
	}
}
