package validate

import (
	"strings"
	"testing"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
)

// steady: n ok ops per second for secs seconds.
func steady(perSec, secs int) *hist {
	h := &hist{}
	for i := 0; i < perSec*secs; i++ {
		t := int64(i * 1000 / perSec)
		h.add(op(history.Health, "", "200", t, t+5, history.OK))
	}
	return h
}

func TestValidityClean(t *testing.T) {
	h := steady(50, 10)
	r := Validity(h.ops, []fault.Evidence{ev("kill", []string{"n1"}, 5000, 5300, 7000)}, 20)
	wantPass(t, r)
	if r.Counts["rate-before-first-fault"] < 45 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestValidityLowRate(t *testing.T) {
	r := Validity(steady(5, 10).ops, []fault.Evidence{ev("kill", []string{"n1"}, 5000, 5300, 7000)}, 20)
	wantInvalid(t, r)
}

func TestValidityFaultTooEarly(t *testing.T) {
	wantInvalid(t, Validity(steady(50, 10).ops, []fault.Evidence{ev("kill", []string{"n1"}, 500, 600, 7000)}, 20))
}

func TestValidityUnconfirmedFault(t *testing.T) {
	h := steady(50, 10)
	wantInvalid(t, Validity(h.ops, []fault.Evidence{ev("kill", []string{"n1"}, 5000, -1, 7000)}, 20))
	e := ev("kill", []string{"n1"}, 5000, 5300, 7000)
	e.Error = "inject: permission denied"
	wantInvalid(t, Validity(h.ops, []fault.Evidence{e}, 20))
}

func TestValidityEmpty(t *testing.T) {
	wantInvalid(t, Validity(nil, nil, 1))
}

func TestValidityRequiresEachWorkload(t *testing.T) {
	h := &hist{}
	for i := int64(0); i < 100; i++ {
		h.add(op(history.Health, "", "200", i*50, i*50+10, history.OK))
	}
	h.add(op(history.Publish, "room", "m-1", 100, 110, history.OK))
	faults := []fault.Evidence{ev("kill", []string{"n1"}, 5000, 5100, 8000)}
	r := newResult("validity")
	requireKinds(&r, h.ops, faults, []history.Kind{history.Health, history.Publish})
	wantPass(t, r)
	requireKinds(&r, h.ops, faults, []history.Kind{history.Health, history.UserAdd})
	wantInvalid(t, r)
	if !strings.Contains(r.Reasons[0], "user-add") {
		t.Fatalf("reason %q does not name the missing workload", r.Reasons[0])
	}
}
