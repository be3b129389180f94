package fault

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/unibus/clusterkit/chaos"
)

// state is one fault's place in its lifecycle, per Runner:
//
//	          Inject ok              Heal ok
//	┌───────┐ ─────────▶ ┌────────┐ ─────────▶ ┌───────┐
//	│ ready │            │ active │            │ ready │
//	└───────┘            └────────┘            └───────┘
//	    │ Inject error       │ Heal error
//	    ▼                    ▼
//	┌─────────────────────────────┐
//	│ invalid: refuses everything │  (the cluster is in an unknown
//	└─────────────────────────────┘   state; the spec must fail)
//
// A second Inject of a fault that is active is refused: two overlapping
// injections of one fault would heal each other's links or restart each
// other's nodes.
type state int

const (
	ready state = iota
	active
	invalid
)

func (s state) String() string {
	return [...]string{"ready", "active", "invalid"}[s]
}

// ErrState: the guard refused a transition (double inject, heal of a fault
// that is not active, anything after an error).
var ErrState = errors.New("fault lifecycle")

// Runner injects faults into one cluster, guarding each fault's lifecycle
// and recording evidence.
type Runner struct {
	c   chaos.Cluster
	rec *Recorder

	mu     sync.Mutex
	states map[string]state
	why    map[string]error // what made a fault invalid
}

// NewRunner makes a runner for c; rec may be nil (a fresh recorder).
func NewRunner(c chaos.Cluster, rec *Recorder) *Runner {
	if rec == nil {
		rec = NewRecorder(time.Time{})
	}
	return &Runner{c: c, rec: rec, states: map[string]state{}, why: map[string]error{}}
}

// Recorder is where the runner's evidence goes.
func (r *Runner) Recorder() *Recorder { return r.rec }

// Cluster is the runner's cluster.
func (r *Runner) Cluster() chaos.Cluster { return r.c }

// State is fault name's current state ("ready", "active", "invalid").
func (r *Runner) State(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.states[name].String()
}

// transition moves name from one state to another, or says why not.
func (r *Runner) transition(name string, from, to state) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.states[name]
	if cur != from {
		if cur == invalid {
			return fmt.Errorf("%w: %s is invalid after an earlier error (%v)", ErrState, name, r.why[name])
		}
		return fmt.Errorf("%w: %s is %s, not %s", ErrState, name, cur, from)
	}
	r.states[name] = to
	return nil
}

func (r *Runner) fail(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states[name] = invalid
	r.why[name] = err
}

// Inject checks f is available, injects it and records the start. On an
// error the fault is invalid for this runner.
func (r *Runner) Inject(ctx context.Context, f Fault, a Args) (*Active, error) {
	if err := f.Available(r.c, a); err != nil {
		return nil, err // unavailable is not a lifecycle error: nothing was touched
	}
	if err := r.transition(f.Name(), ready, active); err != nil {
		return nil, err
	}
	e := &Evidence{Fault: f.Name(), Nodes: a.Nodes, Args: a, Start: time.Now()}
	r.rec.add(e)
	inj, err := f.Inject(ctx, r.c, a)
	if err != nil {
		err = fmt.Errorf("inject %s: %w", f.Name(), err)
		r.rec.update(e, func(e *Evidence) { e.Error = err.Error() })
		r.fail(f.Name(), err)
		return nil, err
	}
	r.rec.update(e, func(e *Evidence) { e.Nodes = inj.Nodes() })
	return &Active{r: r, name: f.Name(), inj: inj, ev: e}, nil
}

// InjectName is Inject by registry name.
func (r *Runner) InjectName(ctx context.Context, name string, a Args) (*Active, error) {
	f, err := Lookup(name)
	if err != nil {
		return nil, err
	}
	return r.Inject(ctx, f, a)
}

// Active is an injected fault under a Runner's guard.
type Active struct {
	r    *Runner
	name string
	inj  Injection
	ev   *Evidence

	mu     sync.Mutex
	healed bool
}

// Name is the fault's name.
func (a *Active) Name() string { return a.name }

// Nodes are the nodes the fault acts on.
func (a *Active) Nodes() []string { return a.inj.Nodes() }

