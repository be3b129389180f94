// Package nemesis runs a seeded, reproducible fault schedule against a
// cluster while workloads record every client operation as history: the
// probes' numbered messages, users add / revoke / get, connection attempts
// by every kind of identity, signed control-plane requests with deliberate
// replays, /healthz probes. After the final heal it gathers what the
// replicas and every node's allowlist hold, judges the run, and writes
// everything to one directory (history.jsonl, schedule.json, faults.json,
// replicas.json, allowlists.json, final_read.json, verdict.json, node
// logs).
//
// One seed drives the schedule (quiet and fault periods, faults, victims,
// modes) and, through separate streams of it, each workload's timing and
// mix. The schedule that actually ran is schedule.json; a replay injects
// the same steps at the same offsets.
package nemesis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
	"github.com/unibus/clusterkit/chaos/report"
	"github.com/unibus/clusterkit/chaos/validate"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Config is one nemesis run.
type Config struct {
	Seed     uint64
	Duration time.Duration
	// Faults to draw from; empty: every fault the target can take.
	Faults []string
	Target string // "process" (default) or "ssh"
	Sync   string // serve --sync for every node ("" keeps the default, always)
	// SSH is the deployed cluster of the ssh target; AllowDisruptive must
	// be set for it (the nemesis stops, kills and cuts off its nodes).
	SSH             SSHTarget
	AllowDisruptive bool
	// Replay, when set, is the schedule to inject instead of drawing one.
	Replay     *Schedule
	ReplayPath string
	Binary     string // membershipd
	OutRoot    string // runs go to OutRoot/<timestamp>-<seed>
	Size       int    // nodes, default 3
	// Probes and ProbeRate: concurrent probes and messages per second each.
	Probes    int
	ProbeRate float64
	Log       *slog.Logger
	Out       io.Writer // progress lines for the operator
}

// SSHTarget is what the ssh target needs, as the specs' live run takes it.
type SSHTarget struct {
	NodesFile string // nodes.env
	CertsDir  string // `runbook certs` output
	SSHConfig string // ssh_config the aliases resolve through ("" ~/.ssh/config)
	SimDir    string // the simulated hosts' state dir, if they are the hosts
}

// ErrBadInput wraps every configuration error (exit 2).
var ErrBadInput = errors.New("bad input")

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadInput, fmt.Sprintf(format, a...))
}

