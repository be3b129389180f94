package nemesis

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/unibus/clusterkit/chaos/history"
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

// The minimal checker: an acked message missing from the final read is a
// lost write and the run is red; an unknown one is not.
func TestJudgeLostAckedWrite(t *testing.T) {
	var ops []history.Op
	for i := range 1000 {
		ops = append(ops, history.Op{ID: int64(i), Kind: history.Health, Value: "200", Outcome: history.OK, InvokeMS: int64(i), EndMS: int64(i)})
	}
	ops = append(ops,
		history.Op{ID: 2001, Kind: history.Publish, Key: "ROOM_a", Value: "r-1", Outcome: history.OK, EndMS: 10},
		history.Op{ID: 2002, Kind: history.Publish, Key: "ROOM_a", Value: "r-2", Outcome: history.OK, EndMS: 20},
		history.Op{ID: 2003, Kind: history.Publish, Key: "ROOM_a", Value: "r-3", Outcome: history.Unknown, EndMS: 30},
	)
	reads := []FinalRead{{Stream: "ROOM_a", IDs: map[string]uint64{"r-1": 1}}}
	als := Allowlists{Converged: true}
	v := judge(ops, 5000, 10000, reads, Replicas{Converged: true}, als, nil)
	if v.Status != Red || len(v.Anomalies) != 1 || v.Anomalies[0].Kind != "lost-acked-writes" || v.Anomalies[0].Count != 1 {
		t.Fatalf("want red with one lost write (r-2), got %+v", v)
	}
	reads[0].IDs["r-2"] = 2
	if v := judge(ops, 5000, 10000, reads, Replicas{Converged: true}, als, nil); v.Status != Green {
		t.Fatalf("want green, got %+v", v)
	}
	if v := judge(ops[:10], 5000, 10000, reads, Replicas{Converged: true}, als, nil); v.Status != Invalid {
		t.Fatalf("a trickle of traffic must be invalid, got %s", v.Status)
	}
	bad := append(append([]history.Op{}, ops...), history.Op{ID: 3000, Kind: history.Request, Key: "GET /v1/me", Value: "replay", Outcome: history.OK})
	if v := judge(bad, 5000, 10000, reads, Replicas{Converged: true}, als, nil); v.Status != Red || v.Anomalies[0].Kind != "replay-accepted" {
		t.Fatalf("an accepted replay must be red, got %+v", v)
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
	var ops []history.Op
	for i := range 1000 {
		ops = append(ops, history.Op{ID: int64(i), Kind: history.Health, Value: "200", Outcome: history.OK, EndMS: int64(i)})
	}
	ops = append(ops, history.Op{ID: 2001, Kind: history.Publish, Key: "ROOM_a", Value: "r-1", Outcome: history.OK, EndMS: 10})
	v := judge(ops, 5000, 10000, []FinalRead{{Stream: "ROOM_a", Missing: true, IDs: map[string]uint64{}}}, Replicas{Converged: true}, Allowlists{Converged: true}, nil)
	if v.Status != Red || v.Anomalies[0].Kind != "lost-acked-writes" || v.Anomalies[0].Count != 1 {
		t.Fatalf("want red with r-1 lost, got %+v", v)
	}
}
