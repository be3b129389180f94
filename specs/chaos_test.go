package specs

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go"
	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/check"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// allowlistBlink: how long in all a majority node may answer "allowlist
// stale" through a leader's cut and heal (seen: 200 ms on the simulated
// hosts, as the users leader stepped down after the heal).
const allowlistBlink = 3 * time.Second

// Runbook section "Chaos test": one node lost keeps serving, two lost fail
// closed. These specs show the quorum gate's two sides from outside:
// NATS's own health and reads fail open for ~15 s on a minority, so
// /healthz must follow the gate, not NATS.
var _ = Describe("Chaos: the quorum gate", Ordered, func() {
	var env *Env

	BeforeAll(func(ctx SpecContext) {
		env = NewEnv("gate", chaos.ClusterSpec{})
		env.StartAll(ctx)
	})

	It("keeps the quorum gate open on the healthy majority when the KV leader's routes are cut, through the heal's step-down storm (the allowlist rule may blink it ≤ 3 s in all)",
		Disruptive, Slow, Partition, func(ctx SpecContext) {
			p, ok := env.Cluster.(chaos.Partitioner)
			if !ok || !p.CanPartition() {
				Skip("target " + env.Cluster.Target() + " cannot cut routes here (the ssh target can on the simulated hosts: --sim-dir)")
			}
			waitWhole(ctx, env)
			rep := env.Report(ctx, env.Cluster.Nodes()[0])
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

			// The quorum gate holds on the majority throughout. The allowlist
			// rule may blink a majority node while the users leader changes
			// in the storm (it must deny a node the users leader has not
			// answered for 1 s while a peer's has: the 2 s revocation
			// deadline), for at most allowlistBlink in all.
			for _, n := range majority {
				ExpectPass(check.KeepsQuorum(chaos.Of(tl, n.Name()), 30*time.Second, allowlistBlink))
			}
			res, took := check.FailsClosedWithin(chaos.Of(tl, leader.Name()), cutAt, healAt, denyDeadline)
			ExpectPass(res)
			AddReportEntry("cut-off KV leader: routes cut to first 503", took.Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
			env.WaitHealthy(ctx, restartBudget, leader)
		})

	It("fails closed with two nodes down: connections, user add and authorizing reads refused within 2 s for 20 s; nothing acknowledged lost",
		Claim("claim:two-down-fail-closed"), Disruptive, Slow, func(ctx SpecContext) {
			// "Two down" at N=3 is a majority down at N: the survivors
			// (nodes[0] watched) are one short of a majority.
			nodes := env.Cluster.Nodes()
			survivor, down := nodes[0], nodes[chaos.Majority(len(nodes))-1:]

			By("acknowledged writes before the loss")
			var acked []*identity.Identity
			for i := range 5 {
				acked = append(acked, env.AddUser(ctx, survivor, fmt.Sprintf("before-%d", i), identity.RoleMember))
			}
			erin := acked[0]
			liveClosed := make(chan time.Time, 1)
			live, err := chaos.DialAs(env.Cluster, survivor, erin, nats.ClosedHandler(func(*nats.Conn) { liveClosed <- time.Now() }))
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(live.Close)

			w := env.Health.Watch(ctx, 100*time.Millisecond, survivor)
			Expect(chaos.StopNodes(ctx, down[:len(down)-1]...)).To(Succeed())
			lossAt := time.Now() // quorum is lost as the last node goes
			Expect(down[len(down)-1].Stop(ctx)).To(Succeed())
			DeferCleanup(env.RestartStopped, NodeTimeout(restartBudget+30*time.Second))
			const window = 22 * time.Second
			until := lossAt.Add(window)

			var (
				mu              sync.Mutex
				conns, adds     []check.Attempt
				outageAdds      []*identity.Identity
				outageAddResult []int
			)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { // a registered identity asks to be let in: the read that would authorize it
				defer GinkgoRecover()
				defer wg.Done()
				for time.Now().Before(until) {
					at := time.Now()
					nc, err := chaos.DialAs(env.Cluster, survivor, erin)
					a := check.Attempt{Start: at, End: time.Now(), Refused: errors.Is(err, nats.ErrAuthorization)}
					if err == nil {
						a.Detail = "connected"
						nc.Close()
					} else {
						a.Detail = err.Error()
					}
					mu.Lock()
					conns = append(conns, a)
					mu.Unlock()
					time.Sleep(250 * time.Millisecond)
				}
			}()
			go func() { // the on-node CLI tries to add a user
				defer GinkgoRecover()
				defer wg.Done()
				for time.Now().Before(until) {
					id, err := identity.Generate()
					Expect(err).NotTo(HaveOccurred())
					at := time.Now()
					env.Tried(id) // revoked when the container ends if it got in
					r, err := env.Cluster.CLI(ctx, survivor, "user", "add", "--store", "kv", "--handle", SpecHandle("outage"), "--role", "member", "--sign-pub", id.SignPub())
					Expect(err).NotTo(HaveOccurred())
					a := check.Attempt{Start: at, End: time.Now(), Refused: r.ExitCode == 1 && strings.Contains(r.Stderr, "no quorum"),
						Detail: fmt.Sprintf("exit %d: %s%s", r.ExitCode, strings.TrimSpace(r.Stdout), strings.TrimSpace(r.Stderr))}
					mu.Lock()
					adds = append(adds, a)
					outageAdds = append(outageAdds, id)
					outageAddResult = append(outageAddResult, r.ExitCode)
					mu.Unlock()
					time.Sleep(time.Second)
				}
			}()
			wg.Wait()
			tl := w.Stop()
			Evidence("survivor-healthz", tl)
			Evidence("connection-attempts", conns)
			Evidence("user-add-attempts", adds)

			res, took := check.FailsClosedWithin(chaos.Of(tl, survivor.Name()), lossAt, until, denyDeadline)
			ExpectPass(res)
			AddReportEntry("two nodes down: quorum loss to first healthz 503", took.Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
			ExpectPass(check.RefusedWithin("new connection of a registered user", conns, lossAt, until, denyDeadline, time.Second, 40))
			ExpectPass(check.RefusedWithin("user add on the survivor", adds, lossAt, until, denyDeadline, 3*time.Second, 10))
			select {
			case at := <-liveClosed:
				AddReportEntry("two nodes down: quorum loss to live connection closed", at.Sub(lossAt).Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
				Expect(at.Sub(lossAt)).To(BeNumerically("<=", denyDeadline), "the survivor closed a live connection")
			default:
				Fail("a live user connection on the survivor stayed open through the outage")
			}

			By("after recovery: every acknowledged write is there; no refused one is")
			Expect(chaos.StartNodes(ctx, down...)).To(Succeed())
			env.WaitHealthy(ctx, restartBudget, env.Cluster.Nodes()...)
			for _, n := range env.Cluster.Nodes() {
				users := env.ListUsers(ctx, n)
				for _, id := range acked {
					_, ok := FindUser(users, id.SignPub())
					Expect(ok).To(BeTrue(), "acknowledged user %s on %s", id.SignPub(), n.Name())
				}
				for i, id := range outageAdds {
					_, ok := FindUser(users, id.SignPub())
					if outageAddResult[i] == 0 {
						Expect(ok).To(BeTrue(), "an add acknowledged during the outage is lost on %s", n.Name())
					} else if adds[i].Start.Sub(lossAt) >= denyDeadline {
						Expect(ok).To(BeFalse(), "a refused add was written on %s", n.Name())
					}
				}
			}
		})
})