func (c *Config) defaults() error {
	if c.Target == "" {
		c.Target = "process"
	}
	switch c.Target {
	case "process":
	case "ssh":
		if !c.AllowDisruptive {
			return bad("target ssh: the nemesis kills, pauses, stops and cuts off nodes of the deployed cluster; opt in with --allow-disruptive (make nemesis TARGET=ssh LIVEFLAGS=--allow-disruptive)")
		}
		if c.SSH.NodesFile == "" {
			return bad("target ssh: needs --nodes FILE (the cluster's nodes.env; make nemesis NODES=FILE)")
		}
		if c.Sync != "" {
			return bad("target ssh: --sync %q sets how local nodes are started; a deployed cluster runs with its own unit's settings", c.Sync)
		}
		if c.Replay != nil && c.Replay.Target != "" && c.Replay.Target != c.Target {
			return bad("replay of a %s run on target ssh: the nodes differ", c.Replay.Target)
		}
	default:
		return bad("target %q: the nemesis runs on the process target (TARGET=process) or a deployed cluster over SSH (TARGET=ssh); inproc cannot kill or pause one node", c.Target)
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Minute
	}
	if c.Duration < 20*time.Second {
		return bad("duration %s: want at least 20s (a quiet period and one fault)", c.Duration)
	}
	if c.Target == "process" {
		// The ssh target runs the binary deployed on the hosts.
		if c.Binary == "" {
			return bad("no membershipd binary (build it: go build -o bin/membershipd ./membershipd)")
		}
		if _, err := os.Stat(c.Binary); err != nil {
			return bad("membershipd binary: %v (build it: go build -o bin/membershipd ./membershipd)", err)
		}
	}
	if c.OutRoot == "" {
		c.OutRoot = filepath.Join("out", "nemesis")
	}
	if c.Size == 0 {
		c.Size = 3
	}
	if c.Probes == 0 {
		c.Probes = 3
	}
	if c.ProbeRate == 0 {
		c.ProbeRate = 8
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	for _, f := range c.Faults {
		if _, err := fault.Lookup(f); err != nil {
			return bad("FAULTS: %v", err)
		}
	}
	if c.Replay != nil {
		c.Duration = time.Duration(c.Replay.DurationMS) * time.Millisecond
		c.Seed = c.Replay.Seed
		if c.Sync == "" {
			c.Sync = c.Replay.Sync
		}
	}
	return nil
}

// Result is a finished run.
type Result struct {
	Dir      string
	Verdict  Verdict
	Schedule Schedule
}

// Run runs the nemesis. A configuration error wraps ErrBadInput; a run
// that could not start (no healthy cluster) returns an error with the
// directory filled in; otherwise the verdict says green, red or invalid.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	dir := filepath.Join(cfg.OutRoot, fmt.Sprintf("%s-%d", time.Now().Format("20060102-150405"), cfg.Seed))
	res := Result{Dir: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	c, err := newCluster(cfg, dir)
	if err != nil {
		return res, err
	}
	defer func() { _ = c.Close() }()
	nodeNames := make([]string, 0, len(c.Nodes()))
	for _, n := range c.Nodes() {
		nodeNames = append(nodeNames, n.Name())
	}
	faults, err := chooseFaults(c, cfg, nodeNames)
	if err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Out, "nemesis: seed %d, duration %s, target %s, faults %v, sync %q, out %s\n", cfg.Seed, cfg.Duration, cfg.Target, faults, cfg.Sync, dir)
	if cfg.Replay != nil {
		fmt.Fprintf(cfg.Out, "nemesis: replaying %s (%d steps)\n", cfg.ReplayPath, len(cfg.Replay.Steps))
	}

	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if c.Target() != "ssh" {
		// A deployed cluster is running already (its units start it).
		if err := chaos.StartNodes(sctx, c.Nodes()...); err != nil {
			return res, fmt.Errorf("start the cluster: %w", err)
		}
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		return res, err
	}
	if _, err := hc.WaitHealthy(sctx, c.Nodes()...); err != nil {
		return res, fmt.Errorf("cluster never healthy: %w", err)
	}
	e := &env{c: c, nodes: c.Nodes(), tls: c.TLS(), seed: cfg.Seed, log: cfg.Log, cli: !internalReachable(c, c.Nodes()[0])}
	// Workloads: the probes stop publishing on stop and drain; the rest
	// end with their context.
	var pwg, wwg sync.WaitGroup
	wctx, stopWorkloads := context.WithCancel(ctx)
	defer stopWorkloads()
	pctx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	ids, err := generateIdentities(cfg.Probes)
	if err != nil {
		return res, err
	}
	if c.Target() == "ssh" {
		// A live run leaves the cluster's users as it found them: every
		// user the run may have added is revoked at the end, after a
		// failure or an interrupt too (deferred: it runs before the
		// cluster's Close, once the workloads stopped).
		defer func() {
			stopWorkloads()
			stopProbes()
			waitTimeout(&wwg, time.Minute)
			waitTimeout(&pwg, time.Minute)
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
			defer cancel()
			left, err := revokeActive(cctx, c, ids.keys())
			switch {
			case err != nil:
				fmt.Fprintf(cfg.Out, "nemesis: users the run added are still active: %v (%v); revoke them: membershipd user revoke --store kv KEY\n", left, err)
			default:
				fmt.Fprintf(cfg.Out, "nemesis: every user the run added is revoked (%d keys checked, none active after)\n", len(ids.keys()))
			}
		}()
	}
	if err := setupIdentities(sctx, e, ids); err != nil {
		return res, fmt.Errorf("set up identities: %w", err)
	}

	base := time.Now()
	e.hist = history.NewRecorder(base)
	frec := fault.NewRecorder(base)
	runner := fault.NewRunner(c, frec)

	pw := &probeWorkload{e: e, ids: ids.probes, rate: cfg.ProbeRate, count: int(cfg.ProbeRate*cfg.Duration.Seconds()*1.5) + 100, stop: make(chan struct{})}
	pw.start(pctx, &pwg)
	if err := healthWorkload(wctx, e, &wwg); err != nil {
		return res, err
	}
	(&usersWorkload{e: e, keys: ids.churn, workers: 2, cliFrac: 0.2}).start(wctx, &wwg)
	(&connectWorkload{e: e, roles: map[string][]*identity.Identity{
		RoleRegistered: {ids.registered}, RoleUnregistered: {ids.unregistered}, RoleRevoked: {ids.revoked}, RoleChurn: ids.churn,
	}}).start(wctx, &wwg)
	rw, err := newRequestWorkload(e, ids.registered, append([]*identity.Identity{ids.revoked}, ids.churn...)...)
	if err != nil {
		return res, err
	}
	if err := rw.learnCluster(ctx); err != nil {
		return res, err
	}
	rw.start(wctx, &wwg)

	// Warm-up: the first quiet period starts once every workload has
	// succeeded once, so the rate before the first fault measures the
	// workloads at speed, not their start-up (probes make their rooms).
	if missing := warmUp(ctx, e.hist, warmUpMax); len(missing) > 0 {
		fmt.Fprintf(cfg.Out, "nemesis: after %s of warm-up no %v op succeeded yet; starting the schedule anyway\n", warmUpMax, missing)
	}

	sched := Schedule{Seed: cfg.Seed, Target: cfg.Target, DurationMS: cfg.Duration.Milliseconds(), Faults: faults, Sync: cfg.Sync,
		ReplayOf: cfg.ReplayPath, Reproduces: replayReproduces, CannotReproduce: replayCannot}
	end := time.Now().Add(cfg.Duration)
	if cfg.Replay != nil {
		end = base.Add(cfg.Duration)
	}
	nm := &nemesisLoop{e: e, runner: runner, base: base, end: end, out: cfg.Out}
	if cfg.Replay != nil {
		nm.replay = cfg.Replay.Steps
	} else {
		nm.plan = newPlanner(cfg.Seed, faults, nodeNames)
	}
	nm.run(ctx)
	sched.Steps = nm.steps
	if cfg.Replay != nil {
		// A replay that did not keep the recorded schedule reproduces
		// nothing: say so rather than judge it as one.
		if text, ok := replayCheck(cfg.Replay.Steps, nm.steps); !ok {
			nm.invalid = append(nm.invalid, "replay of "+cfg.ReplayPath+": "+text)
		}
	}
	sched.DurationMS = end.Sub(base).Milliseconds()

	// Wait out the duration (a schedule may end early), then healthy.
	_ = sleepCtx(ctx, time.Until(end))
	fmt.Fprintf(cfg.Out, "nemesis: %s of faults done (%d steps); waiting for a healthy cluster\n", cfg.Duration, len(nm.steps))
	hctx, hcancel := context.WithTimeout(ctx, 3*time.Minute)
	_, herr := hc.WaitHealthy(hctx, c.Nodes()...)
	hcancel()
	switch {
	case ctx.Err() != nil:
		// Interrupted (Ctrl-C, SIGTERM): the faults were healed, the rest
		// is cut short, so the run is not judged green or red.
		nm.invalid = append(nm.invalid, fmt.Sprintf("interrupted at %d ms: %v", e.hist.MS(time.Now()), context.Cause(ctx)))
	case herr != nil:
		nm.red = append(nm.red, fmt.Sprintf("cluster not healthy 3 min after the final heal: %v", herr))
	}
	close(pw.stop)
	stopWorkloads()
	wwg.Wait()
	// The users bucket no longer changes: the allowlists must converge
	// from here (the final heal came earlier).
	healMS := e.hist.MS(time.Now())
	if n := len(nm.steps); n > 0 && nm.steps[n-1].HealedMS > healMS {
		healMS = nm.steps[n-1].HealedMS
	}
	fmt.Fprintf(cfg.Out, "nemesis: gathering allowlists, replicas and final reads\n")
	gctx, gcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer gcancel()
	als := gatherAllowlists(gctx, e, 20*time.Second)
	waitTimeout(&pwg, 60*time.Second)
	stopProbes()
	pwg.Wait()
	endMS := e.hist.MS(time.Now())

	reps := gatherReplicas(gctx, e, pw.roomStreams(), 20*time.Second)
	var reads []FinalRead
	if !e.cli {
		// Without an internal connection nothing may read a room stream
		// whole (members read only through their own consumer): the queue
		// checker judges the ssh target's rooms by the probes' deliveries.
		for _, s := range pw.roomStreams() {
			t0 := time.Now()
			fr := finalRead(gctx, c, e.nodes[0], s)
			fr.StartMS, fr.EndMS = e.hist.MS(t0), e.hist.MS(time.Now())
			reads = append(reads, fr)
		}
	}
	slices.SortFunc(reads, func(a, b FinalRead) int { return strings.Compare(a.Stream, b.Stream) })
	if sd, ok := c.(storeDirs); ok {
		// Each replica's own messages: stop the cluster and read every
		// node's store (a copy) standalone.
		fmt.Fprintf(cfg.Out, "nemesis: stopping the cluster to hash every replica's store\n")
		t0 := time.Now()
		reps = withContent(gctx, reps, c, sd)
		fmt.Fprintf(cfg.Out, "nemesis: stores hashed in %s\n", time.Since(t0).Round(time.Millisecond))
	}

	// The workloads' history, then the final reads as drain ops.
	work := e.hist.Ops()
	for _, op := range drainOps(reads, e.nodes[0].Name()) {
		e.hist.Add(op)
	}
	ops := e.hist.Ops()
	firstFault := int64(-1)
	if len(sched.Steps) > 0 {
		firstFault = sched.Steps[0].InjectMS
	}
	fmt.Fprintf(cfg.Out, "nemesis: judging %d ops\n", len(ops))
	v := judge(judgeInput{ops: ops, faults: frec.Records(), nodes: nodeNames, firstFault: firstFault, durationMS: endMS,
		reps: reps, als: als, healMS: healMS, red: nm.red, invald: nm.invalid})
	v.Seed = cfg.Seed
	v.Stats = stats(work, firstFault, endMS)
	res.Verdict, res.Schedule = v, sched

	werr := writeAll(dir, ops, sched, frec, reps, als, reads, v)
	if err := c.Close(); err != nil {
		cfg.Log.Warn("close cluster", "err", err)
	}
	if v.Status == validate.Green {
		// The stores are large and judged already; the logs stay.
		for _, n := range nodeNames {
			_ = os.RemoveAll(filepath.Join(dir, "cluster", n, "jetstream"))
		}
	}
	if err := writeReport(dir, cfg, base, nodeNames, ops, frec.Records(), v, sched); err != nil && werr == nil {
		werr = err
	}
	return res, werr
}

