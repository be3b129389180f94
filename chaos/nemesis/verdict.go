package nemesis

import (
	"fmt"
	"slices"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
	"github.com/unibus/clusterkit/chaos/validate"
)

// Verdict is verdict.json: chaos/validate's report on the run, with the
// history's totals.
type Verdict struct {
	Status validate.Verdict `json:"status"`
	Seed   uint64           `json:"seed"`
	Stats  Stats            `json:"stats"`
	Report validate.Report  `json:"report"`
}

// ExitCode is the command's exit status: 0 green, 1 red, 3 invalid.
func (v Verdict) ExitCode() int { return v.Status.ExitCode() }

// Stats are the history's totals.
type Stats struct {
	Ops          int            `json:"ops"`
	DurationMS   int64          `json:"duration_ms"`
	OpsPerSecond float64        `json:"ops_per_second"`
	ByKind       map[string]int `json:"by_kind"`
	ByOutcome    map[string]int `json:"by_outcome"`
	// PreFaultOpsPerSecond: every op (ok or not) before the first fault.
	PreFaultOpsPerSecond float64 `json:"pre_fault_ops_per_second"`
}

// MinPreFaultRate is the ok traffic a run must reach before its first fault
// to be judged at all (ok ops per second, validate.Params.MinRate). The
// workloads make about 70 ok ops/s on 2 idle cores and the warm-up gate
// waits for each of them, so 10 fails only a run whose workloads stalled;
// requiredKinds keeps it from passing on health probes alone.
const MinPreFaultRate = 10.0

// requiredKinds: each workload must have an ok op before the first fault.
var requiredKinds = []history.Kind{history.Publish, history.Receive, history.UserGet, history.Connect, history.Request, history.Health}

// judgeInput is what a run hands the checkers.
type judgeInput struct {
	ops         []history.Op
	faults      []fault.Evidence
	nodes       []string
	firstFault  int64
	durationMS  int64
	reps        Replicas
	als         Allowlists
	healMS      int64
	red, invald []string
}

// judge runs chaos/validate on the run, adding what the nemesis saw itself
// (a fault that never recovered, a fault never observed, a cluster never
// healthy again) as the "nemesis" result.
func judge(in judgeInput) Verdict {
	rep := validate.Validate(validate.Input{
		Ops:        in.ops,
		Faults:     in.faults,
		Nodes:      in.nodes,
		Replicas:   streamReplicas(in.reps),
		Allowlists: convergenceInput(in.als, in.nodes, in.healMS),
		Params:     validate.Params{MinRate: MinPreFaultRate, Require: requiredKinds},
	})
	rep.Add(validate.RunResult("nemesis", in.red, in.invald))
	return Verdict{Status: rep.Verdict, Stats: stats(in.ops, in.firstFault, in.durationMS), Report: rep}
}

// streamReplicas maps replicas.json to the divergence checker's input:
// first/last sequence, count, bytes (each server's JSZ) and, where the
// target's stores could be read (process), the content hash of each
// node's own copy; on ssh Hash is empty and the content of each room is
// checked by the probes' deliveries. The heartbeats stream is left out
// (every node writes it every second).
func streamReplicas(r Replicas) []validate.StreamReplica {
	out := make([]validate.StreamReplica, 0, len(r.Replicas))
	for _, x := range r.Replicas {
		if x.Stream == movingStream {
			continue
		}
		out = append(out, validate.StreamReplica{Node: x.Node, Stream: x.Stream, FirstSeq: x.FirstSeq, LastSeq: x.LastSeq, Msgs: x.Msgs, Bytes: x.Bytes, Hash: x.Hash})
	}
	return out
}

// convergenceInput maps allowlists.json: every poll of every node's
// allowlist digest against the users bucket's.
func convergenceInput(a Allowlists, nodes []string, healMS int64) validate.ConvergenceInput {
	return validate.ConvergenceInput{Nodes: nodes, WantHash: a.KV.Hash, HealMS: healMS, Snapshots: a.Snapshots}
}

// drainOps are the final reads as history ops (history.Drain).
func drainOps(reads []FinalRead, node string) []history.Op {
	var out []history.Op
	for _, fr := range reads {
		for _, m := range fr.Order {
			out = append(out, history.Op{Process: "final-read", Node: node, Kind: history.Drain, Key: fr.Stream, Value: m.ID, Seq: m.Seq,
				InvokeMS: fr.StartMS, EndMS: fr.EndMS, Outcome: history.OK})
		}
		end := history.Op{Process: "final-read", Node: node, Kind: history.Drain, Key: fr.Stream, InvokeMS: fr.StartMS, EndMS: fr.EndMS, Outcome: history.OK}
		switch {
		case fr.Error != "":
			end.Outcome, end.Error = history.Failed, fr.Error
		case fr.Missing:
			end.Error = "the stream no longer exists: everything acked to it is lost"
		default:
			end.Error = fmt.Sprintf("read to sequence %d: %d messages", fr.LastSeq, len(fr.Order))
		}
		out = append(out, end)
	}
	return out
}

func stats(ops []history.Op, firstFaultMS, durationMS int64) Stats {
	s := Stats{Ops: len(ops), DurationMS: durationMS, ByKind: map[string]int{}, ByOutcome: map[string]int{}}
	pre := 0
	for _, op := range ops {
		s.ByKind[string(op.Kind)]++
		s.ByOutcome[string(op.Outcome)]++
		if firstFaultMS < 0 || op.EndMS < firstFaultMS {
			pre++
		}
	}
	if durationMS > 0 {
		s.OpsPerSecond = float64(len(ops)) / (float64(durationMS) / 1000)
	}
	preEnd := firstFaultMS
	if preEnd < 0 {
		preEnd = durationMS
	}
	if preEnd > 0 {
		s.PreFaultOpsPerSecond = float64(pre) / (float64(preEnd) / 1000)
	}
	return s
}

// kindsSeen: the required kinds with an ok op in ops.
func kindsSeen(ops []history.Op) (missing []history.Kind) {
	ok := map[history.Kind]bool{}
	for _, op := range ops {
		if op.Outcome == history.OK {
			ok[op.Kind] = true
		}
	}
	for _, k := range requiredKinds {
		if !ok[k] {
			missing = append(missing, k)
		}
	}
	return slices.Clip(missing)
}
