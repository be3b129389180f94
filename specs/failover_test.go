package specs

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/identity"
)

// Runbook section "Chaos test", validated in report 0012: a real
// authenticated client in an E2E room keeps publishing and receiving while
// a node is stopped mid-stream, with zero loss.
var _ = Describe("Chaos: one node down mid-stream", Ordered, func() {
	const count = 1500
	var (
		env *Env
		who *identity.Identity
	)

	BeforeAll(func(ctx SpecContext) {
		env = NewEnv("failover", chaos.ClusterSpec{})
		env.StartAll(ctx)
		who = env.AddUser(ctx, env.Cluster.Nodes()[0], "clientcheck", identity.RoleMember)
	})

	// run starts clientcheck's library and stops the node pick chooses when
	// a third of the messages are acked; it returns the report and the node.
	run := func(ctx context.Context, room string, pick func(server string) chaos.Node) (probe.Report, chaos.Node) {
		GinkgoHelper()
		t := env.Cluster.TLS()
		var servers, apis []string
		for _, n := range env.Cluster.Nodes() {
			servers = append(servers, n.ClientURL())
			apis = append(apis, apiBase(n))
		}
		stopped := make(chan chaos.Node, 1)
		cfg := probe.Config{
			Servers: servers, APIURLs: apis, CA: t.ClientCA, Cert: t.OperatorCert, Key: t.OperatorKey,
			Identity: who, Count: count, Rate: 300, Room: room,
			OnAcked: func(n int, server string) {
				if n == count/3 {
					victim := pick(server)
					stopped <- victim
					go func() { _ = victim.Stop(context.Background()) }()
				}
			},
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		rep, err := probe.Run(rctx, cfg)
		if rep.RoomID != "" {
			noteSpecRoom(rep.RoomID)
		}
		Expect(err).NotTo(HaveOccurred())
		Evidence("clientcheck-report", rep)
		var victim chaos.Node
		Eventually(stopped).Should(Receive(&victim))
		return rep, victim
	}

	expectZeroLoss := func(rep probe.Report) {
		GinkgoHelper()
		GinkgoWriter.Printf("clientcheck: sent=%d acked=%d received=%d lost=%d dup=%d ooo=%d reconnects=%d longest_gap=%s p50=%s p99=%s\n",
			rep.Sent, rep.Acked, rep.Received, rep.Lost, rep.Duplicated, rep.OutOfOrder, len(rep.Reconnects), rep.LongestGap, rep.LatencyP50, rep.LatencyP99)
		Expect(rep.Acked).To(Equal(count), "every message acked")
		Expect(rep.Lost).To(BeZero(), "acked but never received: %v", rep.LostIDs)
		Expect(rep.Duplicated).To(BeZero())
		Expect(rep.OutOfOrder).To(BeZero())
		Expect(rep.Received).To(Equal(count))
		Expect(rep.Violations).To(BeEmpty())
	}

	// caughtUp: the restarted node's replica of the room stream, if it holds
	// one, is current, as are all the others.
	caughtUp := func(ctx context.Context, roomID string, victim chaos.Node) {
		GinkgoHelper()
		Expect(victim.Start(ctx)).To(Succeed())
		env.WaitHealthy(ctx, restartBudget, env.Cluster.Nodes()...)
		Eventually(func(g Gomega) {
			// A member may read its room stream's info: its ACL allows it.
			nc, err := chaos.DialAs(env.Cluster, env.Cluster.Nodes()[0], who)
			g.Expect(err).NotTo(HaveOccurred())
			defer nc.Close()
			js, err := jetstream.New(nc)
			g.Expect(err).NotTo(HaveOccurred())
			st, err := js.Stream(ctx, api.RoomStream(roomID))
			g.Expect(err).NotTo(HaveOccurred())
			info := st.CachedInfo()
			g.Expect(info.State.Msgs).To(BeEquivalentTo(count))
			names := []string{info.Cluster.Leader}
			for _, p := range info.Cluster.Replicas {
				g.Expect(p.Current).To(BeTrue(), "replica %s", p.Name)
				names = append(names, p.Name)
			}
			// An R3 stream spans every node at N=3; at N=5 the stopped
			// node may hold no replica (a raft group lists its stopped
			// peers too), and then every replica being current is all
			// there is to catch up.
			if len(env.Cluster.Nodes()) == len(names) {
				g.Expect(names).To(ContainElement(victim.Name()))
			}
		}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
	}

	It("fails over when the client's own node stops: every acked message exactly once, in order; the node catches up",
		Claim("claim:failover-zero-loss"), Disruptive, func(ctx SpecContext) {
			DeferCleanup(env.RestartStopped, NodeTimeout(restartBudget+30*time.Second))
			rep, victim := run(ctx, "spec-failover-"+randomHex(4), func(server string) chaos.Node { return env.Cluster.Node(server) })
			expectZeroLoss(rep)
			Expect(rep.Reconnects).NotTo(BeEmpty(), "the client's node was stopped: it must have reconnected")
			for _, rc := range rep.Reconnects {
				Expect(rc.From).To(Equal(victim.Name()))
				Expect(rc.To).NotTo(Equal(victim.Name()))
			}
			AddReportEntry("failover (client's node stopped): longest gap between received messages", rep.LongestGap.Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
			AddReportEntry("failover (client's node stopped): reconnects / lost / publisher gap", fmt.Sprintf("%d / %d / %s", len(rep.Reconnects), rep.Lost, rep.Reconnects[0].Gap.Round(time.Millisecond)), ReportEntryVisibilityFailureOrVerbose)
			AddReportEntry("failover (client's node stopped): publish-to-receive p50/p99", rep.LatencyP50.String()+" / "+rep.LatencyP99.String(), ReportEntryVisibilityFailureOrVerbose)
			caughtUp(ctx, rep.RoomID, victim)
		})

	It("keeps every acked message when the room stream's leader stops mid-stream; the node catches up",
		Claim("claim:failover-zero-loss"), Disruptive, func(ctx SpecContext) {
			DeferCleanup(env.RestartStopped, NodeTimeout(restartBudget+30*time.Second))
			// Created as the client does (signed key fingerprint and grant),
			// so the probe's key check accepts it when it joins.
			name := "spec-leader-" + randomHex(4)
			idem, req, _, err := probe.NewRoomRequest(who, name)
			Expect(err).NotTo(HaveOccurred())
			room, err := clientAPI(env, who).CreateRoom(ctx, idem, req)
			Expect(err).NotTo(HaveOccurred())
			leader := func() chaos.Node {
				nc, err := chaos.DialAs(env.Cluster, env.Cluster.Nodes()[0], who)
				Expect(err).NotTo(HaveOccurred())
				defer nc.Close()
				js, err := jetstream.New(nc)
				Expect(err).NotTo(HaveOccurred())
				st, err := js.Stream(context.Background(), room.Stream)
				Expect(err).NotTo(HaveOccurred())
				return env.Cluster.Node(st.CachedInfo().Cluster.Leader)
			}
			var victimName string
			rep, victim := run(ctx, name, func(string) chaos.Node {
				v := leader()
				victimName = v.Name()
				return v
			})
			expectZeroLoss(rep)
			Expect(victim.Name()).To(Equal(victimName))
			AddReportEntry("failover (stream leader stopped): longest gap between received messages", rep.LongestGap.Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
			caughtUp(ctx, room.ID, victim)
		})
})