// warmUpMax bounds the wait for every workload's first success.
const warmUpMax = 30 * time.Second

// warmUp waits until an op of every required kind succeeded, or max
// passed; it returns the kinds still missing.
func warmUp(ctx context.Context, h *history.Recorder, max time.Duration) []history.Kind {
	deadline := time.Now().Add(max)
	for {
		missing := kindsSeen(h.Ops())
		if len(missing) == 0 || time.Now().After(deadline) || sleepCtx(ctx, 200*time.Millisecond) != nil {
			return missing
		}
	}
}

// writeReport writes porcupine.html and report.html through chaos/report.
func writeReport(dir string, cfg Config, base time.Time, nodes []string, ops []history.Op, faults []fault.Evidence, v Verdict, sched Schedule) error {
	sync := "the binary's default"
	if cfg.Sync != "" {
		sync = cfg.Sync
	}
	notes := []string{
		fmt.Sprintf("Seed %d, duration %s, target %s, faults drawn from %s, serve --sync %s. Replay: make nemesis REPLAY=%s",
			cfg.Seed, cfg.Duration, cfg.Target, strings.Join(sched.Faults, ", "), sync, filepath.Join(dir, "schedule.json")),
		"A replay reproduces " + sched.Reproduces + ".",
		"A replay cannot reproduce " + sched.CannotReproduce + ".",
		divergenceNote(cfg.Target),
		fmt.Sprintf("%d ops (%.1f ops/s; %.1f ops/s before the first fault); checked in %s.", v.Stats.Ops, v.Stats.OpsPerSecond, v.Stats.PreFaultOpsPerSecond, v.Report.Elapsed.Round(time.Millisecond)),
	}
	if cfg.Replay != nil {
		notes = append(notes, "This run replays "+cfg.ReplayPath+": "+ReplayDrift(cfg.Replay.Steps, sched.Steps)+".")
	}
	var errs []error
	if _, err := report.WriteVisualization(dir, v.Report.Linearizability); err != nil {
		errs = append(errs, err)
		notes = append(notes, "No porcupine page: "+err.Error())
	}
	rep := v.Report
	errs = append(errs, report.WritePage(dir, report.Page{
		Title: fmt.Sprintf("nemesis seed %d: %s", cfg.Seed, strings.ToUpper(string(v.Status))), Seed: int64(cfg.Seed), Target: cfg.Target,
		Base: base, Nodes: nodes, Notes: notes, Validation: &rep, Ops: ops, Faults: faults,
	}))
	return errors.Join(errs...)
}

