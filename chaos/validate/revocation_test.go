package validate

import (
	"testing"
	"time"

	"github.com/unibus/clusterkit/chaos/history"
)

// revHist: keyA added, revoked (op ends at 5000), then connects by keyA
// every 500 ms on every node; they succeed until okUntil.
func revHist(okUntil int64) *hist {
	h := &hist{}
	h.add(op(history.UserAdd, keyA, "", 0, 100, history.OK))
	h.add(op(history.UserRevoke, keyA, "", 4900, 5000, history.OK))
	for t := int64(1000); t < 12000; t += 500 {
		for _, n := range three {
			out := history.OK
			if t >= okUntil {
				out = history.Failed
			}
			c := op(history.Connect, keyA, "registered", t, t+40, out)
			c.Node = n
			h.add(c)
		}
	}
	return h
}

func TestRevocationClean(t *testing.T) {
	r := Revocation(revHist(6500).ops, 2*time.Second)
	wantPass(t, r)
	if r.Counts["revoked-identities"] != 1 || r.Counts["attempts-while-revoked"] == 0 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestRevocationAdmittedPastDeadline(t *testing.T) {
	r := Revocation(revHist(8000).ops, 2*time.Second)
	wantFail(t, r, "revoked-admitted")
	// 7000 and 7500 on three nodes.
	if r.Counts["violations"] != 6 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestRevocationReAddEndsTheWindow(t *testing.T) {
	h := revHist(6500)
	h.add(op(history.UserAdd, keyA, "", 9000, 9100, history.OK))
	ok := op(history.Connect, keyA, "registered", 9050, 9090, history.OK)
	h.add(ok)
	wantPass(t, Revocation(h.ops, 2*time.Second))
	// A definitely failed re-add changes nothing.
	h = revHist(6500)
	h.add(op(history.UserAdd, keyA, "", 9000, 9100, history.Failed))
	h.add(op(history.Connect, keyA, "registered", 9200, 9290, history.OK))
	wantFail(t, Revocation(h.ops, 2*time.Second), "revoked-admitted")
}

func TestRevocationRacingUnknownAddIsSkipped(t *testing.T) {
	h := revHist(8000)
	h.add(op(history.UserAdd, keyA, "", 4000, 6000, history.Unknown))
	r := Revocation(h.ops, 2*time.Second)
	wantPass(t, r)
	if r.Counts["ambiguous"] != 1 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestRevocationRevokedBeforeTheRun(t *testing.T) {
	h := &hist{}
	h.add(op(history.Connect, keyB, "revoked", 100, 140, history.Failed))
	wantPass(t, Revocation(h.ops, 2*time.Second))
	h.add(op(history.Connect, keyB, "revoked", 200, 240, history.OK))
	wantFail(t, Revocation(h.ops, 2*time.Second), "revoked-admitted")
}

func TestRevocationRequestsCount(t *testing.T) {
	h := revHist(6500)
	h.add(op(history.Request, keyA, "", 9000, 9100, history.OK))
	wantFail(t, Revocation(h.ops, 2*time.Second), "revoked-admitted")
}
