package validate

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
)

// Interval is a closed span of the run's clock, in ms.
type Interval struct {
	Node    string `json:"node"`
	StartMS int64  `json:"start_ms"`
	EndMS   int64  `json:"end_ms"` // math.MaxInt64: never healed
	Why     string `json:"why"`
}

// downFaults leave their victims not running (or not scheduled) from the
// inject call to the heal call. restart is left out: its victim is back
// within the fault, so counting it down would call the others cut off
// while they may rightly serve.
var downFaults = map[string]bool{"kill": true, "stop": true, "pause": true, "power-loss": true}

// cutFaults cut links between side A (Evidence.Nodes) and side B
// (Args.Rest, default every other node). One-way counts as a full cut: a
// raft round trip or a TCP connection needs both directions, so neither
// side can commit through it. part-kill kills Nodes[0] and cuts Nodes[1]
// from everyone.
var cutFaults = map[string]bool{"partition": true, "one-way": true, "isolate-leader": true}

// CutOff computes, from the fault evidence, when each node was cut off
// from a majority of the cluster: running, but in a connected group (over
// the links no active fault cuts, among nodes no active fault took down)
// smaller than a majority of all nodes. Faults are active from their
// inject call (StartMS) to their heal call (HealStartMS; never healed:
// forever). Overlapping faults combine. Grouping is transitive, so a node
// that reaches a majority only through a relay is not cut off: that keeps
// the judgement conservative (it may miss, never wrongly accuse).
func CutOff(nodes []string, faults []fault.Evidence) []Interval {
	if len(nodes) == 0 {
		return nil
	}
	majority := len(nodes)/2 + 1
	idx := map[string]int{}
	for i, n := range nodes {
		idx[n] = i
	}
	// Segment boundaries: every start and heal.
	var bounds []int64
	for _, e := range faults {
		bounds = append(bounds, e.StartMS, healMS(e))
	}
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	var out []Interval
	open := map[string]int{} // node -> index in out of its open interval
	for bi := 0; bi+1 < len(bounds); bi++ {
		from, to := bounds[bi], bounds[bi+1]
		down := make([]bool, len(nodes))
		cut := make([][]bool, len(nodes))
		for i := range cut {
			cut[i] = make([]bool, len(nodes))
		}
		var active []string
		for _, e := range faults {
			if e.StartMS > from || healMS(e) < to {
				continue
			}
			active = append(active, fmt.Sprintf("%s %s", e.Fault, strings.Join(e.Nodes, ",")))
			victims := e.Nodes
			if len(victims) == 0 {
				victims = e.Args.Nodes
			}
			switch {
			case downFaults[e.Fault]:
				for _, v := range victims {
					if i, ok := idx[v]; ok {
						down[i] = true
					}
				}
			case e.Fault == "part-kill" && len(victims) == 2:
				if i, ok := idx[victims[0]]; ok {
					down[i] = true
				}
				cutSides(cut, idx, nodes, victims[1:], nil)
			case cutFaults[e.Fault]:
				cutSides(cut, idx, nodes, victims, e.Args.Rest)
			}
		}
		// Connected groups among running nodes.
		group := make([]int, len(nodes))
		for i := range group {
			group[i] = -1
		}
		sizes := []int{}
		for s := range nodes {
			if down[s] || group[s] >= 0 {
				continue
			}
			g := len(sizes)
			sizes = append(sizes, 0)
			stack := []int{s}
			group[s] = g
			for len(stack) > 0 {
				n := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				sizes[g]++
				for m := range nodes {
					if !down[m] && group[m] < 0 && !cut[n][m] {
						group[m] = g
						stack = append(stack, m)
					}
				}
			}
		}
		for i, n := range nodes {
			isCut := !down[i] && sizes[group[i]] < majority
			j, isOpen := open[n]
			switch {
			case isCut && isOpen:
				out[j].EndMS = to
			case isCut:
				open[n] = len(out)
				out = append(out, Interval{Node: n, StartMS: from, EndMS: to,
					Why: fmt.Sprintf("reaches %d of %d nodes under %s", sizes[group[i]], len(nodes), strings.Join(active, " + "))})
			case isOpen:
				delete(open, n)
			}
		}
	}
	return out
}

