// Package bench is `make bench`: one run that starts a membershipd cluster
// and a plain three-node nats-server cluster (client TLS, mutual TLS
// routes with their own route CA, static nkey user, R3 SyncAlways stream)
// side by side, measures the same workloads on both and
// returns one table (membershipd, plain, ratio). It never asserts: the
// table is the output. Numbers depend on the machine's load; every row
// says what it measured in the notes.
package bench

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/chaos/process"
	"github.com/unibus/clusterkit/chaos/report"
	"github.com/unibus/clusterkit/membershipd/identity"
)

// Options configures a run.
type Options struct {
	// Quick shrinks every workload (smoke check, seconds not minutes).
	Quick bool
	// Membershipd and NatsServer are built binaries for the process rows
	// (failover, fail-closed, reconnect storm).
	Membershipd, NatsServer string
	// Dir holds both clusters' certificates, stores and logs.
	Dir string
	Log *slog.Logger
	// Profile, if set, starts a CPU profile that the returned func stops;
	// Run calls it around each cluster's pub-recv and throughput
	// workloads with names cpu-membershipd.pprof and cpu-plain.pprof.
	Profile func(name string) (stop func())
	// Rows, if set, limits the run to the workloads behind these row
	// names (e.g. just quorum-s while tuning bring-up); the other rows
	// stay null. Unknown names are an error.
	Rows []string
}

// Sizes of the workloads.
type sizes struct {
	connects, quorumRuns                   int
	latCount                               int
	latRate                                float64
	tpCount, cpCount, userAdds, stormConns int
	failover                               failoverShape
}

func (o Options) sizes() sizes {
	if o.Quick {
		return sizes{connects: 40, quorumRuns: 1, latCount: 200, latRate: 500, tpCount: 500, cpCount: 20, userAdds: 10,
			stormConns: 30, failover: failoverShape{count: 300, rate: 300, at: 100}}
	}
	return sizes{connects: 200, quorumRuns: 5, latCount: 2000, latRate: 500, tpCount: 5000, cpCount: 300, userAdds: 100,
		stormConns: 500, failover: failoverShape{count: 1500, rate: 300, at: 500}}
}

// Result is a run's table plus the raw data behind the charts.
type Result struct {
	Table report.BenchTable
	// Latency is every publish-to-receive latency of the paced run, sorted.
	Latency map[string][]time.Duration // "membershipd", "plain"
	// Gaps is the failover receive gap per fault and cluster.
	Gaps map[fault]map[string]time.Duration
}

// Workload groups: each row is measured by one of them, and Options.Rows
// runs only the groups its rows need.
const (
	groupSteady = "steady" // in-process clusters: connects, latency, throughput, control plane
	groupQuorum = "quorum" // fresh in-process clusters, start to quorum
	groupFaults = "faults" // process clusters: failover, storm, fail-closed
)

// Row names, in table order.
var rowOrder = []struct{ name, unit, group string }{
	{"connect-seq-per-s", "1/s", groupSteady},
	{"connect-conc16-per-s", "1/s", groupSteady},
	{"pub-recv-p50-ms", "ms", groupSteady},
	{"pub-recv-p99-ms", "ms", groupSteady},
	{"throughput-msgs-per-s", "1/s", groupSteady},
	{"control-plane-p50-ms", "ms", groupSteady},
	{"control-plane-p99-ms", "ms", groupSteady},
	{"user-add-p50-ms", "ms", groupSteady},
	{"user-add-p99-ms", "ms", groupSteady},
	{"quorum-s", "s", groupQuorum},
	{"failover-stop-gap-ms", "ms", groupFaults},
	{"failover-kill-gap-ms", "ms", groupFaults},
	{"failover-leader-kill-gap-ms", "ms", groupFaults},
	{"fail-closed-s", "s", groupFaults},
	{"reconnect-storm-s", "s", groupFaults},
	{"reconnect-storm-lost", "clients", groupFaults},
}

