package validate

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
)

// User states in the model, as user-get reports them ("" is absent).
const (
	stAbsent  = ""
	stActive  = "active"
	stRevoked = "revoked"
)

// userInput is one users-bucket call.
type userInput struct {
	Key  string
	Kind history.Kind
}

// userOutput is what the call returned. res is "ok", "already" (add of an
// active key), "notfound" (revoke or get of an absent key) or "unknown"
// (maybe applied); status is what a get read.
type userOutput struct {
	res    string
	status string
}

// opMeta is what the visualization shows beside an operation.
type opMeta struct {
	id      int64
	node    string
	outcome history.Outcome
	err     string
}

// usersModel is the users bucket, per key, as membershipd's KV store
// implements it (membershipd/store): add creates an absent key or replaces
// a revoked one (revoked -> active) and refuses an active one with
// "already registered", changing nothing; revoke marks an active or
// revoked key revoked and refuses an absent one with "no such user"; get
// returns the status. Users are never deleted.
//
// An operation with an unknown outcome returns at +infinity: porcupine may
// linearize it at any point after its invoke, including after everything
// else, which is the same as never applied. At its point it does what the
// store would have done, so its step is always legal.
var usersModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(userInput).Key
			by[k] = append(by[k], op)
		}
		keys := make([]string, 0, len(by))
		for k := range by {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make([][]porcupine.Operation, len(keys))
		for i, k := range keys {
			out[i] = by[k]
		}
		return out
	},
	Init: func() any { return stAbsent },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(string), input.(userInput), output.(userOutput)
		switch in.Kind {
		case history.UserAdd:
			switch out.res {
			case "ok":
				return st != stActive, stActive
			case "already":
				return st == stActive, st
			case "unknown":
				return true, stActive
			}
		case history.UserRevoke:
			switch out.res {
			case "ok":
				return st != stAbsent, stRevoked
			case "notfound":
				return st == stAbsent, st
			case "unknown":
				if st == stAbsent {
					return true, st
				}
				return true, stRevoked
			}
		case history.UserGet:
			return out.status == st, st
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(userInput), output.(userOutput)
		verb := strings.TrimPrefix(string(in.Kind), "user-")
		if in.Kind == history.UserGet {
			s := out.status
			if s == "" {
				s = "absent"
			}
			return fmt.Sprintf("%s %s -> %s", verb, short(in.Key), s)
		}
		return fmt.Sprintf("%s %s -> %s", verb, short(in.Key), out.res)
	},
	DescribeState: func(state any) string {
		if s := state.(string); s != "" {
			return s
		}
		return "absent"
	},
	DescribeOperationMetadata: func(info any) string {
		m, ok := info.(opMeta)
		if !ok {
			return ""
		}
		s := fmt.Sprintf("op %d on %s: %s", m.id, m.node, m.outcome)
		if m.err != "" {
			s += ": " + m.err
		}
		return s
	},
}

func short(key string) string {
	if len(key) > 12 {
		return key[:12] + "…"
	}
	return key
}

// userOp turns a history op into a porcupine operation; ok false drops it:
// a read whose answer never came changes nothing, and a write that failed
// definitely (refused before it was sent, e.g. no quorum) did not happen.
// The workload must record as unknown every write that may have been
// applied (a timeout, a lost reply, a retry after either).
func userOp(op history.Op) (userOutput, int64, bool) {
	ret := op.EndMS
	switch op.Outcome {
	case history.OK:
		if op.Kind == history.UserGet {
			return userOutput{res: "ok", status: op.Value}, ret, true
		}
		return userOutput{res: "ok"}, ret, true
	case history.Failed:
		switch {
		case op.Kind == history.UserAdd && strings.Contains(op.Error, "already registered"):
			return userOutput{res: "already"}, ret, true
		case op.Kind != history.UserAdd && strings.Contains(op.Error, "no such user"):
			return userOutput{res: "notfound", status: stAbsent}, ret, true
		}
		return userOutput{}, 0, false
	case history.Unknown:
		if op.Kind == history.UserGet {
			return userOutput{}, 0, false
		}
		return userOutput{res: "unknown"}, math.MaxInt64, true
	}
	return userOutput{}, 0, false
}

// LinearizabilityResult is the users-bucket check with what the porcupine
// visualization needs.
type LinearizabilityResult struct {
	Result
	// Check is porcupine's answer: Ok, Illegal or Unknown (timed out).
	Check porcupine.CheckResult
	info  porcupine.LinearizationInfo
	ran   bool
}