// divergenceNote says what the replica-divergence checker compared.
func divergenceNote(target string) string {
	if target == "ssh" {
		return "Replica divergence compares each server's first/last sequence, message count and bytes (`membershipd cluster replicas --json` on a node); no content hash on this target: the stores of a deployed cluster are not copied off its hosts, and without an internal connection no stream is read back whole, so the rooms are judged by the probes' deliveries."
	}
	return "Replica divergence compares each server's first/last sequence, message count and bytes (JSZ) and a content hash of each node's own copy (every message's sequence, subject, headers and data, read from its store after the cluster stopped: chaos/storehash); the content of each room stream is also checked by its final read (drain ops in history.jsonl)."
}

// chooseFaults checks the requested faults against the target, or lists
// every fault it can take.
func chooseFaults(c chaos.Cluster, cfg Config, nodes []string) ([]string, error) {
	p := newPlanner(cfg.Seed, nil, nodes)
	if cfg.Replay != nil {
		var names []string
		for _, st := range cfg.Replay.Steps {
			f, _ := fault.Lookup(st.Fault)
			if err := f.Available(c, st.Args); err != nil {
				return nil, bad("replay step %s: %v", st.Fault, err)
			}
			if !slices.Contains(names, st.Fault) {
				names = append(names, st.Fault)
			}
		}
		return names, nil
	}
	if len(cfg.Faults) > 0 {
		for _, name := range cfg.Faults {
			f, _ := fault.Lookup(name)
			if err := f.Available(c, p.args(name)); err != nil {
				return nil, bad("FAULTS: %v", err)
			}
		}
		return cfg.Faults, nil
	}
	var out []string
	for _, f := range fault.All {
		if f.Available(c, p.args(f.Name())) == nil {
			out = append(out, f.Name())
		}
	}
	if len(out) == 0 {
		return nil, bad("target %s can take none of the faults", c.Target())
	}
	return out, nil
}

