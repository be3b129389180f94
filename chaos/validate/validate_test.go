package validate

import (
	"strings"
	"testing"

	"github.com/unibus/clusterkit/chaos/history"
)

func TestValidateGreen(t *testing.T) {
	in := synthRun(1, 60, 100)
	rep := Validate(in)
	var b strings.Builder
	if err := rep.WriteSummary(&b); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
	if rep.Verdict != Green || rep.Verdict.ExitCode() != 0 {
		t.Fatalf("verdict %s", rep.Verdict)
	}
	names := []string{"validity", "linearizability", "queue", "replica-divergence", "fail-closed", "revocation", "convergence", "admission"}
	for i, r := range rep.Results {
		if r.Name != names[i] {
			t.Fatalf("result %d is %s, want %s (validity first, then linearizability)", i, r.Name, names[i])
		}
	}
	if fc := rep.Results[4]; fc.Counts["probed-while-cut-off"] == 0 {
		t.Fatalf("the synthetic run never probed a cut-off node: %s", fc)
	}
	if len(rep.CutOff) == 0 {
		t.Fatal("no cut-off intervals")
	}
	var page strings.Builder
	if err := rep.Linearizability.WriteVisualization(&page); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "partition n1") {
		t.Fatalf("porcupine page (%d bytes) lacks the fault band", page.Len())
	}
}

func TestValidateRedNamesLostWrites(t *testing.T) {
	in := synthRun(2, 60, 100)
	// Drop two receives: those acked messages are lost.
	var ops []history.Op
	dropped := 0
	for _, o := range in.Ops {
		if o.Kind == history.Receive && o.Key == "ROOM_1" && dropped < 2 && o.InvokeMS > 30000 {
			dropped++
			continue
		}
		ops = append(ops, o)
	}
	in.Ops = ops
	rep := Validate(in)
	var b strings.Builder
	if err := rep.WriteSummary(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if rep.Verdict != Red || rep.Verdict.ExitCode() != 1 || !strings.Contains(out, "verdict: RED") ||
		strings.Count(out, "acked and never received") != 2 || !strings.Contains(out, "ROOM_1: message probe1-") {
		t.Fatalf("verdict %s, summary:\n%s", rep.Verdict, out)
	}
}

func TestValidateInvalidWhenTrafficTooLow(t *testing.T) {
	in := synthRun(3, 60, 100)
	in.Params.MinRate = 1000
	rep := Validate(in)
	if rep.Verdict != Invalid || rep.Verdict.ExitCode() != 3 || rep.Results[0].Status() != "INVALID" {
		t.Fatalf("verdict %s: %s", rep.Verdict, rep.Results[0])
	}
	// An anomaly in an invalid run is still red.
	in.Replicas[0].Hash = "different"
	if rep := Validate(in); rep.Verdict != Red {
		t.Fatalf("verdict %s", rep.Verdict)
	}
}

// BenchmarkValidate5Min: every checker over a synthetic 5-minute history of
// 60k operations (200 ops/s), including porcupine on ~6k users ops.
func BenchmarkValidate5Min(b *testing.B) {
	in := synthRun(5, 300, 200)
	b.ReportMetric(float64(len(in.Ops)), "ops")
	b.ResetTimer()
	for b.Loop() {
		rep := Validate(in)
		if rep.Verdict != Green {
			b.Fatalf("verdict %s", rep.Verdict)
		}
	}
}
