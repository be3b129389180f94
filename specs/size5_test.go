package specs

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/check"
	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Runbook section "Chaos test" at five nodes: the quorum gate proves a
// majority of the cluster, not of one stream. With five nodes and R3
// buckets two nodes can hold a majority of the nonces group; if they also
// hold the heartbeats leader, a gate that trusted one stream's commit
// would keep them serving. This spec makes its own five-node cluster, so it
// runs whatever --size the suite was given.
var _ = Describe("Chaos: the quorum gate at five nodes", func() {
	// electionGrace: the three-node side serves again within raft election
	// time plus the gate's grace; generous for a loaded 2-core machine.
	const electionGrace = 20 * time.Second

	It("denies on a two-node side holding the nonces group's majority within 2 s, while the three-node side serves within election time + grace",
		Claim("claim:size-5"), Fault, Disruptive, Slow, Partition, SpecTimeout(4*time.Minute), func(ctx SpecContext) {
			env := NewEnv("size5", chaos.ClusterSpec{Size: 5})
			f, err := fault.Lookup("partition")
			Expect(err).NotTo(HaveOccurred())
			if err := f.Available(env.Cluster, fault.Args{Mode: fault.Drop}); err != nil {
				Skip(err.Error())
			}
			env.StartAll(ctx)
			nodes := env.Cluster.Nodes()

			By("putting the nonces leader, a nonces replica and the heartbeats leader on the small side")
			nonces := streamPlacement(ctx, env, kv.StreamName(kv.NoncesBucket))
			small := []string{nonces.leader, nonces.followers[0]}
			// The heartbeats bucket (R = N) is not in the cluster report:
			// its leader from stream info. Moved onto the small side, so
			// the big side must elect one before it can commit a heartbeat.
			hbStream := kv.StreamName(kv.HeartbeatsBucket)
			hbLeader := streamPlacement(ctx, env, hbStream).leader
			if !slices.Contains(small, hbLeader) {
				moveLeader(ctx, env, hbStream, nonces.leader)
				hbLeader = nonces.leader
			}
			var big []string
			for _, n := range nodes {
				if !slices.Contains(small, n.Name()) {
					big = append(big, n.Name())
				}
			}
			Evidence("placement", map[string]any{"nonces_leader": nonces.leader, "nonces_followers": nonces.followers,
				"heartbeats_leader": hbLeader, "small_side": small, "big_side": big})

			runner := fault.NewRunner(env.Cluster, nil)
			DeferCleanup(func() { Evidence("fault-injections", runner.Recorder()) })
			w := env.Health.Watch(ctx, 100*time.Millisecond, nodes...)
			time.Sleep(2 * time.Second)
			cutAt := time.Now()
			act, err := fault.InjectFor(ctx, runner, DeferCleanup, "partition", fault.Args{Nodes: small, Rest: big, Mode: fault.Drop})
			Expect(err).NotTo(HaveOccurred())
			// Held past the grace long enough to see the big side stay up.
			time.Sleep(electionGrace + 10*time.Second)
			healAt := time.Now()
			Expect(act.Heal(ctx)).To(Succeed())
			tl := w.Stop()
			Evidence("healthz-timelines", tl)
			wctx, cancel := context.WithTimeout(ctx, restartBudget)
			defer cancel()
			Expect(act.WaitHealed(wctx)).To(Succeed())

			for _, name := range small {
				res, took := check.FailsClosedWithin(chaos.Of(tl, name), cutAt, healAt, denyDeadline)
				AddReportEntry("size-5: two-node side "+name+": partition to first 503", took.Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
				ExpectPass(res)
			}
			for _, name := range big {
				node := chaos.Of(tl, name)
				AddReportEntry("size-5: three-node side "+name+": last non-200 after the partition", lastNotOK(node, cutAt, healAt), ReportEntryVisibilityFailureOrVerbose)
				ExpectPass(check.AlwaysHealthy(check.Window(node, cutAt.Add(electionGrace), healAt), healAt.Sub(cutAt.Add(electionGrace))-time.Second))
			}
		})
})

// lastNotOK is when, after from, node last answered anything but 200 before
// until: "none" if it never did.
func lastNotOK(tl chaos.Timeline, from, until time.Time) string {
	last := time.Time{}
	for _, p := range check.Window(tl, from, until).Probes {
		if !p.OK() {
			last = p.At
		}
	}
	if last.IsZero() {
		return "none (200 throughout)"
	}
	return fmt.Sprintf("%s after the partition", last.Sub(from).Round(time.Millisecond))
}

// moveLeader makes node to the leader of stream: a leader step-down with
// to as the preferred placement, repeated until stream info names it.
func moveLeader(ctx context.Context, env *Env, stream, to string) {
	GinkgoHelper()
	req, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
	Expect(err).NotTo(HaveOccurred())
	Eventually(func(g Gomega) {
		if streamPlacement(ctx, env, stream).leader == to {
			return
		}
		nc, err := chaos.DialInternal(env.Cluster, env.Cluster.Nodes()[0])
		g.Expect(err).NotTo(HaveOccurred())
		defer nc.Close()
		m, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, 3*time.Second)
		g.Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("step-down of %s to %s: %s\n", stream, to, m.Data)
		g.Eventually(func() string { return streamPlacement(ctx, env, stream).leader }).
			WithTimeout(5 * time.Second).WithPolling(250 * time.Millisecond).Should(Equal(to))
	}).WithContext(ctx).WithTimeout(45*time.Second).WithPolling(time.Second).Should(Succeed(), "leader of %s moved to %s", stream, to)
}

// placement is a stream's raft group: its leader and followers.
type placement struct {
	leader    string
	followers []string
}

// streamPlacement reads a stream's leader and followers as the first node
// sees them, once it has both.
func streamPlacement(ctx context.Context, env *Env, stream string) placement {
	GinkgoHelper()
	var p placement
	Eventually(func(g Gomega) {
		nc, err := chaos.DialInternal(env.Cluster, env.Cluster.Nodes()[0])
		g.Expect(err).NotTo(HaveOccurred())
		defer nc.Close()
		js, err := jetstream.New(nc)
		g.Expect(err).NotTo(HaveOccurred())
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s, err := js.Stream(sctx, stream)
		g.Expect(err).NotTo(HaveOccurred())
		ci := s.CachedInfo().Cluster
		g.Expect(ci).NotTo(BeNil())
		g.Expect(ci.Leader).NotTo(BeEmpty())
		g.Expect(ci.Replicas).NotTo(BeEmpty())
		p = placement{leader: ci.Leader}
		for _, r := range ci.Replicas {
			p.followers = append(p.followers, r.Name)
		}
	}).WithContext(ctx).WithTimeout(30*time.Second).WithPolling(time.Second).Should(Succeed(), "placement of %s", stream)
	return p
}