// identities of a run.
type identities struct {
	probes       []*identity.Identity
	registered   *identity.Identity
	unregistered *identity.Identity
	revoked      *identity.Identity
	churn        []*identity.Identity
}

// churnKeys is the users workload's key pool: small, so operations on one
// key overlap.
const churnKeys = 8

// generateIdentities makes the run's identities (none registered yet).
func generateIdentities(probes int) (identities, error) {
	var ids identities
	gen := func() (*identity.Identity, error) { return identity.Generate() }
	var err error
	for range probes {
		id, err := gen()
		if err != nil {
			return ids, err
		}
		ids.probes = append(ids.probes, id)
	}
	if ids.registered, err = gen(); err != nil {
		return ids, err
	}
	if ids.unregistered, err = gen(); err != nil {
		return ids, err
	}
	if ids.revoked, err = gen(); err != nil {
		return ids, err
	}
	for range churnKeys {
		id, err := gen()
		if err != nil {
			return ids, err
		}
		ids.churn = append(ids.churn, id)
	}
	return ids, nil
}

// keys are the sign keys the run may register: all but the unregistered.
func (ids identities) keys() []string {
	var out []string
	for _, id := range append(append(append([]*identity.Identity{}, ids.probes...), ids.registered, ids.revoked), ids.churn...) {
		out = append(out, id.SignPub())
	}
	return out
}

