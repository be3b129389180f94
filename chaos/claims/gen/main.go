// Command gen writes CLAIMS.md, the claims catalog, from the registry in
// chaos/claims and the specs that carry each claim. Run it from anywhere
// inside the repository: go run ./chaos/claims/gen
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/unibus/clusterkit/chaos/claims"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintf(os.Stderr, "gen: unexpected argument %q: run it without arguments (%s)\n", os.Args[1], claims.GenerateCommand)
		os.Exit(2)
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "gen: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	specs, err := claims.SpecFiles(root)
	if err != nil {
		return err
	}
	out := filepath.Join(root, claims.CatalogFile)
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, claims.Catalog(specs), 0o644); err != nil {
		return fmt.Errorf("write catalog: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("write catalog: %w", err)
	}
	fmt.Printf("wrote %s (%d claims)\n", out, len(claims.All))
	return nil
}

// repoRoot is the nearest directory at or above the working directory
// holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("look for go.mod: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the repository (no go.mod above the working directory): run it from the repository root")
		}
		dir = parent
	}
}
