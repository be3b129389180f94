package validate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// StreamReplica is one node's view of one stream after the final heal, as
// the runner reads it from that node: sequence range, message count, bytes
// and a hash over the messages (subject, data and sequence, in order; the
// runner chooses the hash, every node's with the same function).
type StreamReplica struct {
	Node     string `json:"node"`
	Stream   string `json:"stream"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Msgs     uint64 `json:"msgs"`
	Bytes    uint64 `json:"bytes"`
	Hash     string `json:"hash"`
}

func (s StreamReplica) state() string {
	return fmt.Sprintf("first %d last %d msgs %d bytes %d hash %s", s.FirstSeq, s.LastSeq, s.Msgs, s.Bytes, s.Hash)
}

// Divergence: every replica of a stream holds the same messages. replicas
// is the number of replicas each stream should have (0: not checked); a
// stream with fewer summaries makes the run invalid (a replica that was
// not read proves nothing). The anomaly names the nodes that differ from
// the most common state.
func Divergence(summaries []StreamReplica, replicas int) Result {
	r := newResult("replica-divergence")
	if len(summaries) == 0 {
		r.invalid("no replica summaries: nothing was read from the nodes after the final heal")
		return r
	}
	by := map[string][]StreamReplica{}
	for _, s := range summaries {
		by[s.Stream] = append(by[s.Stream], s)
	}
	streams := make([]string, 0, len(by))
	for s := range by {
		streams = append(streams, s)
	}
	slices.Sort(streams)
	r.Counts["streams"] = len(streams)
	r.Counts["diverged"] = 0
	for _, stream := range streams {
		reps := by[stream]
		slices.SortFunc(reps, func(a, b StreamReplica) int { return cmp.Compare(a.Node, b.Node) })
		r.Counts["replicas"] += len(reps)
		if replicas > 0 && len(reps) < replicas {
			nodes := make([]string, len(reps))
			for i, s := range reps {
				nodes[i] = s.Node
			}
			r.invalid("%s: only %d of %d replicas were read (%s)", stream, len(reps), replicas, strings.Join(nodes, ","))
		}
		votes := map[string]int{}
		for _, s := range reps {
			votes[s.state()]++
		}
		if len(votes) == 1 {
			continue
		}
		// The most common state is the reference; ties go to the state of
		// the first node by name, so the report is deterministic.
		ref, best := reps[0].state(), 0
		for _, s := range reps {
			if n := votes[s.state()]; n > best {
				ref, best = s.state(), n
			}
		}
		var odd []string
		for _, s := range reps {
			if s.state() != ref {
				odd = append(odd, fmt.Sprintf("%s has %s", s.Node, s.state()))
			}
		}
		r.Counts["diverged"]++
		r.fail("diverged", nil, "%s: %d of %d replicas agree on %s; %s", stream, best, len(reps), ref, strings.Join(odd, "; "))
	}
	return r
}
