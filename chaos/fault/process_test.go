package fault_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/clustertest"
	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/chaos/process"
)

// TestFaultsOnProcessTarget runs the node and link faults against three
// real membershipd processes and checks each one with the fault's own
// observers plus /healthz from outside: kill → port refuses → restart →
// healthy; pause → healthz silent → resume → healthy; drop partition → the
// isolated node answers 503 → heal → 200.
func TestFaultsOnProcessTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of processes")
	}
	dir := t.TempDir()
	bin := buildDaemon(t, dir)
	c, hc := clustertest.Process(t, process.Options{Dir: dir, Binary: bin, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wait := func(d time.Duration) (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, d) }

	r := fault.NewRunner(c, nil)
	step := func(name string, a fault.Args, during func(*fault.Active)) {
		t.Helper()
		start := time.Now()
		act, err := fault.InjectFor(ctx, r, fault.CleanupFor(t), name, a)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		w, done := wait(30 * time.Second)
		defer done()
		if err := act.WaitInjected(w); err != nil {
			t.Fatal(err)
		}
		injected := time.Since(start)
		if during != nil {
			during(act)
		}
		if err := act.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		healStart := time.Now()
		w2, done2 := wait(90 * time.Second)
		defer done2()
		if err := act.WaitHealed(w2); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s %v: observed after %s, recovered %s after heal", name, act.Nodes(), injected.Round(time.Millisecond), time.Since(healStart).Round(time.Millisecond))
	}

	n1, n2, n3 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	step("kill", fault.Args{Nodes: []string{n1.Name()}}, func(*fault.Active) {
		if p := hc.Get(ctx, n1.HealthzURL()); p.Err == nil {
			t.Fatalf("killed node answered healthz: %s", p)
		}
	})
	step("pause", fault.Args{Nodes: []string{n2.Name()}}, func(*fault.Active) {
		if !n2.Running() {
			t.Fatal("paused node is not running")
		}
	})
	step("partition", fault.Args{Nodes: []string{n3.Name()}, Mode: fault.Drop}, func(*fault.Active) {
		// The gate must deny on the isolated node; the majority stays up.
		var first time.Time
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if p := hc.Get(ctx, n3.HealthzURL()); p.Code == http.StatusServiceUnavailable {
				first = p.At
				break
			}
			time.Sleep(chaos.Poll)
		}
		if first.IsZero() {
			t.Fatalf("isolated %s never answered 503", n3.Name())
		}
		w, done := wait(30 * time.Second)
		defer done()
		if _, err := hc.WaitHealthy(w, n1, n2); err != nil {
			t.Fatalf("majority not healthy during the partition: %v", err)
		}
	})

	recs := r.Recorder().Records()
	if len(recs) != 3 {
		t.Fatalf("%d injections recorded, want 3", len(recs))
	}
	for _, e := range recs {
		if e.Injected.IsZero() || e.End.IsZero() || e.Error != "" {
			t.Fatalf("incomplete evidence %+v", e)
		}
	}
	b, _ := json.MarshalIndent(r.Recorder(), "", "  ")
	t.Logf("evidence: %s", b)
}

// TestUnavailableOnInproc: the in-process target cannot signal one node
// and says so; it is never given another fault instead.
func TestUnavailableOnInproc(t *testing.T) {
	c, err := inproc.New(inproc.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	for _, name := range []string{"kill", "pause", "part-kill"} {
		f, err := fault.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		err = f.Available(c, fault.Args{Nodes: []string{"n1", "n2"}})
		if err == nil {
			t.Fatalf("%s available on inproc", name)
		}
		t.Logf("%s: %v", name, err)
	}
	for _, name := range []string{"stop", "restart", "partition", "one-way", "latency"} {
		f, _ := fault.Lookup(name)
		if err := f.Available(c, fault.Args{}); err != nil {
			t.Fatalf("%s unavailable on inproc: %v", name, err)
		}
	}
}

func buildDaemon(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "membershipd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../membershipd").CombinedOutput(); err != nil {
		t.Fatalf("build membershipd: %v\n%s", err, out)
	}
	return bin
}

// TestLinkFaultsOnProcessTarget: one-way, isolate-leader (rst, of the meta
// group), latency and part-kill, each observed and healed on real
// processes.
func TestLinkFaultsOnProcessTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of processes")
	}
	dir := t.TempDir()
	c, hc := clustertest.Process(t, process.Options{Dir: dir, Binary: buildDaemon(t, dir)})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := fault.NewRunner(c, nil)
	for _, tc := range []struct {
		name string
		args fault.Args
	}{
		{"one-way", fault.Args{Nodes: []string{"n1"}, Rest: []string{"n2"}}},
		{"isolate-leader", fault.Args{Stream: "meta", Mode: fault.RST}},
		{"latency", fault.Args{Nodes: []string{"n2"}, Latency: 200 * time.Millisecond}},
		{"part-kill", fault.Args{Nodes: []string{"n3", "n1"}, Mode: fault.Drop}},
	} {
		start := time.Now()
		act, err := fault.InjectFor(ctx, r, fault.CleanupFor(t), tc.name, tc.args)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		w, done := context.WithTimeout(ctx, 30*time.Second)
		if err := act.WaitInjected(w); err != nil {
			t.Fatal(err)
		}
		done()
		observed := time.Since(start)
		for _, n := range c.Nodes() {
			t.Logf("  during %s: %s %s", tc.name, n.Name(), hc.Get(ctx, n.HealthzURL()))
		}
		if err := act.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		healStart := time.Now()
		w, done = context.WithTimeout(ctx, 90*time.Second)
		if err := act.WaitHealed(w); err != nil {
			t.Fatal(err)
		}
		done()
		t.Logf("%s %v: observed after %s, recovered %s after heal", tc.name, act.Nodes(), observed.Round(time.Millisecond), time.Since(healStart).Round(time.Millisecond))
	}
}
