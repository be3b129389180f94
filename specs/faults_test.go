package specs

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/check"
	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/storehash"
	"github.com/unibus/clusterkit/membershipd/admin"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Specs of runbook faults (issue 9's claims: crash, pause, partitions)
// share these helpers. They read inject → observe → heal → check through
// the fault package; every injection is recorded by the spec's Runner and
// written as evidence next to the health timelines.

// Fault labels the specs that inject a typed fault (chaos/fault); `make
// chaos` runs them on the process target.
var Fault = Label("fault")

// Deadlines of the fault claims, with margins for a loaded 2-core machine.
const (
	// electionBudget: a majority takes writes again within this of losing
	// a leader (raft election 4-9 s on 2.15.2, plus the client noticing a
	// silent server: two missed 2 s pings).
	electionBudget = 15 * time.Second
	// holdWindow: a fault is held this long while the claim's observers
	// run (the claims' "holds that for 20 s", plus the 2 s to deny).
	holdWindow = 22 * time.Second
	// convergeBudget: after a heal the healed node's allowlist equals the
	// KV within this.
	convergeBudget = 30 * time.Second
)

// faultRunner is a fault.Runner for env's cluster whose evidence is
// written when the spec ends, after every fault's recovery (cleanups run
// last-in first-out, so this one, registered first, runs last).
func faultRunner(env *Env) *fault.Runner {
	GinkgoHelper()
	r := fault.NewRunner(env.Cluster, nil)
	DeferCleanup(func() { Evidence("fault-injections", r.Recorder()) })
	return r
}

// inject injects the named fault with its recovery registered as a
// cleanup; a fault the target cannot take skips the spec with the fault's
// own reason.
func inject(ctx context.Context, r *fault.Runner, name string, a fault.Args) *fault.Active {
	GinkgoHelper()
	act, err := fault.InjectFor(ctx, r, DeferCleanup, name, a)
	if errors.Is(err, fault.ErrUnavailable) {
		Skip(err.Error())
	}
	Expect(err).NotTo(HaveOccurred())
	return act
}

// faultGuard is for a container whose specs need faults: check them in
// BeforeAll before a cluster is started for nothing, and each spec that
// needs an unavailable fault is skipped with that fault's own reason (a
// Skip in BeforeAll would give only the first spec that reason).
type faultGuard struct{ why map[string]error }

// check records whether env's cluster can take each fault (with no args:
// the node capabilities); it returns false when it can take none of them
// (do not start the cluster).
func (g *faultGuard) check(env *Env, faults ...string) bool {
	GinkgoHelper()
	g.why = map[string]error{}
	some := false
	for _, name := range faults {
		f, err := fault.Lookup(name)
		Expect(err).NotTo(HaveOccurred())
		if g.why[name] = f.Available(env.Cluster, fault.Args{}); g.why[name] == nil {
			some = true
		}
	}
	return some
}

// need skips the spec when fault name is unavailable on this target.
func (g *faultGuard) need(name string) {
	if err := g.why[name]; err != nil {
		Skip(err.Error())
	}
}

// observe waits until the fault is seen from outside and returns how long
// that took from inject.
func observe(ctx context.Context, act *fault.Active, within time.Duration) time.Duration {
	GinkgoHelper()
	wctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	Expect(act.WaitInjected(wctx)).To(Succeed())
	e := act.Evidence()
	return e.Injected.Sub(e.Start)
}

// heal undoes the fault and waits until the whole cluster has recovered;
// it returns the time from heal to recovered.
func heal(ctx context.Context, act *fault.Active) time.Duration {
	GinkgoHelper()
	Expect(act.Heal(ctx)).To(Succeed())
	wctx, cancel := context.WithTimeout(ctx, restartBudget)
	defer cancel()
	Expect(act.WaitHealed(wctx)).To(Succeed())
	e := act.Evidence()
	return e.End.Sub(e.HealStart)
}

// measure records a number in the checklist's measurements, named by
// fault and target so runs on different targets can be compared.
func measure(env *Env, faultName, what string, v any) {
	if d, ok := v.(time.Duration); ok {
		v = d.Round(time.Millisecond).String()
	}
	AddReportEntry(fmt.Sprintf("%s [%s]: %s", faultName, env.Cluster.Target(), what), fmt.Sprint(v), ReportEntryVisibilityFailureOrVerbose)
}

// Replica is one server's own copy of a stream (admin.Replica).
type Replica = admin.Replica

// Replicas asks every server, through node via, for its own state of
// stream: one Replica per server that holds a copy. Each server answers
// from its local store (JSZ with stream details), so a replica that missed
// writes shows a lower last sequence or count, and one that holds
// different messages a different byte count. Where the controller holds
// the internal identity (local targets) it asks directly; elsewhere (ssh)
// it runs `membershipd cluster replicas` on the node, as an operator would.
func Replicas(ctx context.Context, c chaos.Cluster, via chaos.Node, stream string) ([]Replica, error) {
	if _, ok := c.TLS().InternalID[via.Name()]; ok {
		nc, err := chaos.DialInternal(c, via)
		if err != nil {
			return nil, err
		}
		defer nc.Close()
		return admin.Replicas(ctx, nc, stream, len(c.Nodes()))
	}
	r, err := c.CLI(ctx, via, "cluster", "replicas", "--stream", stream, "--json", "--nodes", fmt.Sprint(len(c.Nodes())))
	if err != nil {
		return nil, err
	}
	var out []Replica
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		return nil, fmt.Errorf("cluster replicas on %s: exit %d: %s", via.Name(), r.ExitCode, strings.TrimSpace(r.Stderr))
	}
	return out, nil
}