// groups is the set of workload groups rows need (every group when rows
// is empty).
func groups(rows []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, want := range rows {
		found := false
		for _, r := range rowOrder {
			if r.name == want {
				out[r.group], found = true, true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown row %q (rows: %v)", want, RowNames())
		}
	}
	if len(rows) == 0 {
		for _, r := range rowOrder {
			out[r.group] = true
		}
	}
	return out, nil
}

// RowNames are the table's row names in order.
func RowNames() []string {
	var out []string
	for _, r := range rowOrder {
		out = append(out, r.name)
	}
	return out
}

// run is one Run's state.
type run struct {
	o     Options
	sz    sizes
	log   *slog.Logger
	vals  map[string][2]*float64
	notes []string
	res   Result
}

func (r *run) set(name string, m, p *float64) { r.vals[name] = [2]*float64{m, p} }

func (r *run) note(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	r.log.Info("bench", "note", msg)
	r.notes = append(r.notes, msg)
}

// fail notes a measurement that did not complete; its rows stay null.
func (r *run) fail(what string, err error) {
	r.note("%s: not measured: %v", what, err)
}

func f(v float64) *float64           { return &v }
func msOf(d time.Duration) *float64  { return f(float64(d) / float64(time.Millisecond)) }
func secOf(d time.Duration) *float64 { return f(d.Seconds()) }

// hostPort is the host:port of a client URL (tls://host:port).
func hostPort(u string) string {
	if _, hp, ok := strings.Cut(u, "://"); ok {
		return hp
	}
	return u
}

func orNil(ok bool, v *float64) *float64 {
	if ok {
		return v
	}
	return nil
}

// Run measures every row. Failures of single measurements become notes
// and null values, never an error: only a cluster that does not start at
// all is one.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Log == nil {
		o.Log = discard()
	}
	r := &run{o: o, sz: o.sizes(), log: o.Log, vals: map[string][2]*float64{},
		res: Result{Latency: map[string][]time.Duration{}, Gaps: map[fault]map[string]time.Duration{}}}
	want, err := groups(o.Rows)
	if err != nil {
		return Result{}, err
	}
	if o.Quick {
		r.note("quick mode: small workloads, numbers are a smoke check only")
	}
	if len(o.Rows) > 0 {
		r.note("only the workloads for rows %v were run; the other rows are null", o.Rows)
	}
	if want[groupSteady] {
		if err := r.steady(ctx); err != nil {
			return Result{}, err
		}
	}
	if want[groupQuorum] {
		r.quorum(ctx)
	}
	if want[groupFaults] {
		if err := r.faults(ctx); err != nil {
			return Result{}, err
		}
	}
	for _, row := range rowOrder {
		v := r.vals[row.name]
		br := report.BenchRow{Name: row.name, Unit: row.unit, Membershipd: v[0], Plain: v[1]}
		if v[0] != nil && v[1] != nil && *v[1] != 0 {
			br.Ratio = f(*v[0] / *v[1])
		}
		r.res.Table.Rows = append(r.res.Table.Rows, br)
	}
	r.res.Table.Notes = r.notes
	return r.res, nil
}

