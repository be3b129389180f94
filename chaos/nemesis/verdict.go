package nemesis

import (
	"fmt"

	"github.com/unibus/clusterkit/chaos/history"
)

// Verdict statuses and the command's exit codes.
const (
	Green   = "green"   // exit 0
	Red     = "red"     // exit 1: an anomaly
	Invalid = "invalid" // exit 3: the run cannot judge (too little traffic, a fault never observed)
)

// Anomaly is one kind of wrong behaviour with its count and the first
// examples (history op ids, message ids, nodes).
type Anomaly struct {
	Kind     string   `json:"kind"`
	Count    int      `json:"count"`
	Examples []string `json:"examples,omitempty"`
}

// Verdict is verdict.json.
type Verdict struct {
	Status    string         `json:"status"`
	Anomalies []Anomaly      `json:"anomalies,omitempty"`
	Invalid   []string       `json:"invalid,omitempty"`
	Stats     Stats          `json:"stats"`
	Checker   string         `json:"checker"`
	Streams   map[string]Que `json:"streams,omitempty"`
}

// Que is one room stream's queue counts.
type Que struct {
	Attempted int `json:"attempted"`
	Acked     int `json:"acked"`
	Unknown   int `json:"unknown"`
	Received  int `json:"received"`
	Stored    int `json:"stored"`
	Lost      int `json:"lost"`
}

// Stats are the history's totals.
type Stats struct {
	Ops          int            `json:"ops"`
	DurationMS   int64          `json:"duration_ms"`
	OpsPerSecond float64        `json:"ops_per_second"`
	ByKind       map[string]int `json:"by_kind"`
	ByOutcome    map[string]int `json:"by_outcome"`
	// PreFaultOpsPerSecond: the rate before the first fault (the run's
	// minimum-traffic check).
	PreFaultOpsPerSecond float64 `json:"pre_fault_ops_per_second"`
}

const maxExamples = 20

func (v *Verdict) add(kind string, examples []string) {
	if len(examples) == 0 {
		return
	}
	a := Anomaly{Kind: kind, Count: len(examples)}
	a.Examples = examples[:min(len(examples), maxExamples)]
	v.Anomalies = append(v.Anomalies, a)
}

// MinPreFaultRate is the traffic a run must reach before its first fault
// to be judged at all (ops per second).
const MinPreFaultRate = 10.0

// judge is the nemesis's own minimal checker, used until the checkers
// package judges the history: lost or duplicated acked messages against
// the final read, replica divergence, allowlists that never converged,
// accepted replays, admitted revoked or unregistered identities.
func judge(ops []history.Op, firstFaultMS, durationMS int64, reads []FinalRead, reps Replicas, als Allowlists, invalid []string) Verdict {
	v := Verdict{Checker: "nemesis-minimal", Invalid: invalid, Streams: map[string]Que{}}
	v.Stats = stats(ops, firstFaultMS, durationMS)
	if v.Stats.PreFaultOpsPerSecond < MinPreFaultRate {
		v.Invalid = append(v.Invalid, fmt.Sprintf("traffic before the first fault was %.1f ops/s (minimum %.0f)", v.Stats.PreFaultOpsPerSecond, MinPreFaultRate))
	}
	stored := map[string]FinalRead{}
	for _, fr := range reads {
		stored[fr.Stream] = fr
		if fr.Error != "" {
			v.Invalid = append(v.Invalid, fmt.Sprintf("final read of %s: %s", fr.Stream, fr.Error))
		}
	}
	var lost, replays, revoked, unregistered []string
	received := map[string]bool{}
	for _, op := range ops {
		if op.Kind == history.Receive {
			received[op.Key+"/"+op.Value] = true
		}
	}
	for _, op := range ops {
		switch op.Kind {
		case history.Publish:
			q := v.Streams[op.Key]
			q.Attempted++
			if received[op.Key+"/"+op.Value] {
				q.Received++
			}
			switch op.Outcome {
			case history.OK:
				q.Acked++
				fr, ok := stored[op.Key]
				if ok && fr.Error == "" {
					if _, in := fr.IDs[op.Value]; !in {
						q.Lost++
						why := ""
						if fr.Missing {
							why = ", the stream is gone"
						}
						lost = append(lost, fmt.Sprintf("%s %s (op %d, acked at %d ms by %s%s)", op.Key, op.Value, op.ID, op.EndMS, op.Node, why))
					}
				}
			case history.Unknown:
				q.Unknown++
			}
			v.Streams[op.Key] = q
		case history.Request:
			if op.Value == "replay" && op.Outcome == history.OK {
				replays = append(replays, fmt.Sprintf("op %d: %s replayed to %s at %d ms was served", op.ID, op.Key, op.Node, op.EndMS))
			}
		case history.Connect:
			if op.Outcome == history.OK && op.Value == RoleRevoked {
				revoked = append(revoked, fmt.Sprintf("op %d: %s admitted %s at %d ms", op.ID, op.Node, op.Key[:12], op.EndMS))
			}
			if op.Outcome == history.OK && op.Value == RoleUnregistered {
				unregistered = append(unregistered, fmt.Sprintf("op %d: %s admitted %s at %d ms", op.ID, op.Node, op.Key[:12], op.EndMS))
			}
		}
	}
	var dups []string
	for _, fr := range reads {
		q := v.Streams[fr.Stream]
		q.Stored = len(fr.IDs)
		v.Streams[fr.Stream] = q
		for _, d := range fr.Dups {
			dups = append(dups, fr.Stream+" "+d)
		}
	}
	v.add("lost-acked-writes", lost)
	v.add("duplicated-messages", dups)
	v.add("replica-divergence", reps.Diverged)
	if !als.Converged {
		probs := append([]string{}, als.Problems...)
		for _, n := range als.Nodes {
			if !n.Matches {
				probs = append(probs, fmt.Sprintf("%s: %d users (%d active) hash %s applied rev %d; kv %d users (%d active) hash %s",
					n.Node, n.Users, n.Active, n.Hash, n.AppliedRev, als.KV.Users, als.KV.Active, als.KV.Hash))
			}
		}
		if len(probs) == 0 {
			probs = []string{"not every node answered"}
		}
		v.add("allowlist-not-converged", probs)
	}
	v.add("replay-accepted", replays)
	v.add("revoked-identity-admitted", revoked)
	v.add("unregistered-identity-admitted", unregistered)
	switch {
	case len(v.Anomalies) > 0:
		v.Status = Red
	case len(v.Invalid) > 0:
		v.Status = Invalid
	default:
		v.Status = Green
	}
	return v
}

func stats(ops []history.Op, firstFaultMS, durationMS int64) Stats {
	s := Stats{Ops: len(ops), DurationMS: durationMS, ByKind: map[string]int{}, ByOutcome: map[string]int{}}
	pre := 0
	var firstMS int64 = -1
	for _, op := range ops {
		s.ByKind[string(op.Kind)]++
		s.ByOutcome[string(op.Outcome)]++
		if firstMS < 0 || op.InvokeMS < firstMS {
			firstMS = op.InvokeMS
		}
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
