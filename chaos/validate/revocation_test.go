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

// A signed request is judged by its signer (Op.Signer), not its Key
// ("METHOD PATH", as the nemesis records it).
func TestRevocationRequestsCountBySigner(t *testing.T) {
	h := revHist(6500)
	req := op(history.Request, "GET /v1/me", "", 9000, 9100, history.OK)
	req.Signer = keyA
	h.add(req)
	r := Revocation(h.ops, 2*time.Second)
	wantFail(t, r, "revoked-admitted")
	if r.Anomalies[0].OpIDs[len(r.Anomalies[0].OpIDs)-1] != int64(len(h.ops)) {
		t.Fatalf("anomaly does not name the request: %+v", r.Anomalies)
	}
	// Another signer's request at the same time is no violation.
	h = revHist(6500)
	req.Signer = keyB
	h.add(req)
	wantPass(t, Revocation(h.ops, 2*time.Second))
	// A request without a signer names no identity, whatever its Key.
	h = revHist(6500)
	req.Signer, req.Key = "", keyA
	h.add(req)
	wantPass(t, Revocation(h.ops, 2*time.Second))
}

// A connect recorded with a Signer is judged by it; the revoked role marks
// the signer revoked before the run.
func TestRevocationConnectBySigner(t *testing.T) {
	h := &hist{}
	c := op(history.Connect, "", "revoked", 100, 140, history.Failed)
	c.Signer = keyB
	h.add(c)
	wantPass(t, Revocation(h.ops, 2*time.Second))
	c = op(history.Connect, "", "registered", 200, 240, history.OK)
	c.Signer = keyB
	h.add(c)
	wantFail(t, Revocation(h.ops, 2*time.Second), "revoked-admitted")
}