// steady measures the steady-state rows on an in-process membershipd
// cluster and an in-process plain cluster, both in this process.
func (r *run) steady(ctx context.Context) error {
	dir := filepath.Join(r.o.Dir, "steady")
	// Direct routes, as deployed and as the plain cluster's: the specs'
	// route proxies would add a hop to every raft message.
	c, err := inproc.New(inproc.Options{Dir: filepath.Join(dir, "membershipd"), Log: discard(), DirectRoutes: true})
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// Each cluster's goroutines carry a profiler label (inherited by the
	// goroutines they start; nats-server relabels some of its own, so the
	// split is partial): go tool pprof -tags shows CPU per cluster.
	pprof.Do(sctx, pprof.Labels("cluster", "membershipd"), func(ctx context.Context) { err = c.StartAll(ctx) })
	if err != nil {
		return err
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		return err
	}
	if _, err := hc.WaitHealthy(sctx, c.Nodes()...); err != nil {
		return err
	}
	m, err := newMember(sctx, c, "bench")
	if err != nil {
		return err
	}
	if err := m.createRoom(sctx, "bench-steady"); err != nil {
		return err
	}
	t := c.TLS()
	rt, err := mintPlainRoutes(filepath.Join(dir, "plain"))
	if err != nil {
		return err
	}
	var p *inprocPlain
	pprof.Do(sctx, pprof.Labels("cluster", "plain"), func(context.Context) { p, err = startInprocPlain(filepath.Join(dir, "plain"), t, rt, m.id) })
	if err != nil {
		return err
	}
	defer p.close()
	if err := p.waitHealthy(sctx); err != nil {
		return err
	}
	p1 := p.urls()[:1]
	pdial := func() (*nats.Conn, error) { return plainDial(t, m.id, p1, nats.NoReconnect()) }
	ms := membershipdSide(m)
	ps, err := plainSide(sctx, pdial)
	if err != nil {
		return err
	}
	r.log.Info("bench: clusters up", "membershipd", c.Target(), "plain", "inproc")

	// Connect rates: TLS + nkey auth + first round trip + close, to node 1.
	for _, w := range []struct {
		row     string
		workers int
	}{{"connect-seq-per-s", 1}, {"connect-conc16-per-s", 16}} {
		mv, merr := connectRate(ms.dial, w.workers, r.sz.connects)
		pv, perr := connectRate(pdial, w.workers, r.sz.connects)
		if merr != nil {
			r.fail(w.row+" membershipd", merr)
		}
		if perr != nil {
			r.fail(w.row+" plain", perr)
		}
		r.set(w.row, orNil(merr == nil, f(mv)), orNil(perr == nil, f(pv)))
	}

	// Paced publish -> receive: 40-byte plaintexts (clientcheck's size);
	// plain messages are as large as membershipd's sealed envelopes.
	env, err := ms.seal(make([]byte, 40))
	if err != nil {
		return err
	}
	// Throughput: 1 KiB plaintexts, async publish (256 in flight), acked.
	// Each cluster's two workloads run under its own CPU profile (when
	// asked for): the other cluster idles meanwhile, so the profiles
	// compare where each spends its time.
	var lat [2][]time.Duration
	var tp [2]*float64
	for i, s := range []side{ms, ps} {
		size := 40
		if s.name == "plain" {
			size = len(env)
		}
		stop := func() {}
		if r.o.Profile != nil {
			stop = r.o.Profile("cpu-" + s.name + ".pprof")
		}
		l, err := latencyRun(sctx, s, r.sz.latCount, r.sz.latRate, size)
		if err != nil {
			r.fail("pub-recv "+s.name, err)
		} else {
			lat[i] = l
			r.res.Latency[s.name] = l
		}
		v, err := throughput(sctx, s, r.sz.tpCount, 1024)
		stop()
		if err != nil {
			r.fail("throughput "+s.name, err)
			continue
		}
		tp[i] = f(v)
	}
	r.set("pub-recv-p50-ms", orNil(lat[0] != nil, msOf(pct(lat[0], 50))), orNil(lat[1] != nil, msOf(pct(lat[1], 50))))
	r.set("pub-recv-p99-ms", orNil(lat[0] != nil, msOf(pct(lat[0], 99))), orNil(lat[1] != nil, msOf(pct(lat[1], 99))))
	r.note("pub-recv: %d messages at %g/s, one publisher and one consumer on node 1; membershipd E2E-sealed into the room stream, read through the member's control-plane-made pull consumer (explicit acks; %s); plain through an ordered consumer", r.sz.latCount, r.sz.latRate, m.placement(sctx))

	r.set("throughput-msgs-per-s", tp[0], tp[1])
	// What sealing alone allows one publishing goroutine: the ceiling of
	// membershipd's throughput row on this machine.
	if d, err := timeEach(1, func(int) error {
		p := make([]byte, 1024)
		for range 500 {
			if _, err := ms.seal(p); err != nil {
				return err
			}
		}
		return nil
	}); err == nil {
		r.note("E2E sealing alone (1 KiB, one goroutine, no network): %.0f msgs/s on this machine, the ceiling for one sealing publisher", 500/d[0].Seconds())
	}
	r.note("throughput: %d messages of 1 KiB (membershipd: sealed to ~%d bytes), async publish with at most 256 unacked, one stream", r.sz.tpCount, 1024+len(env)-40)

	// Control plane: GET /v1/me, signed with a fresh nonce each time.
	if _, err := m.api.Me(sctx); err != nil { // learns the cluster name, warms the connection
		r.fail("control-plane", err)
	} else if d, err := timeEach(r.sz.cpCount, func(int) error { _, err := m.api.Me(sctx); return err }); err != nil {
		r.fail("control-plane", err)
	} else {
		r.set("control-plane-p50-ms", msOf(pct(d, 50)), nil)
		r.set("control-plane-p99-ms", msOf(pct(d, 99)), nil)
		r.note("control-plane: %d signed GET /v1/me (Ed25519 signature, nonce, cluster name), keep-alive HTTPS", r.sz.cpCount)
	}

	// user add: the store call `membershipd user add` makes (the users KV,
	// over the node's internal connection), one new user each time.
	if d, err := userAdds(sctx, c, r.sz.userAdds); err != nil {
		r.fail("user-add", err)
	} else {
		r.set("user-add-p50-ms", msOf(pct(d, 50)), nil)
		r.set("user-add-p99-ms", msOf(pct(d, 99)), nil)
		r.note("user-add: %d kv.Users.AddUser calls on one connection (the CLI's store call; the CLI process itself adds its start-up, TLS connect and exit)", r.sz.userAdds)
	}
	return nil
}

