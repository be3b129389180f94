package report

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/unibus/clusterkit/chaos/validate"
)

// PorcupineFile is the linearizability visualization's file name.
const PorcupineFile = "porcupine.html"

// WriteVisualization writes dir/porcupine.html: porcupine's page for the
// users-bucket check, fault intervals marked. It returns the path.
func WriteVisualization(dir string, l validate.LinearizabilityResult) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create report dir %s: %w", dir, err)
	}
	p := filepath.Join(dir, PorcupineFile)
	f, err := os.Create(p)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", p, err)
	}
	werr := l.WriteVisualization(f)
	if err := f.Close(); werr == nil && err != nil {
		werr = fmt.Errorf("close %s: %w", p, err)
	}
	if werr != nil {
		_ = os.Remove(p)
		return "", werr
	}
	return p, nil
}
