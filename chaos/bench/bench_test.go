package bench_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/unibus/clusterkit/chaos/bench"
	"github.com/unibus/clusterkit/chaos/report"
)

// TestQuickRunProducesEveryRow runs the bench program as `make bench
// BENCHTIME=short` does and checks its output files: every row, in order,
// measured on membershipd, and the plain column filled exactly where a
// plain counterpart exists. The values themselves are not asserted.
func TestQuickRunProducesEveryRow(t *testing.T) {
	// Five clusters for about a minute (more under -race): not part of
	// `make unit`; `UNIBUS_BENCH_SMOKE=1 go test ./chaos/bench` runs it.
	if testing.Short() || os.Getenv("UNIBUS_BENCH_SMOKE") == "" {
		t.Skip("set UNIBUS_BENCH_SMOKE=1: starts five clusters (about a minute)")
	}
	dir := t.TempDir()
	bins := map[string]string{
		"bench":       "./cmd/bench",
		"membershipd": "github.com/unibus/clusterkit/membershipd",
		"nats-server": "github.com/nats-io/nats-server/v2",
	}
	for name, pkg := range bins {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	out := filepath.Join(dir, "out")
	cmd := exec.Command(filepath.Join(dir, "bench"), "-short", "-out", out,
		"-membershipd", filepath.Join(dir, "membershipd"), "-nats-server", filepath.Join(dir, "nats-server"))
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench -short: %v\n%s", err, stdout)
	}
	t.Logf("bench -short:\n%s", stdout)

	raw, err := os.ReadFile(filepath.Join(out, report.BenchFile))
	if err != nil {
		t.Fatal(err)
	}
	var tab report.BenchTable
	if err := json.Unmarshal(raw, &tab); err != nil {
		t.Fatalf("bench.json: %v", err)
	}
	noPlain := map[string]bool{"control-plane-p50-ms": true, "control-plane-p99-ms": true,
		"user-add-p50-ms": true, "user-add-p99-ms": true, "fail-closed-s": true}
	names := bench.RowNames()
	if len(tab.Rows) != len(names) {
		t.Fatalf("bench.json has %d rows, want %d (%v)", len(tab.Rows), len(names), names)
	}
	for i, r := range tab.Rows {
		if r.Name != names[i] {
			t.Errorf("row %d is %q, want %q", i, r.Name, names[i])
		}
		if r.Unit == "" {
			t.Errorf("row %s: no unit", r.Name)
		}
		if r.Membershipd == nil {
			t.Errorf("row %s: membershipd not measured (notes: %s)", r.Name, strings.Join(tab.Notes, "; "))
		}
		if noPlain[r.Name] {
			if r.Plain != nil || r.Ratio != nil {
				t.Errorf("row %s: plain %v ratio %v, want null (no counterpart)", r.Name, r.Plain, r.Ratio)
			}
		} else if r.Plain == nil {
			t.Errorf("row %s: plain not measured (notes: %s)", r.Name, strings.Join(tab.Notes, "; "))
		}
		if !strings.Contains(string(stdout), r.Name) {
			t.Errorf("row %s not printed", r.Name)
		}
	}
	svg, err := os.ReadFile(filepath.Join(out, "bench.svg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "<polyline", "leader-kill", "</svg>"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("bench.svg lacks %q", want)
		}
	}
	// Null, not 0 or absent, where there is no counterpart.
	if !strings.Contains(string(raw), `"plain": null`) {
		t.Errorf("bench.json: no null plain value:\n%s", raw)
	}
}
