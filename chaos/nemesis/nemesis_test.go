package nemesis

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
	"github.com/unibus/clusterkit/chaos/validate"
)

// One seed, one plan: the schedule a seed draws does not depend on
// anything else.
func TestPlannerDeterministic(t *testing.T) {
	faults := []string{"kill", "pause", "partition", "one-way", "part-kill", "latency", "isolate-leader"}
	nodes := []string{"n1", "n2", "n3"}
	a, b, c := newPlanner(7, faults, nodes), newPlanner(7, faults, nodes), newPlanner(8, faults, nodes)
	same := true
	for range 50 {
		x, y, z := a.next(), b.next(), c.next()
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("seed 7 drew %+v then %+v", x, y)
		}
		same = same && reflect.DeepEqual(x, z)
		if x.QuietMS < quietMin.Milliseconds() || x.QuietMS > quietMax.Milliseconds() || x.HoldMS < holdMin.Milliseconds() || x.HoldMS > holdMax.Milliseconds() {
			t.Fatalf("step out of bounds: %+v", x)
		}
		if x.Fault == "part-kill" && (len(x.Args.Nodes) != 2 || x.Args.Nodes[0] == x.Args.Nodes[1]) {
			t.Fatalf("part-kill needs two distinct nodes: %+v", x.Args)
		}
	}
	if same {
		t.Fatal("seeds 7 and 8 drew the same 50 steps")
	}
}

func TestLoadScheduleRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(s Schedule) string {
		b, _ := json.Marshal(s)
		p := filepath.Join(dir, "s.json")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := LoadSchedule(write(Schedule{DurationMS: 1000, Steps: []Step{{Fault: "nope"}}})); err == nil {
		t.Fatal("unknown fault accepted")
	}
	if _, err := LoadSchedule(write(Schedule{DurationMS: 1000, Steps: []Step{{Fault: "kill", InjectMS: 500, HealMS: 100}}})); err == nil {
		t.Fatal("heal before inject accepted")
	}
	s, err := LoadSchedule(write(Schedule{Seed: 7, DurationMS: 60000, Steps: []Step{{Fault: "kill", InjectMS: 5000, HealMS: 9000}}}))
	if err != nil || s.Seed != 7 || len(s.Steps) != 1 {
		t.Fatalf("good schedule: %+v, %v", s, err)
	}
}