// expectReplicasEqual waits until every replica of stream holds want
// messages and all agree on first/last sequence, count and bytes; it
// returns how long that took and the replicas last seen.
func expectReplicasEqual(ctx context.Context, env *Env, stream string, replicas int, want uint64) (time.Duration, []Replica) {
	GinkgoHelper()
	start := time.Now()
	var last []Replica
	Eventually(func(g Gomega) {
		rs, err := Replicas(ctx, env.Cluster, env.Cluster.Nodes()[0], stream)
		g.Expect(err).NotTo(HaveOccurred())
		last = rs
		g.Expect(rs).To(HaveLen(replicas), "replicas of %s: %+v", stream, rs)
		for _, r := range rs {
			g.Expect(r.Msgs).To(Equal(want), "%s's copy of %s: %s", r.Node, stream, r.Same())
			g.Expect(r.Same()).To(Equal(rs[0].Same()), "%s and %s disagree on %s", r.Node, rs[0].Node, stream)
		}
	}).WithContext(ctx).WithTimeout(convergeBudget).WithPolling(500 * time.Millisecond).Should(Succeed())
	Evidence("replicas-"+stream, last)
	expectContentEqual(ctx, env, stream)
	return time.Since(start), last
}

// storeReader: a target whose nodes' store dirs the controller can read
// (process and in-process; not ssh, whose stores stay on the hosts).
type storeReader interface {
	StoreDir(n chaos.Node) (string, error)
}

// expectContentEqual compares what every replica of a quiet stream holds,
// message by message: each node's own copy is read from a copy of its
// store (chaos/storehash, an embedded standalone server) and hashed over
// sequence, subject, headers and data. Equal counts and sequences do not
// prove equal messages; equal hashes do. On ssh the comparison stays on
// each server's own sequences, count and bytes (said in the report).
func expectContentEqual(ctx context.Context, env *Env, stream string) {
	GinkgoHelper()
	sd, ok := env.Cluster.(storeReader)
	if !ok {
		AddReportEntry("replica content of "+stream, "not hashed on target "+env.Cluster.Target()+" (stores stay on the hosts): per-server sequences, count and bytes compared")
		return
	}
	hashes := map[string]string{}
	for _, n := range env.Cluster.Nodes() {
		dir, err := sd.StoreDir(n)
		Expect(err).NotTo(HaveOccurred())
		streams, err := storehash.ReadCopy(ctx, dir, func(s string) bool { return s != stream })
		Expect(err).NotTo(HaveOccurred(), "read %s's copy of %s", n.Name(), stream)
		if len(streams) == 0 {
			continue // no replica on this node (N > R)
		}
		Expect(streams[0].Unreadable).To(BeEmpty(), "%s's copy of %s", n.Name(), stream)
		hashes[n.Name()] = streams[0].Hash
	}
	Evidence("replica-content-"+stream, hashes)
	Expect(hashes).NotTo(BeEmpty())
	var first string
	for name, h := range hashes {
		if first == "" {
			first = name
		}
		Expect(h).To(Equal(hashes[first]), "%s and %s hold different messages in %s", name, first, stream)
	}
	AddReportEntry("replica content of "+stream, fmt.Sprintf("%d replicas hash equal (sha256 over seq, subject, headers, data)", len(hashes)))
}

// prober runs attempts in the background and keeps them, so a spec can
// check afterwards what each node let through during a fault.
type prober struct {
	mu   sync.Mutex
	as   map[string][]check.Attempt
	wg   sync.WaitGroup
	stop chan struct{}
}

func newProber() *prober { return &prober{as: map[string][]check.Attempt{}, stop: make(chan struct{})} }

// every runs try every interval under key until Stop.
func (p *prober) every(key string, interval time.Duration, try func() check.Attempt) {
	p.everyFrom(key, time.Time{}, interval, try)
}