func userAdds(ctx context.Context, c *inproc.Cluster, n int) ([]time.Duration, error) {
	nc, err := chaos.DialInternal(c, c.Nodes()[0])
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	users, err := usersStore(nc)
	if err != nil {
		return nil, err
	}
	ids := make([]*identity.Identity, n)
	for i := range ids {
		if ids[i], err = identity.Generate(); err != nil {
			return nil, err
		}
	}
	return timeEach(n, func(i int) error {
		return users(ctx, ids[i], fmt.Sprintf("bench-add-%d", i))
	})
}

// quorum measures start-to-quorum (membershipd: every node's /healthz ok)
// and start-to-all-healthy (plain: every server's healthz ok), fresh
// in-process clusters, median of the runs.
func (r *run) quorum(ctx context.Context) {
	var md, pd []time.Duration
	for i := range r.sz.quorumRuns {
		dir := filepath.Join(r.o.Dir, fmt.Sprintf("quorum%d", i))
		d, err := mQuorum(ctx, filepath.Join(dir, "membershipd"))
		if err != nil {
			r.fail("quorum membershipd", err)
		} else {
			md = append(md, d)
		}
		d, err = pQuorum(ctx, filepath.Join(dir, "plain"), r)
		if err != nil {
			r.fail("quorum plain", err)
		} else {
			pd = append(pd, d)
		}
	}
	r.set("quorum-s", orNil(len(md) > 0, secOf(median(md))), orNil(len(pd) > 0, secOf(median(pd))))
	r.note("quorum: three in-process nodes started together, start to every node healthy, median of %d (membershipd %s; plain %s)", r.sz.quorumRuns, fmtDurs(md), fmtDurs(pd))
}