// Linearizability checks the users bucket (user-add / user-revoke /
// user-get ops, per key) with porcupine against usersModel. timeout bounds
// the search (0: none); a search that times out makes the run invalid,
// not green. The fault evidence is drawn as annotations in the
// visualization.
func Linearizability(ops []history.Op, faults []fault.Evidence, timeout time.Duration) LinearizabilityResult {
	r := LinearizabilityResult{Result: newResult("linearizability")}
	clients := map[string]int{}
	var h []porcupine.Operation
	for _, op := range ops {
		if op.Kind != history.UserAdd && op.Kind != history.UserRevoke && op.Kind != history.UserGet {
			continue
		}
		r.Counts[string(op.Kind)]++
		out, ret, ok := userOp(op)
		if !ok {
			r.Counts["dropped"]++
			continue
		}
		if out.res == "unknown" {
			r.Counts["maybe-applied"]++
		}
		c, seen := clients[op.Process]
		if !seen {
			c = len(clients)
			clients[op.Process] = c
		}
		h = append(h, porcupine.Operation{
			ClientId: c,
			Input:    userInput{Key: op.Key, Kind: op.Kind},
			Call:     op.InvokeMS,
			Output:   out,
			Return:   ret,
			Metadata: opMeta{id: op.ID, node: op.Node, outcome: op.Outcome, err: op.Error},
		})
	}
	r.Counts["checked"] = len(h)
	if len(h) == 0 {
		r.invalid("no users-bucket operation to check: the users workload did not run")
		return r
	}
	res, info := porcupine.CheckOperationsVerbose(usersModel, h, timeout)
	r.Check, r.info, r.ran = res, info, true
	r.info.AddAnnotations(faultAnnotations(faults))
	switch res {
	case porcupine.Ok:
		r.reason("%d operations on %d keys are linearizable", len(h), len(usersModel.Partition(h)))
	case porcupine.Unknown:
		r.invalid("porcupine gave up after %s: linearizability unknown", timeout)
	case porcupine.Illegal:
		// Name the keys: check each partition alone (cheap next to the
		// verbose check, and only on failure).
		for _, part := range usersModel.Partition(h) {
			if porcupine.CheckOperationsTimeout(usersModel, part, timeout) == porcupine.Ok {
				continue
			}
			ids := make([]int64, len(part))
			for i, op := range part {
				ids[i] = op.Metadata.(opMeta).id
			}
			slices.Sort(ids)
			r.Counts["illegal-keys"]++
			r.fail("not-linearizable", ids, "user %s: its %d operations have no linearization (see the porcupine page)",
				part[0].Input.(userInput).Key, len(part))
		}
		if r.OK {
			r.fail("not-linearizable", nil, "the users history has no linearization")
		}
	}
	return r
}

// faultAnnotations marks each fault from its inject call to its heal call
// (or its recovery, or the end of time when it never healed).
func faultAnnotations(faults []fault.Evidence) []porcupine.Annotation {
	out := make([]porcupine.Annotation, 0, len(faults))
	for i, e := range faults {
		end := e.HealStartMS
		if end < 0 {
			end = e.EndMS
		}
		if end < 0 {
			end = math.MaxInt64
		}
		inj := "never confirmed"
		if e.InjectedMS >= 0 {
			inj = fmt.Sprintf("confirmed at %d ms", e.InjectedMS)
		}
		out = append(out, porcupine.Annotation{
			Tag:             "faults",
			Start:           e.StartMS,
			End:             end,
			Description:     fmt.Sprintf("%s %s", e.Fault, strings.Join(e.Nodes, ",")),
			Details:         fmt.Sprintf("fault %d: %s on %v; injected at %d ms, %s, heal at %d ms, recovered at %d ms", i+1, e.Fault, e.Nodes, e.StartMS, inj, e.HealStartMS, e.EndMS),
			BackgroundColor: "#f6c6c6",
		})
	}
	slices.SortStableFunc(out, func(a, b porcupine.Annotation) int { return cmp.Compare(a.Start, b.Start) })
	return out
}

// WriteVisualization writes porcupine's HTML page for the check (one
// self-contained file), with the fault intervals as annotations. The
// report package decides where it goes.
func (l LinearizabilityResult) WriteVisualization(w io.Writer) error {
	if !l.ran {
		return errors.New("linearizability: no check ran, nothing to visualize")
	}
	if err := porcupine.Visualize(usersModel, l.info, w); err != nil {
		return fmt.Errorf("porcupine visualization: %w", err)
	}
	return nil
}
