package validate

import (
	"math"
	"testing"
	"time"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
)

var three = []string{"n1", "n2", "n3"}

func TestCutOff(t *testing.T) {
	five := []string{"n1", "n2", "n3", "n4", "n5"}
	cases := []struct {
		name   string
		nodes  []string
		faults []fault.Evidence
		want   map[string][2]int64 // node -> [start, end]
	}{
		{"minority partition", three, []fault.Evidence{ev("partition", []string{"n1"}, 1000, 1200, 5000)},
			map[string][2]int64{"n1": {1000, 5000}}},
		{"one-way like a partition", three, []fault.Evidence{ev("one-way", []string{"n1"}, 1000, 1200, 5000)},
			map[string][2]int64{"n1": {1000, 5000}}},
		{"majority side A", five, []fault.Evidence{ev("partition", []string{"n1", "n2", "n3"}, 1000, 1200, 5000)},
			map[string][2]int64{"n4": {1000, 5000}, "n5": {1000, 5000}}},
		{"one kill leaves a majority", three, []fault.Evidence{ev("kill", []string{"n1"}, 1000, 1200, 5000)}, nil},
		{"two kills leave one alone", three, []fault.Evidence{ev("kill", []string{"n1", "n2"}, 1000, 1200, 5000)},
			map[string][2]int64{"n3": {1000, 5000}}},
		{"overlap kill and partition", three, []fault.Evidence{
			ev("kill", []string{"n1"}, 1000, 1200, 5000),
			ev("partition", []string{"n2"}, 3000, 3200, 8000)},
			map[string][2]int64{"n2": {3000, 8000}, "n3": {3000, 5000}}},
		{"part-kill of three", three, []fault.Evidence{ev("part-kill", []string{"n1", "n2"}, 1000, 1200, 5000)},
			map[string][2]int64{"n2": {1000, 5000}, "n3": {1000, 5000}}},
		{"never healed", three, []fault.Evidence{ev("partition", []string{"n1"}, 1000, 1200, -1)},
			map[string][2]int64{"n1": {1000, math.MaxInt64}}},
		{"latency cuts nothing", three, []fault.Evidence{ev("latency", []string{"n1"}, 1000, 1200, 5000)}, nil},
		{"restart is not down", three, []fault.Evidence{
			ev("restart", []string{"n1"}, 1000, 1200, 5000), ev("kill", []string{"n2"}, 1000, 1200, 5000)}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := CutOff(tc.nodes, tc.faults)
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %v", got, tc.want)
			}
			for _, iv := range got {
				w, ok := tc.want[iv.Node]
				if !ok || iv.StartMS != w[0] || iv.EndMS != w[1] {
					t.Fatalf("got %+v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestCutOffPartitionWithRest(t *testing.T) {
	// n1 | n2 with n3 reaching both: n1 is in a group of three (via n3).
	e := ev("partition", []string{"n1"}, 1000, 1200, 5000)
	e.Args.Rest = []string{"n2"}
	if got := CutOff(three, []fault.Evidence{e}); len(got) != 0 {
		t.Fatalf("a relayed node is not cut off: %+v", got)
	}
}

// failClosedHist: n1 is partitioned from 1000 to 10000; clients probe every
// node every 500 ms; n1 refuses with status from, before a deadline.
func failClosedHist(refuseFrom int64) (*hist, []fault.Evidence) {
	h := &hist{}
	for t := int64(0); t < 12000; t += 500 {
		for _, n := range three {
			ok := n != "n1" || t < refuseFrom || t >= 10000
			code, out := "200", history.OK
			if !ok {
				code, out = "503", history.Failed
			}
			o := op(history.Health, "", code, t, t+50, history.OK)
			o.Node = n
			h.add(o)
			c := op(history.Connect, keyA, "registered", t+100, t+150, out)
			c.Node = n
			h.add(c)
			p := op(history.Publish, "room", "m", t+200, t+250, out)
			p.Node = n
			h.add(p)
		}
	}
	return h, []fault.Evidence{ev("partition", []string{"n1"}, 1000, 1300, 10000)}
}

func TestFailClosedClean(t *testing.T) {
	h, faults := failClosedHist(2500) // refuses 1.5 s after the inject call
	r := FailClosed(h.ops, three, faults, 2*time.Second)
	wantPass(t, r)
	if r.Counts["probed-while-cut-off"] == 0 || r.Counts["cut-off-windows"] != 1 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestFailClosedServingPastDeadline(t *testing.T) {
	h, faults := failClosedHist(4000) // still serving 3 s after the inject call
	r := FailClosed(h.ops, three, faults, 2*time.Second)
	wantFail(t, r, "served-while-cut-off")
	// health at 3000, 3500; connect 3100, 3600; publish 3200, 3700
	if r.Counts["violations"] != 6 || len(r.Anomalies) != 3 {
		t.Fatalf("counts %v anomalies %+v", r.Counts, r.Anomalies)
	}
}

func TestFailClosedOpStraddlingTheHealIsNotJudged(t *testing.T) {
	_, faults := failClosedHist(0)
	h := &hist{}
	o := op(history.Connect, keyA, "", 9000, 10500, history.OK)
	h.add(o)
	o = op(history.UserAdd, keyA, "", 2000, 3500, history.OK) // began before the deadline
	h.add(o)
	wantPass(t, FailClosed(h.ops, three, faults, 2*time.Second))
	h.add(op(history.UserAdd, keyA, "", 3001, 3500, history.OK))
	wantFail(t, FailClosed(h.ops, three, faults, 2*time.Second), "served-while-cut-off")
}

func TestFailClosedNoNodesInvalid(t *testing.T) {
	wantInvalid(t, FailClosed(nil, nil, nil, time.Second))
}