func mQuorum(ctx context.Context, dir string) (time.Duration, error) {
	c, err := inproc.New(inproc.Options{Dir: dir, Log: discard(), DirectRoutes: true})
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.Close() }()
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		return 0, err
	}
	qctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	if err := c.StartAll(qctx); err != nil {
		return 0, err
	}
	for {
		all := true
		for _, n := range c.Nodes() {
			if !hc.Get(qctx, n.HealthzURL()).OK() {
				all = false
				break
			}
		}
		if all {
			return time.Since(t0), nil
		}
		select {
		case <-qctx.Done():
			return 0, fmt.Errorf("no quorum: %w", qctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func pQuorum(ctx context.Context, dir string, r *run) (time.Duration, error) {
	// The plain cluster needs certificates and a user: mint a throwaway
	// layout (not timed).
	_, layout, err := chaos.MintLocal(dir, 1)
	if err != nil {
		return 0, err
	}
	t := chaos.TLSFromLayout(layout, func(string) string { return "" })
	id, err := identity.Generate()
	if err != nil {
		return 0, err
	}
	rt, err := mintPlainRoutes(dir)
	if err != nil {
		return 0, err
	}
	qctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	p, err := startInprocPlain(dir, t, rt, id)
	if err != nil {
		return 0, err
	}
	defer p.close()
	if err := p.waitHealthy(qctx); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// faults measures the rows that need a node to die: a membershipd process
// cluster (chaos/process) and a plain nats-server process cluster.
func (r *run) faults(ctx context.Context) error {
	if r.o.Membershipd == "" || r.o.NatsServer == "" {
		r.note("failover, fail-closed and reconnect-storm rows: not measured (no membershipd or nats-server binary given)")
		return nil
	}
	dir := filepath.Join(r.o.Dir, "faults")
	c, err := process.New(process.Options{Dir: filepath.Join(dir, "membershipd"), Binary: r.o.Membershipd, Log: discard()})
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	sctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	if err := chaos.StartNodes(sctx, c.Nodes()...); err != nil {
		return err
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		return err
	}
	if _, err := hc.WaitHealthy(sctx, c.Nodes()...); err != nil {
		return err
	}
	m, err := newMember(sctx, c, "bench-faults")
	if err != nil {
		return err
	}
	r.cliUserAdd(sctx, c)
	t := c.TLS()
	p, err := newProcPlain(r.o.NatsServer, filepath.Join(dir, "plain"), t, m.id, r.log)
	if err != nil {
		return err
	}
	defer p.close()
	if err := p.startAll(); err != nil {
		return err
	}
	pdial := func(opts ...nats.Option) (*nats.Conn, error) { return plainDial(t, m.id, p.urls(), opts...) }
	if err := plainReady(sctx, p, pdial); err != nil {
		return err
	}

	rows := map[fault]string{faultStop: "failover-stop-gap-ms", faultKill: "failover-kill-gap-ms", faultLeaderKill: "failover-leader-kill-gap-ms"}
	for _, fl := range []fault{faultStop, faultKill, faultLeaderKill} {
		r.res.Gaps[fl] = map[string]time.Duration{}
		mg, note, merr := mFailover(sctx, c, hc, m, fl, r.sz.failover)
		if merr != nil {
			r.fail(rows[fl]+" membershipd", merr)
		} else {
			r.res.Gaps[fl]["membershipd"] = mg
		}
		if note != "" {
			r.note("%s", note)
		}
		pg, note, perr := plainFailover(sctx, p, pdial, fl, r.sz.failover)
		if perr != nil {
			r.fail(rows[fl]+" plain", perr)
		} else {
			r.res.Gaps[fl]["plain"] = pg
		}
		if note != "" {
			r.note("%s", note)
		}
		r.set(rows[fl], orNil(merr == nil, msOf(mg)), orNil(perr == nil, msOf(pg)))
	}
	r.note("failover: longest gap between receipts, %d messages at %g/s, fault after message %d; membershipd: clientcheck's probe library; plain: paced publisher retrying with the same Nats-Msg-Id plus an ordered consumer. stop = SIGTERM, kill = SIGKILL of the client's node (on both clusters never the stream's leader); leader-kill = SIGKILL of the stream leader",
		r.sz.failover.count, r.sz.failover.rate, r.sz.failover.at)

	// Reconnect storm: clients connected with every seed; SIGKILL node 1.
	limit := 60 * time.Second
	mdial := func(opts ...nats.Option) (*nats.Conn, error) {
		return m.dialAll(opts...)
	}
	ms, mlost, mdrop, merr := storm(sctx, r.sz.stormConns, mdial, hostPort(c.Nodes()[0].ClientURL()), func() error {
		return c.Nodes()[0].(chaos.Killer).Kill(sctx, chaos.DefaultLease)
	}, limit)
	if merr != nil {
		r.fail("reconnect-storm membershipd", merr)
		// Why node 1 took no client: what its healthz said then.
		pr := hc.Get(sctx, c.Nodes()[0].HealthzURL())
		r.note("reconnect-storm membershipd: node 1's healthz after the failure: %s", pr)
	}
	if err := c.Nodes()[0].Start(sctx); err != nil {
		return err
	}
	ps, plost, pdrop, perr := storm(sctx, r.sz.stormConns, pdial, hostPort(p.urls()[0]), func() error { return p.signal(0, syscall.SIGKILL) }, limit)
	if perr != nil {
		r.fail("reconnect-storm plain", perr)
	}
	r.set("reconnect-storm-s", orNil(merr == nil, secOf(ms)), orNil(perr == nil, secOf(ps)))
	r.set("reconnect-storm-lost", orNil(merr == nil, f(float64(mlost))), orNil(perr == nil, f(float64(plost))))
	r.note("reconnect-storm: %d clients connected with every seed (random order), node 1 SIGKILLed; time until every client that lost its connection (membershipd %d, plain %d) was re-admitted (lost: not re-admitted within %s)", r.sz.stormConns, mdrop, pdrop, limit)

	// Fail-closed last: it leaves the cluster without quorum.
	if _, err := hc.WaitHealthy(sctx, c.Nodes()...); err != nil {
		r.fail("fail-closed", err)
		return nil
	}
	d, err := failClosed(sctx, c, m.id)
	if err != nil {
		r.fail("fail-closed", err)
	} else {
		r.set("fail-closed-s", secOf(d), nil)
		r.note("fail-closed: nodes 2 and 3 SIGKILLed; time from the second kill to node 1's first refused login")
	}
	return nil
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func fmtDurs(d []time.Duration) string {
	out := "["
	for i, x := range d {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.2fs", x.Seconds())
	}
	return out + "]"
}

// cliUserAdd times the whole `membershipd user add` process (start, TLS
// connect, the KV write, exit) on the process cluster: the part of the
// CLI's cost that user-add-p50-ms leaves out. A note, not a row.
func (r *run) cliUserAdd(ctx context.Context, c *process.Cluster) {
	n := 5
	if r.o.Quick {
		n = 2
	}
	d, err := timeEach(n, func(i int) error {
		id, err := identity.Generate()
		if err != nil {
			return err
		}
		res, err := c.CLI(ctx, c.Nodes()[0], "user", "add", "--handle", fmt.Sprintf("bench-cli-%d", i), "--sign-pub", id.SignPub())
		if err != nil {
			return err
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("exit %d: %s", res.ExitCode, res.Stderr)
		}
		return nil
	})
	if err != nil {
		r.fail("membershipd user add (CLI process)", err)
		return
	}
	r.note("user-add via the CLI process (`membershipd user add`, start to exit, process cluster): median %.0f ms of %d", ms(median(d)), n)
}
