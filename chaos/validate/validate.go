package validate

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
)

// Params are the checkers' thresholds; zero fields take the defaults.
type Params struct {
	// MinRate: ok ops/s required before the first fault (default 10).
	MinRate float64 `json:"min_rate"`
	// Deadline: how long a node cut off from a majority, or a revoked
	// identity, may still be served (default 2 s).
	Deadline time.Duration `json:"deadline_ns"`
	// ConvergeWithin: how long after the final heal every allowlist must
	// equal the KV (default 30 s).
	ConvergeWithin time.Duration `json:"converge_within_ns"`
	// LinTimeout bounds porcupine's search (default 2 min); running out
	// makes the run invalid.
	LinTimeout time.Duration `json:"lin_timeout_ns"`
	// Replicas: replicas each stream should report (0: not checked).
	Replicas int `json:"replicas"`
	// Require: kinds of operation of which at least one must have
	// succeeded before the first fault (each workload ran, not just the
	// cheapest); empty: none required.
	Require []history.Kind `json:"require,omitempty"`
}

// Defaults for Params.
const (
	DefaultMinRate        = 10
	DefaultDeadline       = 2 * time.Second
	DefaultConvergeWithin = 30 * time.Second
	DefaultLinTimeout     = 2 * time.Minute
)

func (p Params) withDefaults() Params {
	if p.MinRate == 0 {
		p.MinRate = DefaultMinRate
	}
	if p.Deadline == 0 {
		p.Deadline = DefaultDeadline
	}
	if p.ConvergeWithin == 0 {
		p.ConvergeWithin = DefaultConvergeWithin
	}
	if p.LinTimeout == 0 {
		p.LinTimeout = DefaultLinTimeout
	}
	return p
}

// Input is everything one run hands the checkers.
type Input struct {
	Ops    []history.Op     `json:"-"`
	Faults []fault.Evidence `json:"faults"`
	// Nodes: every node of the cluster (majorities count from these).
	Nodes []string `json:"nodes"`
	// Replicas: per-node per-stream summaries read after the final heal.
	Replicas []StreamReplica `json:"replicas"`
	// Allowlists: allowlist snapshots polled after the final heal.
	Allowlists ConvergenceInput `json:"allowlists"`
	Params     Params           `json:"params"`
}

// Verdict is a run's outcome.
type Verdict string

// Verdicts. Red wins over invalid: an anomaly found in a run that is also
// invalid is still real.
const (
	Green   Verdict = "green"
	Red     Verdict = "red"
	Invalid Verdict = "invalid"
)

// ExitCode is the process exit code for a verdict: 0 green, 1 red, 3
// invalid (2 is bad input).
func (v Verdict) ExitCode() int {
	switch v {
	case Green:
		return 0
	case Red:
		return 1
	}
	return 3
}

// Report is the whole judgement of a run.
type Report struct {
	Verdict Verdict `json:"verdict"`
	// Results in the order run: validity, linearizability, queue,
	// divergence, fail-closed, revocation, convergence, admission, then
	// any the runner added (Add).
	Results []Result `json:"results"`
	// Linearizability is also in Results; here with its visualization.
	Linearizability LinearizabilityResult `json:"-"`
	// CutOff: when each node was cut off from a majority (for the
	// report's timeline).
	CutOff  []Interval    `json:"cut_off"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Validate runs every checker: the tests of the test first, then
// linearizability, then the rest (the order etcd's robustness tests use:
// a run that is invalid is said so before any verdict on its data).
func Validate(in Input) Report {
	start := time.Now()
	p := in.Params.withDefaults()
	var rep Report
	val := Validity(in.Ops, in.Faults, p.MinRate)
	requireKinds(&val, in.Ops, in.Faults, p.Require)
	rep.Results = append(rep.Results, val)
	rep.Linearizability = Linearizability(in.Ops, in.Faults, p.LinTimeout)
	rep.Results = append(rep.Results,
		rep.Linearizability.Result,
		Queue(in.Ops),
		Divergence(in.Replicas, p.Replicas),
		FailClosed(in.Ops, in.Nodes, in.Faults, p.Deadline),
		Revocation(in.Ops, p.Deadline),
		Convergence(in.Allowlists, p.ConvergeWithin),
		Admission(in.Ops),
	)
	rep.CutOff = CutOff(in.Nodes, in.Faults)
	rep.verdict()
	rep.Elapsed = time.Since(start)
	return rep
}

func (r *Report) verdict() {
	r.Verdict = Green
	for _, res := range r.Results {
		switch {
		case res.failing():
			r.Verdict = Red
		case !res.OK && r.Verdict == Green:
			r.Verdict = Invalid
		}
	}
}

// Add appends a result the runner judged itself (a fault that never
// recovered, a cluster that never became healthy) and recomputes the
// verdict.
func (r *Report) Add(res Result) {
	r.Results = append(r.Results, res)
	r.verdict()
}

// RunResult is a result for what the runner saw itself: failures fail the
// run (red), invalid reasons make it unjudgeable.
func RunResult(name string, failures, invalid []string) Result {
	res := newResult(name)
	for _, f := range failures {
		res.fail(name, nil, "%s", f)
	}
	for _, why := range invalid {
		res.invalid("%s", why)
	}
	return res
}

// maxListed bounds the anomalies the console summary lists per checker;
// the report page lists them all.
const maxListed = 10

// WriteSummary writes the plain-text summary for the console: the verdict,
// one line per checker, and its anomalies that fail the run (lost writes
// named by message id).
func (r Report) WriteSummary(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "verdict: %s (checked in %s)\n", strings.ToUpper(string(r.Verdict)), r.Elapsed.Round(time.Millisecond))
	for _, res := range r.Results {
		fmt.Fprintf(&b, "  %s\n", res)
		listed := 0
		for _, a := range res.Anomalies {
			if !a.Fails {
				continue
			}
			if listed == maxListed {
				fmt.Fprintf(&b, "      ... and more (see the report)\n")
				break
			}
			listed++
			fmt.Fprintf(&b, "    - %s: %s%s\n", a.Kind, a.Detail, opRefs(a.OpIDs))
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

func opRefs(ids []int64) string {
	if len(ids) == 0 {
		return ""
	}
	const show = 5
	parts := make([]string, 0, show+1)
	for i, id := range ids {
		if i == show {
			parts = append(parts, fmt.Sprintf("… %d in all", len(ids)))
			break
		}
		parts = append(parts, fmt.Sprint(id))
	}
	return " (ops " + strings.Join(parts, ",") + ")"
}