// setupIdentities registers the probes' and the registered identity,
// registers and revokes the revoked one, and waits until every node admits
// the registered ones and refuses the revoked one.
func setupIdentities(ctx context.Context, e *env, ids identities) error {
	setup := append(append([]*identity.Identity{}, ids.probes...), ids.registered, ids.revoked)
	if e.cli {
		n := e.nodes[0]
		for i, id := range setup {
			if err := cliAddUser(ctx, e.c, n, id.SignPub(), fmt.Sprintf("spec-nemesis-%d", i)); err != nil {
				return fmt.Errorf("add user: %w", err)
			}
		}
		if err := cliRevokeUser(ctx, e.c, n, ids.revoked.SignPub()); err != nil {
			return fmt.Errorf("revoke user: %w", err)
		}
	} else {
		nc, err := chaos.DialInternal(e.c, e.nodes[0])
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		users := kv.NewUsers(js)
		for i, id := range setup {
			if _, err := users.AddUser(ctx, store.User{SignPub: id.SignPub(), Handle: fmt.Sprintf("spec-nemesis-%d", i), Role: identity.RoleMember}); err != nil {
				return fmt.Errorf("add user: %w", err)
			}
		}
		if _, err := users.RevokeUser(ctx, ids.revoked.SignPub()); err != nil {
			return fmt.Errorf("revoke user: %w", err)
		}
	}
	for _, n := range e.nodes {
		for _, want := range []struct {
			id    *identity.Identity
			admit bool
		}{{ids.registered, true}, {ids.probes[len(ids.probes)-1], true}, {ids.revoked, false}} {
			for {
				unc, err := chaos.DialAs(e.c, n, want.id)
				if err == nil {
					unc.Close()
				}
				if (err == nil) == want.admit {
					break
				}
				if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
					return fmt.Errorf("%s never settled (admit %v): %w", n.Name(), want.admit, err)
				}
			}
		}
	}
	return nil
}

// nemesisLoop injects the schedule: drawn from the planner, or replayed.
type nemesisLoop struct {
	e      *env
	runner *fault.Runner
	base   time.Time
	end    time.Time
	out    io.Writer
	plan   *planner
	replay []Step

	steps   []Step
	invalid []string // the run cannot be judged (a fault never observed)
	red     []string // the cluster misbehaved under the nemesis (never recovered)
}

// firstQuiet: the least quiet time before the first fault, the window
// the minimum-traffic check measures.
const firstQuiet = 10 * time.Second

// tail is the quiet time kept at the end of a run before the final checks.
const tail = 5 * time.Second

