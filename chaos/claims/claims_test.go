package claims

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// root is the repository root, seen from this package's directory (where
// go test runs).
const root = "../.."

func TestRegistry(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range All {
		if c.ID == "" || strings.TrimSpace(c.Summary) == "" {
			t.Errorf("claim %+v: id and summary are required", c)
		}
		if seen[c.ID] {
			t.Errorf("claim %q registered twice", c.ID)
		}
		seen[c.ID] = true
		if !c.InProc && !c.SSH && !c.Process {
			t.Errorf("claim %q runs on no target", c.ID)
		}
		if l, err := Label(c.ID); err != nil || l != LabelPrefix+c.ID {
			t.Errorf("Label(%q) = %q, %v", c.ID, l, err)
		}
	}
	if _, err := Label("no-such-claim"); err == nil {
		t.Error("Label accepted an unregistered id")
	}
}

// CLAIMS.md is generated; this fails when the registry or the specs'
// labels changed without regenerating it.
func TestCatalogUpToDate(t *testing.T) {
	specs, err := SpecFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	want := Catalog(specs)
	got, err := os.ReadFile(filepath.Join(root, CatalogFile))
	if err != nil {
		t.Fatalf("%s missing (%v): run `%s` from the repository root", CatalogFile, err, GenerateCommand)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		i := 0
		for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
			i++
		}
		line := func(ls []string) string {
			if i < len(ls) {
				return ls[i]
			}
			return "(end of file)"
		}
		t.Fatalf("%s is out of date with chaos/claims and specs/: run `%s` from the repository root and commit it\nfirst difference at line %d:\n  file:      %s\n  generated: %s",
			CatalogFile, GenerateCommand, i+1, line(gl), line(wl))
	}
}

func TestCatalogDeterministic(t *testing.T) {
	specs := map[string][]string{All[0].ID: {"specs/a_test.go", "specs/b_test.go"}}
	a, b := Catalog(specs), Catalog(specs)
	if !bytes.Equal(a, b) {
		t.Fatal("two renderings of the same registry differ")
	}
	if !bytes.Contains(a, []byte("| "+All[0].ID+" | ")) || !bytes.Contains(a, []byte("`specs/a_test.go`, `specs/b_test.go`")) {
		t.Errorf("catalog lacks the first claim's row:\n%s", a)
	}
	if !bytes.Contains(a, []byte(GenerateCommand)) {
		t.Error("catalog header does not say how to regenerate it")
	}
}

// Every spec file's claim label names a registered claim, and the scan
// finds the labels the specs really use.
func TestSpecFiles(t *testing.T) {
	specs, err := SpecFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) == 0 {
		t.Fatal("no claim label found under specs/: the scan no longer matches how specs label themselves (specs.Claim)")
	}
	for id, files := range specs {
		if _, ok := Lookup(id); !ok {
			t.Errorf("%v label unregistered claim %q", files, id)
		}
	}
}

// The repository must stand alone: no file in it may point at a path
// outside it (a user who clones the kit has nothing next to it).
func TestNoReferenceOutsideRepo(t *testing.T) {
	// Spelt in pieces so this file does not match itself.
	outside := []string{".." + "/shared", "/work" + "/shared", "shared" + "/notes/", "shared" + "/CLAIMS.md"}
	skipDirs := map[string]bool{".git": true, "out": true, "bin": true}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && skipDirs[d.Name()] {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Name() == ".git" || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0 {
			return nil // binary
		}
		for n, l := range strings.Split(string(b), "\n") {
			for _, o := range outside {
				if strings.Contains(l, o) {
					rel, _ := filepath.Rel(root, p)
					t.Errorf("%s:%d refers to %q, outside the repository: point at a file in the repo instead", rel, n+1, o)
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