// everyFrom is every, starting at from (unless Stop comes first): an
// attempt that blocks (a CLI's 10 s timeout) leaves gaps in one prober's
// starts, so a window a claim judges gets a prober of its own.
func (p *prober) everyFrom(key string, from time.Time, interval time.Duration, try func() check.Attempt) {
	p.wg.Add(1)
	go func() {
		defer GinkgoRecover()
		defer p.wg.Done()
		select {
		case <-p.stop:
			return
		case <-time.After(time.Until(from)):
		}
		for {
			a := try()
			p.mu.Lock()
			p.as[key] = append(p.as[key], a)
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-time.After(interval):
			}
		}
	}()
}

// Stop ends every prober and returns the attempts by key.
func (p *prober) Stop() map[string][]check.Attempt {
	close(p.stop)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.as
}

// tryConnect is one connection attempt of id to node n: refused when the
// server denies authorization.
func tryConnect(env *Env, n chaos.Node, id *identity.Identity) check.Attempt {
	at := time.Now()
	nc, err := chaos.DialAs(env.Cluster, n, id)
	a := check.Attempt{Start: at, End: time.Now(), Refused: errors.Is(err, nats.ErrAuthorization)}
	if err == nil {
		a.Detail = "connected"
		nc.Close()
	} else {
		a.Detail = err.Error()
	}
	return a
}

// tryUserAdd is one `user add` through the CLI on node n: refused when it
// exits 1 saying no quorum. acked gets the identity when the add succeeded.
func tryUserAdd(ctx context.Context, env *Env, n chaos.Node, acked func(*identity.Identity)) check.Attempt {
	id, err := identity.Generate()
	if err != nil {
		return check.Attempt{Start: time.Now(), End: time.Now(), Detail: err.Error()}
	}
	env.Tried(id)
	at := time.Now()
	r, err := env.Cluster.CLI(ctx, n, "user", "add", "--store", "kv", "--handle", SpecHandle("fault"), "--role", "member", "--sign-pub", id.SignPub())
	a := check.Attempt{Start: at, End: time.Now()}
	if err != nil {
		a.Detail = err.Error()
		return a
	}
	a.Refused = r.ExitCode == 1 && strings.Contains(r.Stderr, "no quorum")
	a.Detail = fmt.Sprintf("%s: exit %d: %s%s", id.SignPub(), r.ExitCode, strings.TrimSpace(r.Stdout), strings.TrimSpace(r.Stderr))
	if r.ExitCode == 0 && acked != nil {
		acked(id)
	}
	return a
}

// apiClient is an HTTPS client trusting the cluster's client CA; it never
// fails the spec (probers run in goroutines).
func apiClient(env *Env) *http.Client {
	GinkgoHelper()
	pool, err := pki.CertPoolFromFile(env.Cluster.TLS().ClientCA)
	Expect(err).NotTo(HaveOccurred())
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}
}

