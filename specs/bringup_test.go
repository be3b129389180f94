package specs

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/check"
	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/node"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Runbook section "Bring up": start all three together; a lone node never
// self-serves; a staggered start converges without gating on health.
var _ = Describe("Bring up", func() {

	Context("three nodes started together", Ordered, func() {
		var (
			env  *Env
			took time.Duration
		)

		// The nodes start here, not in the first spec, so every claim of
		// the container also passes alone (--label-filter=claim:r3).
		BeforeAll(func(ctx SpecContext) {
			env = NewEnv("bringup", chaos.ClusterSpec{})
			took = env.StartAll(ctx)
		})

		It("form a quorum: every node healthy with the full posture, one meta leader, all routed",
			Claim("claim:quorum-start"), func(ctx SpecContext) {
				AddReportEntry("start to quorum, three nodes together", took.Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)

				leaders := map[string]int{}
				for _, n := range env.Cluster.Nodes() {
					p := env.Health.Get(ctx, n.HealthzURL())
					Expect(p.Code).To(Equal(200), "%s: %s", n.Name(), p)
					h := p.Health
					Expect(h.Node).To(Equal(n.Name()))
					Expect(h.Posture.BusAuth).To(Equal("enforce"), "%s posture bus_auth", n.Name())
					Expect(h.Posture.ACL).To(BeTrue(), "%s posture acl", n.Name())
					Expect(h.Posture.TLS).To(BeTrue(), "%s posture tls", n.Name())
					Expect(h.Posture.Cluster).To(BeTrue(), "%s posture cluster", n.Name())
					Expect(h.Posture.Store).To(Equal("kv"))
					Expect(h.KVReplicas).To(Equal(3))
					Expect(h.Buckets).To(HaveLen(len(kv.Buckets)))
					leaders[h.MetaLeader]++
				}
				Expect(leaders).To(HaveLen(1), "every node must name the same meta leader: %v", leaders)
				for l := range leaders {
					Expect(env.Cluster.Node(l)).NotTo(BeNil(), "meta leader %q is not a cluster node", l)
				}

				rep := env.Report(ctx, env.Cluster.Nodes()[0])
				Expect(rep.Servers).To(HaveLen(len(env.Cluster.Nodes())), "every server routed")
				for _, s := range rep.Servers {
					Expect(routeNames(s)).To(ConsistOf(otherNames(env.Cluster, s.Node)), "%s routes", s.Node)
					Expect(s.InQuorum).To(BeTrue(), "%s: %s", s.Node, s.Reason)
				}
				Expect(rep.MetaLeader()).NotTo(BeEmpty())
			})

		It("run the cold-start fixes: pooling off, no-advertise, KV-open retry",
			Claim("claim:cold-start-fixes"), func(ctx SpecContext) {
				r := env.CLI(ctx, env.Cluster.Nodes()[0], "version", "--features")
				Expect(r.ExitCode).To(Equal(0))
				for _, f := range []string{node.FeatureRoutePoolOff, node.FeatureNoAdvertise, node.FeatureKVOpenRetry} {
					Expect(r.Stdout).To(ContainSubstring(f), "version --features")
				}
				for _, n := range env.Cluster.Nodes() {
					p := env.Health.Get(ctx, n.HealthzURL())
					Expect(p.Health.Features).To(ContainElements(node.FeatureRoutePoolOff, node.FeatureNoAdvertise, node.FeatureKVOpenRetry), n.Name())
				}

				By("observing pooling off: exactly one route connection per peer (a pool would open several)")
				Eventually(func(g Gomega) {
					rep, err := chaos.ClusterReport(ctx, env.Cluster, env.Cluster.Nodes()[1])
					g.Expect(err).NotTo(HaveOccurred())
					g.Expect(rep.Servers).To(HaveLen(len(env.Cluster.Nodes())))
					for _, s := range rep.Servers {
						g.Expect(s.Routes).To(HaveLen(len(env.Cluster.Nodes())-1), s.Node)
						for _, rt := range s.Routes {
							g.Expect(rt.Conns).To(Equal(1), "%s -> %s", s.Node, rt.Remote)
						}
					}
				}).WithContext(ctx).WithTimeout(20 * time.Second).WithPolling(time.Second).Should(Succeed())

				By("observing no-advertise: a client learns no other server URLs from the cluster")
				who := env.AddUser(ctx, env.Cluster.Nodes()[0], "advertise", identity.RoleMember)
				nc, err := chaos.DialAs(env.Cluster, env.Cluster.Nodes()[0], who)
				Expect(err).NotTo(HaveOccurred())
				defer nc.Close()
				Expect(nc.Flush()).To(Succeed())
				Consistently(nc.DiscoveredServers).WithTimeout(time.Second).Should(BeEmpty())
			})

		It("keep all six control-plane buckets at R3 with 2/2 followers current", Claim("claim:r3"), func(ctx SpecContext) {
			Eventually(func(g Gomega) {
				rep, err := chaos.ClusterReport(ctx, env.Cluster, env.Cluster.Nodes()[2])
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(rep.Buckets).To(HaveLen(6))
				for _, b := range rep.Buckets {
					g.Expect(b.Replicas).To(Equal(3), b.Bucket)
					g.Expect(b.Leader).NotTo(BeEmpty(), b.Bucket)
					g.Expect(b.FollowersCurrent).To(Equal(2), b.Bucket)
					g.Expect(b.Followers).To(Equal(2), b.Bucket)
				}
			}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(Succeed())
			r := env.CLI(ctx, env.Cluster.Nodes()[2], "cluster", "report")
			Expect(strings.Count(r.Stdout, "followers_current=2/2")).To(Equal(6), r.Stdout)
		})

		It("report 1/2 followers current on every bucket the stopped follower holds, never 2/2", Claim("claim:r3"), Disruptive, func(ctx SpecContext) {
			// At N=5 an R3 bucket lives on three of the five nodes: only
			// the buckets with a replica on the stopped node lose one.
			holds := map[string][]string{}
			for _, b := range kv.Buckets {
				if rs, ok := bucketReplicas(ctx, env, b.Name); ok {
					holds[b.Name] = rs
				}
			}
			follower := stopUsersFollower(ctx, env)
			survivor := Others(env.Cluster, follower)[0]
			var names, intact []string
			for _, b := range kv.Buckets {
				if rs, ok := holds[b.Name]; ok && !slices.Contains(rs, follower.Name()) {
					intact = append(intact, b.Name)
					continue
				}
				names = append(names, b.Name)
			}
			waitFollowers(ctx, env, survivor, "1/2", names...)
			r := env.CLI(ctx, survivor, "cluster", "report", "--nodes", fmt.Sprint(len(env.Cluster.Nodes())))
			Expect(r.ExitCode).To(Equal(1), "a node is down: the report names it as a problem")
			Expect(strings.Count(r.Stdout, "followers_current=1/2")).To(Equal(len(names)), r.Stdout)
			Expect(strings.Count(r.Stdout, "followers_current=2/2")).To(Equal(len(intact)), "only buckets without a replica on %s: %v\n%s", follower.Name(), intact, r.Stdout)
		})
	})

	Context("one node started alone", Ordered, Wipe, func() {
		var (
			env  *Env
			lone chaos.Node
		)

		// The lone node starts here so each claim also passes alone.
		BeforeAll(func(ctx SpecContext) {
			env = NewEnv("lone", chaos.ClusterSpec{Fresh: true})
			lone = env.Cluster.Nodes()[0]
			Expect(lone.Start(ctx)).To(Succeed())
			env.WaitAnswering(ctx, lone) // a unit's start returns before the process listens
		})

		It("never serves: healthz 503 naming quorum for the whole window, no bucket, no client",
			Claim("claim:no-self-serve"), Slow, func(ctx SpecContext) {
				const window = 12 * time.Second // the claim asks ≥ 10 s
				w := env.Health.Watch(ctx, 250*time.Millisecond, lone)
				// The on-node CLI connects over loopback with the internal
				// identity, the most privileged client there is.
				refused := 0
				deadline := time.Now().Add(window)
				for time.Now().Before(deadline) {
					r := env.CLI(ctx, lone, "cluster", "report", "--json", "--nodes", fmt.Sprint(len(env.Cluster.Nodes())))
					Expect(r.ExitCode).NotTo(Equal(0), "the lone node admitted the CLI: %s", r.Stdout)
					Expect(r.Stderr).To(ContainSubstring("no quorum"))
					refused++
					time.Sleep(time.Second)
				}
				tl := w.Stop()
				Evidence("lone-node-healthz", tl)
				ExpectPass(check.NeverServes(chaos.Of(tl, lone.Name()), window-time.Second, "quorum"))
				lt := chaos.Of(tl, lone.Name())
				watched := lt.Probes[len(lt.Probes)-1].At.Sub(lt.Probes[0].At)
				AddReportEntry("lone node watched, all 503", fmt.Sprintf("%s (%d probes)", watched.Round(time.Millisecond), len(lt.Probes)), ReportEntryVisibilityFailureOrVerbose)
				Expect(refused).To(BeNumerically(">=", 8))

				By("finding no control-plane stream in the lone node's store")
				if si, ok := env.Cluster.(chaos.StoreInspector); ok {
					dirs, err := si.StreamDirs(lone)
					Expect(err).NotTo(HaveOccurred())
					Expect(dirs).To(BeEmpty(), "streams on a lone node's disk")
				}
			})

		It("converges when a second node starts without waiting on the first's health; the third catches up",
			Claim("claim:staggered-start"), func(ctx SpecContext) {
				// At N nodes "a second" is the nodes that make N-1 with the
				// first, "the third" the last one. Not a majority: a brand-new
				// JetStream meta group (nats-server 2.15.2) expects as many
				// peers as it has configured routes (N-1) and lets empty logs
				// elect a leader only when every expected peer votes, so a
				// fresh cluster's first meta leader needs N-1 nodes (at N=3
				// that is the majority, 2; at N=5 it is 4, not 3). See NOTES.md.
				nodes := env.Cluster.Nodes()
				second, rest := nodes[1:len(nodes)-1], nodes[len(nodes)-1:]
				third := rest[len(rest)-1]
				Expect(env.Health.Get(ctx, lone.HealthzURL()).Code).To(Equal(503), "the first node is still not healthy")
				secondAt := time.Now()
				Expect(chaos.StartNodes(ctx, second...)).To(Succeed())

				By("both first nodes agreeing on a meta leader; R3 placement still needs the third")
				Eventually(func(g Gomega) {
					for _, n := range append([]chaos.Node{lone}, second...) {
						p := env.Health.Get(ctx, n.HealthzURL())
						g.Expect(p.Err).NotTo(HaveOccurred())
						g.Expect(p.Health.MetaLeader).NotTo(BeEmpty(), n.Name())
					}
				}).WithContext(ctx).WithTimeout(node.DefaultBootstrapBudget).WithPolling(250 * time.Millisecond).Should(Succeed())
				AddReportEntry("second node start to meta quorum", time.Since(secondAt).Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)

				thirdAt := time.Now()
				Expect(chaos.StartNodes(ctx, rest...)).To(Succeed())
				env.WaitHealthy(ctx, node.DefaultBootstrapBudget, env.Cluster.Nodes()...)
				AddReportEntry("third node start to all healthy", time.Since(thirdAt).Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)

				By("every bucket created only once a quorum existed, at R3, with the third node current")
				Eventually(func(g Gomega) {
					rep, err := chaos.ClusterReport(ctx, env.Cluster, third)
					g.Expect(err).NotTo(HaveOccurred())
					g.Expect(rep.Buckets).To(HaveLen(len(kv.Buckets)))
					for _, b := range rep.Buckets {
						g.Expect(b.Created).To(BeTemporally(">", secondAt), "%s created while the first node was alone", b.Bucket)
						g.Expect(b.Replicas).To(Equal(3))
						g.Expect(b.FollowersCurrent).To(Equal(2), b.Bucket)
					}
				}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
			})
	})
})

func routeNames(s clusterinfo.Status) []string {
	var out []string
	for _, r := range s.Routes {
		out = append(out, r.Remote)
	}
	return out
}

func otherNames(c chaos.Cluster, self string) []string {
	var out []string
	for _, n := range c.Nodes() {
		if n.Name() != self {
			out = append(out, n.Name())
		}
	}
	return out
}

var _ = context.Background
