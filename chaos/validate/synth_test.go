package validate

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
)

// synthRun builds a clean run of secs seconds at about rate ops/s on three
// nodes: faults every 20 s from 10 s on (alternating a minority partition
// and a kill, 8 s each), rooms with numbered messages all received,
// linearizable users traffic on a few dozen keys (some writes unknown),
// health, connects and requests that cut-off nodes refuse within 1 s.
func synthRun(seed uint64, secs, rate int) Input {
	rng := rand.New(rand.NewPCG(seed, 7))
	var faults []fault.Evidence
	for t, i := int64(10000), 0; t+8000 < int64(secs)*1000; t, i = t+20000, i+1 {
		if i%2 == 0 {
			faults = append(faults, ev("partition", []string{three[i%3]}, t, t+300, t+8000))
		} else {
			faults = append(faults, ev("kill", []string{three[i%3]}, t, t+300, t+8000))
		}
	}
	cut := CutOff(three, faults)
	refusing := func(node string, t int64) bool {
		for _, c := range cut {
			if c.Node == node && t+2000 >= c.StartMS+1000 && t <= c.EndMS+500 {
				return true
			}
		}
		for _, e := range faults {
			if e.Fault == "kill" && e.Nodes[0] == node && t+2000 >= e.StartMS && t <= e.HealStartMS+500 {
				return true
			}
		}
		return false
	}
	var ops []history.Op
	addOp := func(o history.Op) {
		if o.Process == "" {
			o.Process = "p0"
		}
		ops = append(ops, o)
	}
	total := secs * rate
	// Users: simulate each key's state at each op's linearization point.
	type uev struct {
		op history.Op
		at int64 // linearization point
	}
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprintf("%064x", i+1)
	}
	var uevs []uev
	kinds := []history.Kind{history.UserAdd, history.UserRevoke, history.UserGet, history.UserGet}
	for i := 0; i < total/10; i++ {
		t := rng.Int64N(int64(secs) * 1000)
		lp := t + 1 + rng.Int64N(40)
		o := history.Op{Process: fmt.Sprintf("u%d", rng.IntN(8)), Node: three[rng.IntN(3)],
			Kind: kinds[rng.IntN(len(kinds))], Key: keys[rng.IntN(len(keys))], InvokeMS: t, EndMS: lp + 1 + rng.Int64N(40)}
		for refusing(o.Node, o.InvokeMS) {
			o.Node = three[rng.IntN(3)] // the workload's client fails over
		}
		uevs = append(uevs, uev{o, lp})
	}
	slices.SortFunc(uevs, func(a, b uev) int { return cmp.Compare(a.at, b.at) })
	state := map[string]string{}
	for _, u := range uevs {
		o, st := u.op, state[u.op.Key]
		unknown := o.Kind != history.UserGet && rng.IntN(20) == 0
		o.Outcome = history.OK
		switch o.Kind {
		case history.UserAdd:
			if st == stActive {
				o.Outcome, o.Error = history.Failed, "user "+o.Key+": already registered"
			}
			st = stActive
		case history.UserRevoke:
			if st == stAbsent {
				o.Outcome, o.Error = history.Failed, "user "+o.Key+": no such user"
			} else {
				st = stRevoked
			}
		case history.UserGet:
			o.Value = st
		}
		if unknown {
			o.Outcome, o.Error, o.EndMS = history.Unknown, "timeout", o.InvokeMS+2000
			if rng.IntN(2) == 0 {
				st = state[o.Key] // never applied
			}
		}
		state[o.Key] = st
		addOp(o)
	}
	// Rooms: messages published round-robin to healthy nodes, received.
	seq := map[string]uint64{}
	for i := 0; len(ops) < total*9/10; i++ {
		t := int64(i) * int64(secs) * 1000 / int64(total*4/10)
		room := fmt.Sprintf("ROOM_%d", i%4)
		node := three[i%3]
		id := fmt.Sprintf("probe%d-%d", i%4, i/4)
		if refusing(node, t) {
			addOp(history.Op{Process: "probe", Node: node, Kind: history.Publish, Key: room, Value: id, InvokeMS: t, EndMS: t + 5, Outcome: history.Failed, Error: "no responders"})
			continue
		}
		addOp(history.Op{Process: "probe", Node: node, Kind: history.Publish, Key: room, Value: id, InvokeMS: t, EndMS: t + 5, Outcome: history.OK})
		seq[room]++
		addOp(history.Op{Process: "probe", Node: node, Kind: history.Receive, Key: room, Value: id, Seq: seq[room], InvokeMS: t + 6, EndMS: t + 8, Outcome: history.OK})
	}
	// Health, connects, requests.
	for i := 0; len(ops) < total; i++ {
		t := int64(i) * int64(secs) * 1000 / int64(total/10)
		node := three[i%3]
		refuse := refusing(node, t)
		var o history.Op
		switch i % 4 {
		case 0, 1:
			o = history.Op{Kind: history.Health, Value: "200", Outcome: history.OK}
			if refuse {
				o.Value = "503"
			}
		case 2:
			o = history.Op{Kind: history.Connect, Key: keyA, Value: "registered", Outcome: history.OK}
			if i%8 == 2 {
				o.Key, o.Value, o.Outcome = keyB, "revoked", history.Failed
			}
		case 3:
			o = history.Op{Kind: history.Request, Key: "GET /v1/users", Outcome: history.OK}
		}
		if refuse && o.Outcome == history.OK && o.Kind != history.Health {
			o.Outcome, o.Error = history.Failed, "refused"
		}
		o.Process, o.Node, o.InvokeMS, o.EndMS = "prober", node, t, t+20
		addOp(o)
	}
	slices.SortStableFunc(ops, func(a, b history.Op) int { return cmp.Compare(a.InvokeMS, b.InvokeMS) })
	for i := range ops {
		ops[i].ID = int64(i + 1)
	}
	active := []string{}
	for k, st := range state {
		if st == stActive {
			active = append(active, k)
		}
	}
	end := int64(secs) * 1000
	var reps []StreamReplica
	var snaps []AllowlistSnapshot
	for _, n := range three {
		for room, s := range seq {
			reps = append(reps, StreamReplica{Node: n, Stream: room, FirstSeq: 1, LastSeq: s, Msgs: s, Bytes: s * 100, Hash: fmt.Sprint(s)})
		}
		snaps = append(snaps, AllowlistSnapshot{Node: n, AtMS: end + 500, Active: active})
	}
	return Input{
		Ops: ops, Faults: faults, Nodes: three, Replicas: reps,
		Allowlists: ConvergenceInput{Nodes: three, Want: active, HealMS: end, Snapshots: snaps},
		Params:     Params{MinRate: float64(rate) / 4, Replicas: 3, LinTimeout: time.Minute},
	}
}