// trySigned is one signed control-plane GET by id to node n (cluster is
// the cluster's name, learnt before the fault): refused when the node
// answers 401, 403 or 503 (denied, revoked, or failed closed).
func trySigned(hc *http.Client, n chaos.Node, cluster string, id *identity.Identity, path string) check.Attempt {
	a := check.Attempt{Start: time.Now()}
	req, err := http.NewRequest(http.MethodGet, apiBase(n)+path, nil)
	if err != nil {
		a.End, a.Detail = time.Now(), err.Error()
		return a
	}
	req.Header.Set(identity.HeaderCluster, cluster)
	if err := identity.SignRequest(req, nil, id, time.Now()); err != nil {
		a.End, a.Detail = time.Now(), err.Error()
		return a
	}
	resp, err := hc.Do(req)
	if err != nil {
		a.End = time.Now()
		a.Detail = err.Error()
		return a
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	a.End = time.Now()
	a.Refused = slices.Contains([]int{http.StatusUnauthorized, http.StatusForbidden, http.StatusServiceUnavailable}, resp.StatusCode)
	a.Detail = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
	return a
}

// meCall is trySigned's path: every registered user may ask who it is.
const meCall = api.PathMe

// firstAt is the time of the first attempt matching ok, or zero.
func firstAt(as []check.Attempt, ok func(check.Attempt) bool) time.Time {
	for _, a := range as {
		if ok(a) {
			return a.Start
		}
	}
	return time.Time{}
}

// revoke revokes pub through the CLI on node n and returns when it was
// acknowledged.
func (e *Env) revoke(ctx context.Context, n chaos.Node, pub string) time.Time {
	GinkgoHelper()
	r := e.CLI(ctx, n, "user", "revoke", "--store", "kv", pub)
	Expect(r.ExitCode).To(Equal(0), r.Stderr)
	return time.Now()
}

// heartbeatSlack: heartbeats keep arriving (four per node per second), so
// healthy replicas of that stream differ by the few messages in flight.
const heartbeatSlack = 64

// replicaLag names a replica of stream that trails the others (stream ""
// when none does), and why.
type replicaLag struct{ stream, node, why string }

// replicaBehind finds a replica of one of streams that does not hold what
// the others hold: the heartbeat stream must have a replica on every node
// and may trail by heartbeatSlack (puts in flight), the others by nothing.
func replicaBehind(ctx context.Context, env *Env, streams ...string) replicaLag {
	for _, s := range streams {
		rs, err := Replicas(ctx, env.Cluster, env.Cluster.Nodes()[0], s)
		if err != nil {
			return replicaLag{s, "", err.Error()}
		}
		if s == kv.StreamName(kv.HeartbeatsBucket) && len(rs) != len(env.Cluster.Nodes()) {
			return replicaLag{s, "", fmt.Sprintf("%d of %d replicas answered: %+v", len(rs), len(env.Cluster.Nodes()), rs)}
		}
		var top uint64
		for _, r := range rs {
			top = max(top, r.LastSeq)
		}
		slack := uint64(0)
		if s == kv.StreamName(kv.HeartbeatsBucket) {
			slack = heartbeatSlack
		}
		for _, r := range rs {
			if r.LastSeq+slack < top {
				return replicaLag{s, r.Node, fmt.Sprintf("%s's copy is at %d, the others' at %d", r.Node, r.LastSeq, top)}
			}
		}
	}
	return replicaLag{}
}

// waitWhole waits, before a fault spec picks its victim, until every
// replica of the heartbeat and users streams holds what the others hold: a
// claim is about one fault on a whole cluster, and a follower the previous
// fault left catching up would turn it into a two-node fault (seen on the
// simulated hosts: nats-server 2.15.2 looped "Expected first catchup entry
// to be a snapshot and peerstate, will retry" on the heartbeat stream until
// its leadership moved, and the gate spec's one-node cut then stalled the
// heartbeats on the majority). A replica still behind after 15 s gets the
// operator's remedies in turn, each recorded in the report: its stream's
// leader steps down (`membershipd cluster stepdown`), then its node is
// restarted; one still behind after that is recorded in the report.
func waitWhole(ctx context.Context, env *Env) {
	GinkgoHelper()
	streams := []string{kv.StreamName(kv.HeartbeatsBucket), kv.StreamName(kv.UsersBucket)}
	wait := func(budget time.Duration) replicaLag {
		deadline := time.Now().Add(budget)
		for {
			if l := replicaBehind(ctx, env, streams...); l.stream == "" || time.Now().After(deadline) || ctx.Err() != nil {
				return l
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	start := time.Now()
	l := wait(15 * time.Second)
	if l.stream == "" {
		return
	}
	AddReportEntry("before the fault: a replica stuck behind; its stream's leader stepped down", fmt.Sprintf("%s: %s (after %s)", l.stream, l.why, time.Since(start).Round(time.Millisecond)))
	Expect(stepDown(ctx, env, l.stream)).To(Succeed())
	if l = wait(15 * time.Second); l.stream == "" {
		return
	}
	if n := env.Cluster.Node(l.node); n != nil {
		AddReportEntry("before the fault: still stuck after the step-down; its node restarted", fmt.Sprintf("%s: %s", l.stream, l.why))
		Expect(n.Stop(ctx)).To(Succeed())
		Expect(n.Start(ctx)).To(Succeed())
		env.WaitHealthy(ctx, restartBudget, env.Cluster.Nodes()...)
	}
	// Still behind: recorded, and the spec goes on to judge its claim on
	// the cluster as it is (a replica stuck through a step-down and a
	// restart was seen once on the process target: a NATS finding, kept
	// in the report rather than failing a claim it does not bear on).
	if l = wait(convergeBudget); l.stream != "" {
		AddReportEntry("before the fault: still not whole after the remedies", fmt.Sprintf("%s: %s", l.stream, l.why))
	}
}

// stepDown asks the leader of stream to step down, directly where the
// controller holds the internal identity, else with the on-node CLI.
func stepDown(ctx context.Context, env *Env, stream string) error {
	via := env.Cluster.Nodes()[0]
	if _, ok := env.Cluster.TLS().InternalID[via.Name()]; ok {
		nc, err := chaos.DialInternal(env.Cluster, via)
		if err != nil {
			return err
		}
		defer nc.Close()
		return admin.StepDown(ctx, nc, stream)
	}
	r, err := env.Cluster.CLI(ctx, via, "cluster", "stepdown", "--stream", stream)
	if err != nil {
		return err
	}
	if r.ExitCode != 0 {
		return fmt.Errorf("cluster stepdown on %s: exit %d: %s", via.Name(), r.ExitCode, strings.TrimSpace(r.Stderr))
	}
	return nil
}
