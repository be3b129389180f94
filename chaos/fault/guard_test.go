package fault

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/unibus/clusterkit/chaos"
)

// counter is a test double that counts what the runner asks of it and can
// be told to fail.
type counter struct {
	name                     string
	injects, heals           int
	failInject, failHeal     bool
	unavailable              bool
	waitInjected, waitHealed int
}

func (f *counter) Name() string { return f.name }
func (f *counter) Available(chaos.Cluster, Args) error {
	if f.unavailable {
		return errors.Join(ErrUnavailable, errors.New("not here"))
	}
	return nil
}
func (f *counter) Inject(context.Context, chaos.Cluster, Args) (Injection, error) {
	f.injects++
	if f.failInject {
		return nil, errors.New("boom")
	}
	return &injection{
		nodes:   []string{"n1"},
		waitInj: func(context.Context) error { f.waitInjected++; return nil },
		heal: func(context.Context) error {
			f.heals++
			if f.failHeal {
				return errors.New("heal boom")
			}
			return nil
		},
		waitHealed: func(context.Context) error { f.waitHealed++; return nil },
	}, nil
}

func TestGuardRefusesDoubleInject(t *testing.T) {
	ctx := context.Background()
	r := NewRunner(nil, nil)
	f := &counter{name: "x"}
	a, err := r.Inject(ctx, f, Args{Nodes: []string{"n1"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.State("x") != "active" {
		t.Fatalf("state %s", r.State("x"))
	}
	if _, err := r.Inject(ctx, f, Args{}); !errors.Is(err, ErrState) {
		t.Fatalf("double inject: %v, want ErrState", err)
	}
	if f.injects != 1 {
		t.Fatalf("fault injected %d times", f.injects)
	}
	if err := a.WaitInjected(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Heal(ctx); !errors.Is(err, ErrState) {
		t.Fatalf("double heal: %v, want ErrState", err)
	}
	if err := a.Recover(ctx); err != nil { // already healed: only waits
		t.Fatal(err)
	}
	if f.heals != 1 || f.waitHealed != 1 {
		t.Fatalf("heals %d, waitHealed %d", f.heals, f.waitHealed)
	}
	// ready again: a new injection is allowed.
	if _, err := r.Inject(ctx, f, Args{}); err != nil {
		t.Fatalf("inject after heal: %v", err)
	}
}

func TestGuardInvalidAfterError(t *testing.T) {
	ctx := context.Background()
	r := NewRunner(nil, nil)
	f := &counter{name: "x", failInject: true}
	if _, err := r.Inject(ctx, f, Args{}); err == nil {
		t.Fatal("inject error swallowed")
	}
	if r.State("x") != "invalid" {
		t.Fatalf("state %s after inject error", r.State("x"))
	}
	f.failInject = false
	if _, err := r.Inject(ctx, f, Args{}); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("inject on invalid: %v", err)
	}

	g := &counter{name: "y", failHeal: true}
	a, err := r.Inject(ctx, g, Args{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Recover(ctx); err == nil {
		t.Fatal("heal error swallowed")
	}
	if r.State("y") != "invalid" {
		t.Fatalf("state %s after heal error", r.State("y"))
	}
	// Faults are guarded separately.
	if _, err := r.Inject(ctx, &counter{name: "z"}, Args{}); err != nil {
		t.Fatal(err)
	}
}

func TestUnavailableTouchesNothing(t *testing.T) {
	r := NewRunner(nil, nil)
	f := &counter{name: "x", unavailable: true}
	if _, err := r.Inject(context.Background(), f, Args{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v", err)
	}
	if f.injects != 0 || r.State("x") != "ready" || len(r.Recorder().Records()) != 0 {
		t.Fatalf("unavailable fault was touched: injects %d state %s", f.injects, r.State("x"))
	}
}

// fakeT records Cleanup and Errorf like a *testing.T.
type fakeT struct {
	cleanups []func()
	errs     []string
}

func (t *fakeT) Cleanup(f func())                  { t.cleanups = append(t.cleanups, f) }
func (t *fakeT) Errorf(format string, args ...any) { t.errs = append(t.errs, format) }

// TestInjectForRecovers: the cleanup InjectFor registers heals a fault the
// caller never healed, and records the whole lifecycle.
func TestInjectForRecovers(t *testing.T) {
	f := &counter{name: "count"}
	All = append(All, f)
	defer func() { All = All[:len(All)-1] }()
	r := NewRunner(nil, nil)
	ft := &fakeT{}
	a, err := InjectFor(context.Background(), r, CleanupFor(ft), "count", Args{Nodes: []string{"n1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WaitInjected(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(ft.cleanups) != 1 {
		t.Fatalf("%d cleanups registered", len(ft.cleanups))
	}
	ft.cleanups[0]()
	if f.heals != 1 || f.waitHealed != 1 || len(ft.errs) != 0 || r.State("count") != "ready" {
		t.Fatalf("heals %d waitHealed %d errs %v state %s", f.heals, f.waitHealed, ft.errs, r.State("count"))
	}
	recs := r.Recorder().Records()
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	e := recs[0]
	if e.Fault != "count" || e.Injected.IsZero() || e.HealStart.IsZero() || e.End.IsZero() || e.EndMS < e.StartMS {
		t.Fatalf("evidence %+v", e)
	}
	b, err := json.Marshal(r.Recorder())
	if err != nil || !strings.Contains(string(b), `"fault":"count"`) {
		t.Fatalf("json %s %v", b, err)
	}
	if _, err := InjectFor(context.Background(), r, CleanupFor(ft), "nope", Args{}); !errors.Is(err, ErrUnknown) {
		t.Fatalf("unknown fault: %v", err)
	}
}

func TestRegistry(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range All {
		if seen[f.Name()] {
			t.Fatalf("fault %s registered twice", f.Name())
		}
		seen[f.Name()] = true
		g, err := Lookup(f.Name())
		if err != nil || g.Name() != f.Name() {
			t.Fatalf("lookup %s: %v", f.Name(), err)
		}
	}
	for _, want := range []string{"stop", "kill", "pause", "restart", "partition", "one-way", "isolate-leader", "latency", "part-kill"} {
		if !seen[want] {
			t.Errorf("fault %s not registered", want)
		}
	}
}