func result(t *testing.T, v Verdict, name string) validate.Result {
	t.Helper()
	for _, r := range v.Report.Results {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no %s result in %+v", name, v.Report.Results)
	return validate.Result{}
}

// judgeOps: health traffic, then two acked publishes and an unknown one
// to ROOM_a, with the final read of ROOM_a as drain ops.
func judgeOps(read FinalRead) []history.Op {
	var ops []history.Op
	for i := range 1000 {
		ops = append(ops, history.Op{ID: int64(i + 1), Kind: history.Health, Value: "200", Outcome: history.OK, InvokeMS: int64(i), EndMS: int64(i)})
	}
	ops = append(ops,
		history.Op{ID: 2001, Kind: history.Publish, Key: "ROOM_a", Value: "r-1", Outcome: history.OK, EndMS: 10},
		history.Op{ID: 2002, Kind: history.Publish, Key: "ROOM_a", Value: "r-2", Outcome: history.OK, EndMS: 20},
		history.Op{ID: 2003, Kind: history.Publish, Key: "ROOM_a", Value: "r-3", Outcome: history.Unknown, EndMS: 30},
	)
	for i, op := range drainOps([]FinalRead{read}, "n1") {
		op.ID = int64(3000 + i)
		ops = append(ops, op)
	}
	return ops
}

// An acked message missing from the final read is a lost write, named by
// its publish op; an unknown one is not; an accepted replay is red.
func TestJudgeLostAckedWrite(t *testing.T) {
	read := FinalRead{Stream: "ROOM_a", LastSeq: 1, Order: []IDSeq{{"r-1", 1}}}
	v := judge(judgeInput{ops: judgeOps(read), firstFault: 5000, durationMS: 10000})
	q := result(t, v, "queue")
	if v.Status != validate.Red || q.OK || q.Counts["lost"] != 1 || q.Anomalies[0].OpIDs[0] != 2002 {
		t.Fatalf("want red with one lost write (r-2, op 2002), got %s: %s %+v", v.Status, q, q.Anomalies)
	}
	read.Order = append(read.Order, IDSeq{"r-2", 2})
	v = judge(judgeInput{ops: judgeOps(read), firstFault: 5000, durationMS: 10000})
	if q := result(t, v, "queue"); !q.OK || q.Counts["drained-streams"] != 1 {
		t.Fatalf("want the queue green, got %s", q)
	}
	bad := append(judgeOps(read), history.Op{ID: 9000, Kind: history.Request, Key: "GET /v1/me", Value: "replay", Outcome: history.OK})
	v = judge(judgeInput{ops: bad, firstFault: 5000, durationMS: 10000})
	if a := result(t, v, "admission"); v.Status != validate.Red || a.OK {
		t.Fatalf("an accepted replay must be red, got %s", a)
	}
}

// What the nemesis saw itself (a fault that never recovered) is red.
func TestJudgeRunFailures(t *testing.T) {
	read := FinalRead{Stream: "ROOM_a", LastSeq: 2, Order: []IDSeq{{"r-1", 1}, {"r-2", 2}}}
	v := judge(judgeInput{ops: judgeOps(read), firstFault: 5000, durationMS: 10000, red: []string{"kill n1: not recovered"}})
	if r := result(t, v, "nemesis"); v.Status != validate.Red || r.OK {
		t.Fatalf("want red, got %s %s", v.Status, r)
	}
}

// The mapping of replicas.json leaves the heartbeats out; a node with no
// allowlist summary is no evidence of convergence.
func TestJudgeInputs(t *testing.T) {
	rs := streamReplicas(Replicas{Replicas: []Replica{{Node: "n1", Stream: "ROOM_a"}, {Node: "n1", Stream: movingStream}}})
	if len(rs) != 1 || rs[0].Stream != "ROOM_a" {
		t.Fatalf("replicas %+v", rs)
	}
	ci := convergenceInput(Allowlists{Snapshots: []validate.AllowlistSnapshot{{Node: "n1", AtMS: 1, Error: "no summary"}}}, []string{"n1"}, 0)
	if r := validate.Convergence(ci, time.Second); r.Valid {
		t.Fatalf("a node without a digest must not converge: %s", r)
	}
}

func TestDiverged(t *testing.T) {
	rs := []Replica{
		{Node: "n1", Stream: "ROOM_a", Msgs: 5, LastSeq: 5},
		{Node: "n2", Stream: "ROOM_a", Msgs: 4, LastSeq: 4},
		{Node: "n1", Stream: movingStream, Msgs: 3, LastSeq: 9},
		{Node: "n2", Stream: movingStream, Msgs: 3, LastSeq: 8},
	}
	if d := diverged(rs); len(d) != 1 {
		t.Fatalf("want ROOM_a only, got %v", d)
	}
}

// A stream the cluster forgot loses every acked message in it.
func TestJudgeMissingStream(t *testing.T) {
	v := judge(judgeInput{ops: judgeOps(FinalRead{Stream: "ROOM_a", Missing: true}), firstFault: 5000, durationMS: 10000})
	if q := result(t, v, "queue"); v.Status != validate.Red || q.Counts["lost"] != 2 || q.Counts["lost-postfix"] != 2 {
		t.Fatalf("want red with r-1 and r-2 lost, got %s", q)
	}
}

// A replay must inject the recorded faults, with their args, in order, at
// the recorded offsets within a second.
func TestReplayCheck(t *testing.T) {
	rec := []Step{
		{Fault: "kill", Args: fault.Args{Nodes: []string{"n2"}}, InjectMS: 10000, HealMS: 16000},
		{Fault: "pause", Args: fault.Args{Nodes: []string{"n1"}}, InjectMS: 24000, HealMS: 34000},
	}
	got := append([]Step(nil), rec...)
	got[1].InjectMS += 900
	if _, ok := replayCheck(rec, got); !ok {
		t.Fatal("900 ms off must pass")
	}
	got[1].HealMS += 1200
	if text, ok := replayCheck(rec, got); ok {
		t.Fatalf("1200 ms off must fail: %s", text)
	}
	got = append([]Step(nil), rec...)
	got[0].Args = fault.Args{Nodes: []string{"n3"}}
	if _, ok := replayCheck(rec, got); ok {
		t.Fatal("another victim must fail")
	}
	if _, ok := replayCheck(rec, rec[:1]); ok {
		t.Fatal("a missing step must fail")
	}
}
