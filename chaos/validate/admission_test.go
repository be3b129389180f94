package validate

import (
	"testing"

	"github.com/unibus/clusterkit/chaos/history"
)

func TestAdmissionClean(t *testing.T) {
	h := &hist{}
	h.add(op(history.Connect, keyB, "unregistered", 100, 140, history.Failed))
	h.add(op(history.Request, "GET /v1/me", "", 200, 240, history.OK))
	h.add(op(history.Request, "GET /v1/me", "replay", 300, 340, history.Failed))
	h.add(op(history.Request, "GET /v1/me", "replay", 400, 2400, history.Unknown))
	r := Admission(h.ops)
	wantPass(t, r)
	if r.Counts["unregistered-attempts"] != 1 || r.Counts["replays"] != 2 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestAdmissionUnregisteredAdmitted(t *testing.T) {
	h := &hist{}
	h.add(op(history.Connect, keyB, "unregistered", 100, 140, history.Failed))
	id := h.add(op(history.Connect, keyB, "unregistered", 200, 240, history.OK))
	r := Admission(h.ops)
	wantFail(t, r, "unregistered-admitted")
	if ids := r.Anomalies[0].OpIDs; len(ids) != 1 || ids[0] != id {
		t.Fatalf("anomaly %+v: want op %d", r.Anomalies[0], id)
	}
}

func TestAdmissionReplayAccepted(t *testing.T) {
	h := &hist{}
	h.add(op(history.Request, "GET /v1/me", "", 200, 240, history.OK))
	h.add(op(history.Request, "GET /v1/me", "replay", 300, 340, history.OK))
	wantFail(t, Admission(h.ops), "replay-accepted")
}
