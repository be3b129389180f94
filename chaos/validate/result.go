// Package validate judges a whole nemesis run: the history of client
// operations (chaos/history), the fault evidence (chaos/fault) and the
// state read from the cluster after the final heal. Every checker is a pure
// function over those inputs, with no cluster access, so it can be unit
// tested on synthetic histories and re-run on a recorded run.
//
// A checker returns a Result. OK false with Valid true means it found an
// anomaly (the run is red); Valid false means the run could not be judged
// (too little traffic, an unconfirmed fault, missing input), which is
// never green.
package validate

import (
	"fmt"
	"slices"
	"strings"
)

// Anomaly is one thing a checker found wrong (or worth naming), with the
// ids of the history operations that show it.
type Anomaly struct {
	Kind   string  `json:"kind"`
	OpIDs  []int64 `json:"op_ids,omitempty"`
	Detail string  `json:"detail"`
	// Fails: this anomaly fails the run (a lost write); false for one
	// that is only reported (a redelivered message).
	Fails bool `json:"fails"`
}

// Result is one checker's verdict.
type Result struct {
	Name string `json:"name"`
	// OK: judged, and nothing that fails the run was found.
	OK bool `json:"ok"`
	// Valid: the checker could judge. False means the run is invalid
	// (not green), whatever OK says; OK is then false too.
	Valid     bool           `json:"valid"`
	Counts    map[string]int `json:"counts,omitempty"`
	Anomalies []Anomaly      `json:"anomalies,omitempty"`
	Reasons   []string       `json:"reasons,omitempty"`
}

func newResult(name string) Result {
	return Result{Name: name, OK: true, Valid: true, Counts: map[string]int{}}
}

// fail records an anomaly that fails the run.
func (r *Result) fail(kind string, ids []int64, format string, args ...any) {
	r.OK = false
	r.Anomalies = append(r.Anomalies, Anomaly{Kind: kind, OpIDs: ids, Detail: fmt.Sprintf(format, args...), Fails: true})
}

// note records an anomaly that does not fail the run (a redelivery).
func (r *Result) note(kind string, ids []int64, format string, args ...any) {
	r.Anomalies = append(r.Anomalies, Anomaly{Kind: kind, OpIDs: ids, Detail: fmt.Sprintf(format, args...)})
}

// invalid marks the run unjudgeable.
func (r *Result) invalid(format string, args ...any) {
	r.Valid, r.OK = false, false
	r.Reasons = append(r.Reasons, fmt.Sprintf(format, args...))
}

func (r *Result) reason(format string, args ...any) {
	r.Reasons = append(r.Reasons, fmt.Sprintf(format, args...))
}

// Status is PASS, FAIL or INVALID. A result with both a failing anomaly and
// an invalid reason is FAIL: what it found is real regardless.
func (r Result) Status() string {
	switch {
	case r.OK:
		return "PASS"
	case r.failing():
		return "FAIL"
	case !r.Valid:
		return "INVALID"
	}
	return "FAIL"
}

// failing: the result found something that fails the run.
func (r Result) failing() bool {
	for _, a := range r.Anomalies {
		if a.Fails {
			return true
		}
	}
	return false
}

func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Status(), r.Name)
	if len(r.Counts) > 0 {
		keys := make([]string, 0, len(r.Counts))
		for k := range r.Counts {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%d", k, r.Counts[k])
		}
		fmt.Fprintf(&b, " [%s]", strings.Join(parts, " "))
	}
	if len(r.Reasons) > 0 {
		fmt.Fprintf(&b, ": %s", strings.Join(r.Reasons, "; "))
	}
	return b.String()
}
