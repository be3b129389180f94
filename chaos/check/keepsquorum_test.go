package check

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/node"
)

// KeepsQuorum passes allowlist blinks within the budget and fails any
// quorum denial, a failed probe, or blinks past the budget.
func TestKeepsQuorum(t *testing.T) {
	base := time.Date(2026, 12, 6, 13, 0, 0, 0, time.UTC)
	tl := func(bad map[int]string) chaos.Timeline {
		out := chaos.Timeline{Node: "a"}
		for i := range 101 { // 10 s at 100 ms
			p := chaos.Probe{At: base.Add(time.Duration(i) * 100 * time.Millisecond), Code: 200, Health: node.Health{Status: "ok"}}
			if r, ok := bad[i]; ok {
				p.Code, p.Health = 503, node.Health{Status: "unavailable", Reason: r}
			}
			out.Probes = append(out.Probes, p)
		}
		return out
	}
	stale := "allowlist stale: nodes [b] reached the users stream leader while this node has not for 1.3s"
	for _, c := range []struct {
		name string
		bad  map[int]string
		ok   bool
	}{
		{"all 200", nil, true},
		{"two allowlist blinks", map[int]string{40: stale, 41: stale}, true},
		{"allowlist blinks past the budget", func() map[int]string {
			m := map[int]string{}
			for i := 10; i < 40; i++ {
				m[i] = stale
			}
			return m
		}(), false},
		{"one quorum denial", map[int]string{50: "no quorum: last replicated write 12.1s ago exceeds the 12s election grace"}, false},
		{"quorum and allowlist together", map[int]string{50: "no quorum: 0 of 2 peers reachable (need 1); " + stale}, false},
		{"buckets not open", map[int]string{50: "control-plane buckets not open yet"}, false},
	} {
		r := KeepsQuorum(tl(c.bad), 9*time.Second, 2*time.Second)
		if r.OK != c.ok {
			t.Errorf("%s: OK = %v, want %v (%v)", c.name, r.OK, c.ok, r.Reasons)
		}
	}
	failed := tl(nil)
	failed.Probes[20].Code, failed.Probes[20].Err = 0, errTest
	if r := KeepsQuorum(failed, 9*time.Second, 2*time.Second); r.OK {
		t.Errorf("a failed probe passed: %v", r.Reasons)
	}
	// A denial after the observer stalled (probes 45-49 missing) still fails, and says how late
	// its probe was (starvation of the process hosting the nodes).
	starved := tl(map[int]string{50: "no quorum: last replicated write 1.2s ago; 1 of 4 peers reachable (need 2)"})
	starved.Probes = append(starved.Probes[:45], starved.Probes[50:]...)
	if r := KeepsQuorum(starved, 9*time.Second, 2*time.Second); r.OK || !strings.Contains(fmt.Sprint(r.Reasons), "the probe before it 600ms earlier") {
		t.Errorf("denial after a 600 ms probe gap: OK=%v %v", r.OK, r.Reasons)
	}
}

var errTest = testErr("connection refused")

type testErr string

func (e testErr) Error() string { return string(e) }

// NeverDenied passes probe timeouts within the budget and fails any
// answered denial, a refused connection, or timeouts past the budget.
func TestNeverDenied(t *testing.T) {
	base := time.Date(2026, 12, 6, 13, 0, 0, 0, time.UTC)
	tl := func(bad map[int]chaos.Probe) chaos.Timeline {
		out := chaos.Timeline{Node: "a"}
		for i := range 101 { // 10 s at 100 ms
			p := chaos.Probe{Code: 200, Health: node.Health{Status: "ok"}}
			if b, ok := bad[i]; ok {
				p = b
			}
			p.At = base.Add(time.Duration(i) * 100 * time.Millisecond)
			out.Probes = append(out.Probes, p)
		}
		return out
	}
	timeout := chaos.Probe{Err: fmt.Errorf("get healthz: %w", context.DeadlineExceeded)}
	denied := chaos.Probe{Code: 503, Health: node.Health{Status: "unavailable", Reason: "no quorum: 0 of 2 peers reachable (need 1)"}}
	refused := chaos.Probe{Err: errTest}
	run := func(from, to int, p chaos.Probe) map[int]chaos.Probe {
		m := map[int]chaos.Probe{}
		for i := from; i < to; i++ {
			m[i] = p
		}
		return m
	}
	for _, c := range []struct {
		name string
		bad  map[int]chaos.Probe
		ok   bool
	}{
		{"all 200", nil, true},
		{"1.2 s of timeouts", run(30, 42, timeout), true},
		{"timeouts past the budget", run(10, 50, timeout), false},
		{"one 503", map[int]chaos.Probe{50: denied}, false},
		{"one refused connection", map[int]chaos.Probe{50: refused}, false},
	} {
		r := NeverDenied(tl(c.bad), 9*time.Second, 3*time.Second)
		if r.OK != c.ok {
			t.Errorf("%s: OK = %v, want %v (%v)", c.name, r.OK, c.ok, r.Reasons)
		}
	}
}
