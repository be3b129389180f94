package validate

import (
	"testing"
	"time"
)

func convIn(n3 ...AllowlistSnapshot) ConvergenceInput {
	in := ConvergenceInput{Nodes: three, Want: []string{keyA, keyB}, HealMS: 10000}
	for _, n := range []string{"n1", "n2"} {
		in.Snapshots = append(in.Snapshots,
			AllowlistSnapshot{Node: n, AtMS: 10100, Active: []string{keyB, keyA}},
			AllowlistSnapshot{Node: n, AtMS: 11000, Active: []string{keyA, keyB}})
	}
	in.Snapshots = append(in.Snapshots, n3...)
	return in
}

func TestConvergenceClean(t *testing.T) {
	r := Convergence(convIn(
		AllowlistSnapshot{Node: "n3", AtMS: 10100, Active: []string{keyA}},
		AllowlistSnapshot{Node: "n3", AtMS: 10500, Error: "timeout"},
		AllowlistSnapshot{Node: "n3", AtMS: 12000, Active: []string{keyA, keyB}},
	), 5*time.Second)
	wantPass(t, r)
	if r.Counts["slowest-ms"] != 2000 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestConvergenceNeverConverged(t *testing.T) {
	r := Convergence(convIn(
		AllowlistSnapshot{Node: "n3", AtMS: 10100, Active: []string{keyA, keyB}},
		AllowlistSnapshot{Node: "n3", AtMS: 12000, Active: []string{keyA, keyB, "cccc"}},
	), 5*time.Second)
	wantFail(t, r, "not-converged")
}

func TestConvergenceLate(t *testing.T) {
	r := Convergence(convIn(
		AllowlistSnapshot{Node: "n3", AtMS: 10100, Active: []string{keyA}},
		AllowlistSnapshot{Node: "n3", AtMS: 16000, Active: []string{keyA, keyB}},
	), 5*time.Second)
	wantFail(t, r, "converged-late")
}

func TestConvergenceUnreadNodeInvalid(t *testing.T) {
	wantInvalid(t, Convergence(convIn(AllowlistSnapshot{Node: "n3", AtMS: 10100, Error: "refused"}), 5*time.Second))
	wantInvalid(t, Convergence(ConvergenceInput{}, time.Second))
}

// Nodes that report only a digest of their allowlist are compared by it.
func TestConvergenceByDigest(t *testing.T) {
	in := ConvergenceInput{Nodes: []string{"n1", "n2"}, WantHash: "abc", HealMS: 1000, Snapshots: []AllowlistSnapshot{
		{Node: "n1", AtMS: 1500, Hash: "abc"},
		{Node: "n2", AtMS: 1500, Hash: "old"},
		{Node: "n2", AtMS: 2500, Hash: "abc"},
	}}
	r := Convergence(in, 30*time.Second)
	wantPass(t, r)
	if r.Counts["slowest-ms"] != 1500 {
		t.Fatalf("counts %v", r.Counts)
	}
	in.Snapshots = append(in.Snapshots, AllowlistSnapshot{Node: "n1", AtMS: 3000, Hash: "other"})
	wantFail(t, Convergence(in, 30*time.Second), "not-converged")
}
