package validate

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
)

const (
	keyA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	keyB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func uop(kind history.Kind, key, value string, invoke, end int64, out history.Outcome, errText string) history.Op {
	o := op(kind, key, value, invoke, end, out)
	o.Error = errText
	return o
}

func lin(t *testing.T, ops ...history.Op) LinearizabilityResult {
	t.Helper()
	h := &hist{}
	for i, o := range ops {
		if o.Process == "" {
			o.Process = []string{"w1", "w2", "w3"}[i%3]
		}
		h.add(o)
	}
	return Linearizability(h.ops, nil, 10*time.Second)
}

func TestLinearizableClean(t *testing.T) {
	r := lin(t,
		uop(history.UserGet, keyA, "", 0, 5, history.OK, ""),
		uop(history.UserAdd, keyA, "", 10, 20, history.OK, ""),
		uop(history.UserGet, keyA, "active", 25, 30, history.OK, ""),
		uop(history.UserAdd, keyA, "", 31, 40, history.Failed, "user "+keyA+": already registered"),
		uop(history.UserRevoke, keyA, "", 41, 50, history.OK, ""),
		uop(history.UserRevoke, keyA, "", 51, 55, history.OK, ""), // revoking a revoked user is ok
		uop(history.UserGet, keyA, "revoked", 56, 60, history.OK, ""),
		uop(history.UserAdd, keyA, "", 61, 70, history.OK, ""), // re-add over revoked
		uop(history.UserGet, keyA, "active", 71, 80, history.OK, ""),
		uop(history.UserRevoke, keyB, "", 0, 10, history.Failed, "user "+keyB+": no such user"),
		uop(history.UserGet, keyB, "", 11, 12, history.Failed, "user "+keyB+": no such user"),
		// Concurrent add and get: either order.
		uop(history.UserAdd, keyB, "", 20, 40, history.OK, ""),
		uop(history.UserGet, keyB, "", 21, 30, history.OK, ""),
	)
	wantPass(t, r.Result)
	if r.Check != porcupine.Ok || r.Counts["checked"] != 13 {
		t.Fatalf("check %s counts %v", r.Check, r.Counts)
	}
}

func TestLinearizableUnknownIsMaybeApplied(t *testing.T) {
	// Applied long after it timed out: a get sees it absent, a later one active.
	late := lin(t,
		uop(history.UserAdd, keyA, "", 0, 2000, history.Unknown, "timeout"),
		uop(history.UserGet, keyA, "", 2100, 2200, history.OK, ""),
		uop(history.UserGet, keyA, "active", 5000, 5100, history.OK, ""),
	)
	wantPass(t, late.Result)
	if late.Counts["maybe-applied"] != 1 {
		t.Fatalf("counts %v", late.Counts)
	}
	// Never applied.
	wantPass(t, lin(t,
		uop(history.UserAdd, keyA, "", 0, 2000, history.Unknown, "timeout"),
		uop(history.UserGet, keyA, "", 9000, 9100, history.OK, ""),
	).Result)
	// An unknown revoke that may have happened, then a get reading revoked.
	wantPass(t, lin(t,
		uop(history.UserAdd, keyA, "", 0, 10, history.OK, ""),
		uop(history.UserRevoke, keyA, "", 20, 2020, history.Unknown, "timeout"),
		uop(history.UserGet, keyA, "active", 2100, 2200, history.OK, ""),
		uop(history.UserGet, keyA, "revoked", 3000, 3100, history.OK, ""),
	).Result)
}

func TestLinearizableFailedAndUnknownReadsDropped(t *testing.T) {
	r := lin(t,
		uop(history.UserAdd, keyA, "", 0, 10, history.Failed, "no quorum"),
		uop(history.UserGet, keyA, "", 20, 30, history.OK, ""),
		uop(history.UserGet, keyA, "garbage", 20, 3000, history.Unknown, "timeout"),
	)
	wantPass(t, r.Result)
	if r.Counts["dropped"] != 2 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestNotLinearizable(t *testing.T) {
	cases := map[string][]history.Op{
		"stale read after add": {
			uop(history.UserAdd, keyA, "", 0, 10, history.OK, ""),
			uop(history.UserGet, keyA, "", 20, 30, history.OK, ""),
		},
		"revoke forgotten": {
			uop(history.UserAdd, keyA, "", 0, 10, history.OK, ""),
			uop(history.UserRevoke, keyA, "", 20, 30, history.OK, ""),
			uop(history.UserGet, keyA, "active", 40, 50, history.OK, ""),
		},
		"two adds both ok": {
			uop(history.UserAdd, keyA, "", 0, 10, history.OK, ""),
			uop(history.UserAdd, keyA, "", 5, 15, history.OK, ""),
		},
		"revoke of an absent key ok": {
			uop(history.UserRevoke, keyA, "", 0, 10, history.OK, ""),
		},
		"already registered before any add": {
			uop(history.UserAdd, keyA, "", 0, 10, history.Failed, "user "+keyA+": already registered"),
		},
		"no such user after an add": {
			uop(history.UserAdd, keyA, "", 0, 10, history.OK, ""),
			uop(history.UserRevoke, keyA, "", 20, 30, history.Failed, "user "+keyA+": no such user"),
		},
		"unknown add cannot explain a read before it": {
			uop(history.UserGet, keyA, "active", 0, 10, history.OK, ""),
			uop(history.UserAdd, keyA, "", 20, 2020, history.Unknown, "timeout"),
		},
	}
	for name, ops := range cases {
		t.Run(name, func(t *testing.T) {
			// keyB's clean history alongside: only keyA is named.
			ops = append(ops,
				uop(history.UserAdd, keyB, "", 0, 10, history.OK, ""),
				uop(history.UserGet, keyB, "active", 20, 30, history.OK, ""))
			r := lin(t, ops...)
			wantFail(t, r.Result, "not-linearizable")
			if r.Check != porcupine.Illegal || r.Counts["illegal-keys"] != 1 || !strings.Contains(r.Anomalies[0].Detail, keyA) {
				t.Fatalf("check %s counts %v anomalies %+v", r.Check, r.Counts, r.Anomalies)
			}
		})
	}
}

func TestLinearizabilityNoOpsInvalid(t *testing.T) {
	r := Linearizability(nil, nil, time.Second)
	wantInvalid(t, r.Result)
	if err := r.WriteVisualization(&bytes.Buffer{}); err == nil {
		t.Fatal("visualizing a check that never ran should fail")
	}
}

func TestVisualizationMarksFaults(t *testing.T) {
	h := &hist{}
	h.add(uop(history.UserAdd, keyA, "", 0, 10, history.OK, ""))
	h.add(uop(history.UserGet, keyA, "", 20, 30, history.OK, "")) // stale: illegal
	h.add(uop(history.UserAdd, keyB, "", 0, 3000, history.Unknown, "timeout"))
	faults := []fault.Evidence{ev("partition", []string{"n2"}, 5, 8, 25), ev("kill", []string{"n3"}, 40, -1, -1)}
	r := Linearizability(h.ops, faults, time.Second)
	var b bytes.Buffer
	if err := r.WriteVisualization(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{"<html", "partition n2", "kill n3", "faults", "never confirmed"} {
		if !strings.Contains(page, want) {
			t.Errorf("visualization lacks %q", want)
		}
	}
}
