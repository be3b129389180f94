package validate

import (
	"testing"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
)

// hist builds synthetic histories with ids in order.
type hist struct{ ops []history.Op }

func (h *hist) add(op history.Op) int64 {
	op.ID = int64(len(h.ops) + 1)
	if op.Process == "" {
		op.Process = "p1"
	}
	if op.Node == "" {
		op.Node = "n1"
	}
	if op.Outcome == "" {
		op.Outcome = history.OK
	}
	h.ops = append(h.ops, op)
	return op.ID
}

func op(kind history.Kind, key, value string, invoke, end int64, out history.Outcome) history.Op {
	return history.Op{Kind: kind, Key: key, Value: value, InvokeMS: invoke, EndMS: end, Outcome: out}
}

// ev is fault evidence with offsets (heal -1: never healed).
func ev(name string, nodes []string, start, injected, heal int64) fault.Evidence {
	end := int64(-1)
	if heal >= 0 {
		end = heal + 1000
	}
	return fault.Evidence{Fault: name, Nodes: nodes, Args: fault.Args{Nodes: nodes},
		StartMS: start, InjectedMS: injected, HealStartMS: heal, EndMS: end}
}

func kinds(r Result) map[string]int {
	m := map[string]int{}
	for _, a := range r.Anomalies {
		m[a.Kind]++
	}
	return m
}

func wantPass(t *testing.T, r Result) {
	t.Helper()
	if !r.OK || !r.Valid {
		t.Fatalf("want PASS, got %s; anomalies %+v", r, r.Anomalies)
	}
}

func wantFail(t *testing.T, r Result, kind string) {
	t.Helper()
	if r.OK || r.Status() != "FAIL" || kinds(r)[kind] == 0 {
		t.Fatalf("want FAIL with %s, got %s; anomalies %+v", kind, r, r.Anomalies)
	}
}

func wantInvalid(t *testing.T, r Result) {
	t.Helper()
	if r.OK || r.Valid || r.Status() != "INVALID" {
		t.Fatalf("want INVALID, got %s", r)
	}
}
