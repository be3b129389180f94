package validate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// AllowlistSnapshot is one read of one node's allowlist: the sign keys it
// admits (active users), at AtMS on the run's clock.
type AllowlistSnapshot struct {
	Node   string   `json:"node"`
	AtMS   int64    `json:"at_ms"`
	Active []string `json:"active"`
	// Hash: when a node reports only a digest of its allowlist (not the
	// keys), the digest, compared with ConvergenceInput.WantHash (the
	// runner computes both the same way); Active is then empty.
	Hash string `json:"hash,omitempty"`
	// Error: the read failed (the node did not answer); such a snapshot
	// shows nothing either way.
	Error string `json:"error,omitempty"`
}

// ConvergenceInput is what the runner polls after the final heal.
type ConvergenceInput struct {
	// Nodes: every node that must converge.
	Nodes []string `json:"nodes"`
	// Want: the active users' keys per the KV (ListUsers after the heal).
	Want []string `json:"want"`
	// WantHash: the KV's digest, for snapshots that carry a Hash.
	WantHash string `json:"want_hash,omitempty"`
	// HealMS: when the final heal completed (the deadline counts from it).
	HealMS    int64               `json:"heal_ms"`
	Snapshots []AllowlistSnapshot `json:"snapshots"`
}

// Convergence: after the final heal, every node's allowlist equals the
// KV's active users within deadline, and stays equal in every later
// snapshot. A node with no successful snapshot makes the run invalid; one
// whose last snapshot is earlier than the deadline and still differs is
// a failure (the runner polls until the deadline).
func Convergence(in ConvergenceInput, deadline time.Duration) Result {
	r := newResult("convergence")
	if len(in.Nodes) == 0 {
		r.invalid("no nodes to check")
		return r
	}
	want := slices.Sorted(slices.Values(in.Want))
	want = slices.Compact(want)
	r.Counts["kv-active"] = len(want)
	r.Counts["not-converged"] = 0
	by := map[string][]AllowlistSnapshot{}
	for _, s := range in.Snapshots {
		if s.Error == "" {
			by[s.Node] = append(by[s.Node], s)
		}
	}
	limit := in.HealMS + deadline.Milliseconds()
	var slowest int64 = -1
	for _, node := range in.Nodes {
		snaps := by[node]
		if len(snaps) == 0 {
			r.invalid("%s: no allowlist snapshot was read", node)
			continue
		}
		slices.SortStableFunc(snaps, func(a, b AllowlistSnapshot) int { return cmp.Compare(a.AtMS, b.AtMS) })
		r.Counts["snapshots"] += len(snaps)
		// converged: the first snapshot from which every later one equals.
		at := int64(-1)
		var lastDiff string
		for _, s := range snaps {
			if s.Hash != "" && len(s.Active) == 0 {
				if s.Hash == in.WantHash {
					if at < 0 {
						at = s.AtMS
					}
					continue
				}
				at = -1
				lastDiff = fmt.Sprintf("at %d ms digest %s, KV %s", s.AtMS, short(s.Hash), short(in.WantHash))
				continue
			}
			missing, extra := diff(want, s.Active)
			if len(missing) == 0 && len(extra) == 0 {
				if at < 0 {
					at = s.AtMS
				}
				continue
			}
			at = -1
			lastDiff = fmt.Sprintf("at %d ms missing %s, extra %s", s.AtMS, keyList(missing), keyList(extra))
		}
		switch {
		case at < 0:
			r.Counts["not-converged"]++
			r.fail("not-converged", nil, "%s: allowlist differs from the KV in its last snapshot (%s)", node, lastDiff)
		case at > limit:
			r.Counts["not-converged"]++
			r.fail("converged-late", nil, "%s: allowlist equal to the KV only at %d ms, %d ms after the heal (deadline %s); before: %s",
				node, at, at-in.HealMS, deadline, lastDiff)
		default:
			slowest = max(slowest, at-in.HealMS)
		}
	}
	if slowest >= 0 {
		r.Counts["slowest-ms"] = int(slowest)
	}
	return r
}

// diff returns the keys of want missing from got and those of got not in
// want (want sorted, compacted).
func diff(want, got []string) (missing, extra []string) {
	have := map[string]bool{}
	for _, k := range got {
		have[k] = true
	}
	for _, k := range want {
		if !have[k] {
			missing = append(missing, k)
		}
		delete(have, k)
	}
	for k := range have {
		extra = append(extra, k)
	}
	slices.Sort(extra)
	return missing, extra
}

func keyList(keys []string) string {
	if len(keys) == 0 {
		return "none"
	}
	s := make([]string, 0, min(len(keys), 5))
	for i, k := range keys {
		if i == 5 {
			s = append(s, fmt.Sprintf("… %d in all", len(keys)))
			break
		}
		s = append(s, short(k))
	}
	return strings.Join(s, ",")
}