// WaitInjected waits until the fault is observed and records when.
func (a *Active) WaitInjected(ctx context.Context) error {
	if err := a.inj.WaitInjected(ctx); err != nil {
		return fmt.Errorf("%s on %v never took effect: %w", a.name, a.inj.Nodes(), err)
	}
	a.r.rec.update(a.ev, func(e *Evidence) {
		if e.Injected.IsZero() {
			e.Injected = time.Now()
		}
		if d, ok := a.inj.(detailer); ok {
			e.Detail = d.Detail()
		}
	})
	return nil
}

// detailer is an Injection with something of its own to record once it
// took effect.
type detailer interface{ Detail() any }

// Heal undoes the fault once; a second Heal is refused by the guard.
func (a *Active) Heal(ctx context.Context) error {
	if err := a.r.transition(a.name, active, ready); err != nil {
		return err
	}
	a.mu.Lock()
	a.healed = true
	a.mu.Unlock()
	a.r.rec.update(a.ev, func(e *Evidence) { e.HealStart = time.Now() })
	if err := a.inj.Heal(ctx); err != nil {
		err = fmt.Errorf("heal %s: %w", a.name, err)
		a.r.rec.update(a.ev, func(e *Evidence) { e.Error = err.Error() })
		a.r.fail(a.name, err)
		return err
	}
	return nil
}

// WaitHealed waits until the cluster has recovered and records when.
func (a *Active) WaitHealed(ctx context.Context) error {
	if err := a.inj.WaitHealed(ctx); err != nil {
		return fmt.Errorf("%s on %v: cluster never recovered: %w", a.name, a.inj.Nodes(), err)
	}
	a.r.rec.update(a.ev, func(e *Evidence) {
		if e.End.IsZero() {
			e.End = time.Now()
		}
	})
	return nil
}

// RecoverTimeout bounds Recover when its context has no deadline.
const RecoverTimeout = 3 * time.Minute

// Recover is the cleanup: heal if not healed yet, then wait until the
// cluster has recovered. Safe to call after a Heal.
func (a *Active) Recover(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, RecoverTimeout)
		defer cancel()
	}
	a.mu.Lock()
	healed := a.healed
	a.mu.Unlock()
	if !healed {
		if err := a.Heal(ctx); err != nil {
			return err
		}
	}
	return a.WaitHealed(ctx)
}

// Evidence is this injection's record so far.
func (a *Active) Evidence() Evidence {
	for _, e := range a.r.rec.Records() {
		if e.Fault == a.ev.Fault && e.Start.Equal(a.ev.Start) {
			return e
		}
	}
	return Evidence{}
}

// Cleanup registers a function to run when the caller's scope ends:
// Ginkgo's DeferCleanup (which accepts func(context.Context) error) or
// CleanupFor(t) for a *testing.T.
type Cleanup func(args ...any)

// InjectFor injects the named fault and registers its recovery with
// cleanup before returning, so the cluster is healed however the caller
// ends:
//
//	a, err := fault.InjectFor(ctx, runner, DeferCleanup, "kill", fault.Args{Nodes: []string{"n1"}})
//	if errors.Is(err, fault.ErrUnavailable) { Skip(err.Error()) }
func InjectFor(ctx context.Context, r *Runner, cleanup Cleanup, name string, a Args) (*Active, error) {
	act, err := r.InjectName(ctx, name, a)
	if err != nil {
		return nil, err
	}
	cleanup(func(ctx context.Context) error { return act.Recover(ctx) })
	return act, nil
}

// TB is the part of testing.TB CleanupFor needs.
type TB interface {
	Cleanup(func())
	Errorf(format string, args ...any)
}

// CleanupFor adapts t.Cleanup to a Cleanup: recovery runs with a fresh
// context bounded by RecoverTimeout, and its error fails the test.
func CleanupFor(t TB) Cleanup {
	return func(args ...any) {
		f, ok := args[0].(func(context.Context) error)
		if !ok {
			t.Errorf("fault.CleanupFor: unexpected cleanup %T", args[0])
			return
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), RecoverTimeout)
			defer cancel()
			if err := f(ctx); err != nil {
				t.Errorf("fault recovery: %v", err)
			}
		})
	}
}
