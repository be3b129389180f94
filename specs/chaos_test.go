package specs

import (
	"encoding/json"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/check"
	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Runbook section "Chaos test": one node lost keeps serving, two lost fail
// closed. These specs show the quorum gate's two sides from outside:
// NATS's own health and reads fail open for ~15 s on a minority, so
// /healthz must follow the gate, not NATS.
var _ = Describe("Chaos: the quorum gate", Ordered, func() {
	var env *Env

	BeforeAll(func(ctx SpecContext) {
		env = NewEnv("gate", chaos.Spec{})
		env.StartAll(ctx)
	})

	It("keeps the healthy majority serving when the KV leader's routes are cut, through the heal's step-down storm",
		Disruptive, Slow, func(ctx SpecContext) {
			p, ok := env.Cluster.(chaos.Partitioner)
			if !ok {
				Skip("target " + env.Cluster.Target() + " cannot cut routes")
			}
			r := env.CLI(ctx, env.Cluster.Nodes()[0], "cluster", "report", "--json", "--nodes", "3")
			Expect(r.ExitCode).To(Equal(0), r.Stderr)
			var rep clusterinfo.Report
			Expect(json.Unmarshal([]byte(r.Stdout), &rep)).To(Succeed())
			leaderName := ""
			for _, b := range rep.Buckets {
				if b.Bucket == kv.NoncesBucket {
					leaderName = b.Leader
				}
			}
			leader := env.Cluster.Node(leaderName)
			Expect(leader).NotTo(BeNil(), "leader of %s", kv.NoncesBucket)
			majority := Others(env.Cluster, leader)

			w := env.Health.Watch(ctx, 100*time.Millisecond, env.Cluster.Nodes()...)
			time.Sleep(2 * time.Second)
			cutAt := time.Now()
			Expect(p.Isolate(leader, "cut")).To(Succeed())
			DeferCleanup(p.HealAll)
			// Crash-like loss: no step-down, new leaders after ~5-6 s.
			time.Sleep(15 * time.Second)
			healAt := time.Now()
			Expect(p.HealAll()).To(Succeed())
			// The rejoining node's inflated term makes every leader step
			// down: no write succeeds anywhere for 4-8 s.
			time.Sleep(15 * time.Second)
			tl := w.Stop()
			Evidence("healthz-timelines", tl)

			for _, n := range majority {
				ExpectPass(check.AlwaysHealthy(chaos.Of(tl, n.Name()), 30*time.Second))
			}
			res, took := check.FailsClosedWithin(chaos.Of(tl, leader.Name()), cutAt, healAt, denyDeadline)
			ExpectPass(res)
			AddReportEntry("cut-off KV leader: routes cut to first 503", took.Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
			env.WaitHealthy(ctx, restartBudget, leader)
		})

	It("denies on the survivor within 2 s of losing two nodes, and keeps denying for 20 s",
		Disruptive, Slow, func(ctx SpecContext) {
			nodes := env.Cluster.Nodes()
			survivor, a, b := nodes[0], nodes[1], nodes[2]
			w := env.Health.Watch(ctx, 100*time.Millisecond, survivor)
			Expect(a.Stop(ctx)).To(Succeed())
			lossAt := time.Now() // quorum is lost as the second node goes
			Expect(b.Stop(ctx)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) {
				Expect(chaos.StartNodes(ctx, a, b)).To(Succeed())
				env.WaitHealthy(ctx, restartBudget, env.Cluster.Nodes()...)
			}, NodeTimeout(restartBudget+30*time.Second))
			time.Sleep(22 * time.Second)
			tl := w.Stop()
			Evidence("survivor-healthz", tl)
			res, took := check.FailsClosedWithin(chaos.Of(tl, survivor.Name()), lossAt, lossAt.Add(22*time.Second), denyDeadline)
			ExpectPass(res)
			AddReportEntry("two nodes down: quorum loss to first 503", took.Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
			last := tl[0].Probes[len(tl[0].Probes)-1]
			Expect(last.Health.Reason).To(ContainSubstring("quorum"))
		})
})