// observeGrace: how long past its planned heal a fault may take to be
// observed before the run is invalid.
const observeGrace = 10 * time.Second

func (l *nemesisLoop) ms(t time.Time) int64 { return t.Sub(l.base).Milliseconds() }

func (l *nemesisLoop) run(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		var st Step
		var injectAt time.Time
		var hold time.Duration
		if l.replay != nil {
			if i >= len(l.replay) {
				return
			}
			st = l.replay[i]
			injectAt = l.base.Add(time.Duration(st.InjectMS) * time.Millisecond)
			hold = time.Duration(st.HealMS-st.InjectMS) * time.Millisecond
		} else {
			st = l.plan.next()
			if i == 0 {
				st.QuietMS = max(st.QuietMS, firstQuiet.Milliseconds())
			}
			injectAt = time.Now().Add(time.Duration(st.QuietMS) * time.Millisecond)
			hold = time.Duration(st.HoldMS) * time.Millisecond
			if injectAt.Add(hold).After(l.end.Add(-tail)) {
				return
			}
		}
		st.DriftMS, st.InjectedMS, st.HealMS, st.HealedMS, st.Error = 0, -1, -1, -1, ""
		if late := time.Since(injectAt); late > 0 {
			st.DriftMS = late.Milliseconds()
		}
		if sleepCtx(ctx, time.Until(injectAt)) != nil {
			return
		}
		ok := l.step(ctx, &st, hold)
		l.steps = append(l.steps, st)
		fmt.Fprintf(l.out, "nemesis: %-14s %-28s inject %6d ms  observed %6d ms  heal %6d ms  healed %6d ms %s\n",
			st.Fault, argsText(st.Args), st.InjectMS, st.InjectedMS, st.HealMS, st.HealedMS, st.Error)
		if !ok {
			return
		}
	}
}

// step injects one fault, observes it, holds it, heals it and waits for
// the recovery; false ends the schedule (the cluster is in an unknown
// state).
func (l *nemesisLoop) step(ctx context.Context, st *Step, hold time.Duration) bool {
	t0 := time.Now()
	st.InjectMS = l.ms(t0)
	act, err := l.runner.InjectName(ctx, st.Fault, st.Args)
	if err != nil {
		st.Error = err.Error()
		l.invalid = append(l.invalid, fmt.Sprintf("inject %s %s: %v", st.Fault, argsText(st.Args), err))
		return false
	}
	healAt := t0.Add(hold)
	octx, cancel := context.WithDeadline(ctx, healAt.Add(observeGrace))
	err = act.WaitInjected(octx)
	cancel()
	if err != nil {
		st.Error = err.Error()
		l.invalid = append(l.invalid, fmt.Sprintf("%s %s never observed: %v", st.Fault, argsText(st.Args), err))
	} else {
		st.InjectedMS = l.ms(act.Evidence().Injected)
	}
	_ = sleepCtx(ctx, time.Until(healAt))
	st.HealMS = l.ms(time.Now())
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), fault.RecoverTimeout)
	defer rcancel()
	if err := act.Recover(rctx); err != nil {
		st.Error = err.Error()
		l.red = append(l.red, fmt.Sprintf("%s %s: %v", st.Fault, argsText(st.Args), err))
		return false
	}
	st.HealedMS = l.ms(act.Evidence().End)
	return true
}

func argsText(a fault.Args) string {
	b, _ := json.Marshal(a)
	return string(b)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// writeAll writes the run's files.
func writeAll(dir string, ops []history.Op, sched Schedule, frec *fault.Recorder, reps Replicas, als Allowlists, reads []FinalRead, v Verdict) error {
	f, err := os.Create(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		return err
	}
	werr := history.Write(f, ops)
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return werr
	}
	for name, x := range map[string]any{
		"schedule.json": sched, "faults.json": frec, "replicas.json": reps, "allowlists.json": als,
		"final_read.json": reads, "verdict.json": v,
	} {
		b, err := json.MarshalIndent(x, "", "  ")
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}
