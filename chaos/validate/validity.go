package validate

import (
	"math"
	"strings"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
)

// minQuietMS: a pre-fault window shorter than this gives no rate worth the
// name.
const minQuietMS = 1000

// Validity is the test of the test: a run that could not have found a
// fault is invalid, not green. It requires
//   - before the first fault's inject call (the whole run if none), ok
//     operations at minRate per second or more, over at least 1 s from
//     the first op's invoke;
//   - every fault confirmed by its observer (Injected set) and no
//     injection error.
func Validity(ops []history.Op, faults []fault.Evidence, minRate float64) Result {
	r := newResult("validity")
	r.Counts["ops"] = len(ops)
	r.Counts["faults"] = len(faults)
	if len(ops) == 0 {
		r.invalid("the history is empty")
		return r
	}
	firstFault := int64(math.MaxInt64)
	for _, e := range faults {
		firstFault = min(firstFault, e.StartMS)
	}
	first, last := int64(math.MaxInt64), int64(math.MinInt64)
	for _, op := range ops {
		first = min(first, op.InvokeMS)
		last = max(last, op.EndMS)
	}
	until := min(firstFault, last)
	n := 0
	for _, op := range ops {
		if op.Outcome == history.OK && op.EndMS <= until {
			n++
		}
	}
	r.Counts["ok-before-first-fault"] = n
	span := until - first
	switch {
	case span < minQuietMS:
		r.invalid("only %d ms of traffic before the first fault (need %d ms to measure a rate)", max(span, 0), minQuietMS)
	default:
		rate := float64(n) * 1000 / float64(span)
		r.Counts["rate-before-first-fault"] = int(rate)
		if rate < minRate {
			r.invalid("traffic before the first fault was %.1f ok ops/s over %d ms, below the minimum %.1f", rate, span, minRate)
		} else {
			r.reason("%.1f ok ops/s before the first fault (minimum %.1f)", rate, minRate)
		}
	}
	r.Counts["unconfirmed-faults"] = 0
	for i, e := range faults {
		switch {
		case e.Error != "":
			r.Counts["unconfirmed-faults"]++
			r.invalid("fault %d (%s on %v at %d ms) failed: %s", i+1, e.Fault, e.Nodes, e.StartMS, e.Error)
		case e.InjectedMS < 0 || e.Injected.IsZero() && e.InjectedMS == 0:
			r.Counts["unconfirmed-faults"]++
			r.invalid("fault %d (%s on %v at %d ms) was never confirmed by its observer", i+1, e.Fault, e.Nodes, e.StartMS)
		}
	}
	return r
}

// requireKinds makes r invalid unless an op of each kind in want succeeded
// before the first fault's inject call: a floor on the total rate alone
// would pass a run in which the cheapest workload (health probes) ran and
// the others never got going.
func requireKinds(r *Result, ops []history.Op, faults []fault.Evidence, want []history.Kind) {
	if len(want) == 0 {
		return
	}
	firstFault := int64(math.MaxInt64)
	for _, e := range faults {
		firstFault = min(firstFault, e.StartMS)
	}
	seen := map[history.Kind]bool{}
	for _, op := range ops {
		if op.Outcome == history.OK && op.EndMS <= firstFault {
			seen[op.Kind] = true
		}
	}
	var missing []string
	for _, k := range want {
		if !seen[k] {
			missing = append(missing, string(k))
		}
	}
	r.Counts["workloads-missing-before-first-fault"] = len(missing)
	if len(missing) > 0 {
		r.invalid("no %s op succeeded before the first fault: that workload never got going", strings.Join(missing, ", "))
	}
}
