package deploy

import (
	"os"
	"path/filepath"
	"testing"
)

// ParseNodesEnv never panics on arbitrary files; what it accepts has nodes.
func FuzzParseNodesEnv(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("..", "nodes.env")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("NODES=\"n1:10.0.0.1 n2:10.0.0.2 n3:10.0.0.3\"\n"))
	f.Add([]byte("# nothing\n=\n\"unterminated\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "nodes.env")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		topo, err := ParseNodesEnv(p)
		if err == nil && len(topo.Nodes) == 0 {
			t.Fatal("accepted a topology without nodes")
		}
	})
}