func healMS(e fault.Evidence) int64 {
	if e.HealStartMS < 0 {
		return math.MaxInt64
	}
	return e.HealStartMS
}

// cutSides marks every link between side a and side b (b empty: every node
// not in a) as cut.
func cutSides(cut [][]bool, idx map[string]int, nodes, a, b []string) {
	if len(b) == 0 {
		for _, n := range nodes {
			if !slices.Contains(a, n) {
				b = append(b, n)
			}
		}
	}
	for _, x := range a {
		for _, y := range b {
			i, ok1 := idx[x]
			j, ok2 := idx[y]
			if ok1 && ok2 && i != j {
				cut[i][j], cut[j][i] = true, true
			}
		}
	}
}

// serving reports whether op shows its node serving: it admitted a
// connection, answered 200, accepted a signed request, or acked a write.
func serving(op history.Op) bool {
	switch op.Kind {
	case history.Connect, history.Request, history.Publish, history.UserAdd, history.UserRevoke:
		return op.Outcome == history.OK
	case history.Health:
		return op.Outcome == history.OK && op.Value == "200"
	}
	return false
}

// FailClosed: no node serves while cut off from a majority, past deadline.
// A node cut off over [s, e] (see CutOff) must refuse from s + deadline:
// the deadline counts from the inject call (Evidence.Start), not from the
// observer's confirmation, because the fault is installed when Inject
// returns and the observer's own delay is no grace for the node. An op
// counts against its node only if its whole span [invoke, end] lies in
// [s + deadline, e]: one that began earlier or ended after the heal call
// may have been served outside the window.
func FailClosed(ops []history.Op, nodes []string, faults []fault.Evidence, deadline time.Duration) Result {
	r := newResult("fail-closed")
	if len(nodes) == 0 {
		r.invalid("no cluster nodes given: cannot tell a majority")
		return r
	}
	cuts := CutOff(nodes, faults)
	r.Counts["cut-off-windows"] = len(cuts)
	r.Counts["violations"] = 0
	r.Counts["probed-while-cut-off"] = 0
	byNode := map[string][]Interval{}
	for _, c := range cuts {
		if c.StartMS > math.MaxInt64-deadline.Milliseconds() {
			continue
		}
		c.StartMS += deadline.Milliseconds()
		if c.StartMS <= c.EndMS {
			byNode[c.Node] = append(byNode[c.Node], c)
		}
	}
	type key struct {
		node string
		kind history.Kind
	}
	viol := map[key][]int64{}
	var order []key
	// probed counts every op fully inside a window, refused or not: a
	// window nobody probed proves nothing, and the report should say so.
	for _, op := range ops {
		for _, c := range byNode[op.Node] {
			if op.InvokeMS < c.StartMS || op.EndMS > c.EndMS {
				continue
			}
			r.Counts["probed-while-cut-off"]++
			if serving(op) {
				k := key{op.Node, op.Kind}
				if _, seen := viol[k]; !seen {
					order = append(order, k)
				}
				viol[k] = append(viol[k], op.ID)
			}
			break
		}
	}
	for _, k := range order {
		ids := viol[k]
		r.Counts["violations"] += len(ids)
		r.fail("served-while-cut-off", ids, "%s: %d %s op(s) succeeded while it was cut off from a majority for over %s",
			k.node, len(ids), k.kind, deadline)
	}
	for _, c := range cuts {
		r.reason("%s cut off %d-%s ms (%s)", c.Node, c.StartMS, endText(c.EndMS), c.Why)
	}
	return r
}

func endText(ms int64) string {
	if ms == math.MaxInt64 {
		return "end"
	}
	return fmt.Sprint(ms)
}
