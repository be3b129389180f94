package specs

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
)

// Runbook section "Identities, enforce auth and the ACL": nats-server does
// not check the reply subject of a publish, so a member can have the
// server deliver to any subject of the account: its fetch replies and
// JetStream API answers. This spec aims them at the daemon's internal ping
// subject.
var _ = Describe("Member ACL: the daemon's internal subjects", Ordered, func() {
	var env *Env

	BeforeAll(func(ctx SpecContext) {
		env = NewEnv("sysinject", chaos.ClusterSpec{})
		env.StartAll(ctx)
	})

	It("ignores room messages and API answers a member has delivered to unibus.sys.ping; the cluster stays in quorum",
		Claim("claim:acl-jetstream"), Disruptive, func(ctx SpecContext) { // floods the internal subjects for seconds: not on a read-only live run
			n1 := env.Cluster.Nodes()[0]
			mallory := env.AddUser(ctx, n1, "mallory", identity.RoleMember)
			name := "spec-sys-" + randomHex(4)
			idem, req, key, err := probe.NewRoomRequest(mallory, name)
			Expect(err).NotTo(HaveOccurred())
			room, err := clientAPI(env, mallory).CreateRoom(ctx, idem, req)
			Expect(err).NotTo(HaveOccurred())
			nc := dialMember(env, n1, mallory)
			js, err := jetstream.New(nc)
			Expect(err).NotTo(HaveOccurred())
			for i := range 64 {
				sealed, err := e2e.Seal(key, room.ID, mallory, []byte{byte(i)})
				Expect(err).NotTo(HaveOccurred())
				_, err = js.Publish(ctx, room.Subject, sealed)
				Expect(err).NotTo(HaveOccurred())
			}
			var rc api.RoomConsumer
			Expect(env.call(n1, mallory, "POST", "/v1/rooms/"+room.ID+"/consumer", api.ConsumerRequest{DeliverFromSeq: 1}, &rc)).To(BeNumerically("<", 300))

			By("mallory floods unibus.sys.ping with fetch replies and API answers for 6 s; every node stays healthy")
			next := "$JS.API.CONSUMER.MSG.NEXT." + room.Stream + "." + rc.Consumer
			info := "$JS.API.STREAM.INFO." + room.Stream
			deadline := time.Now().Add(6 * time.Second)
			for time.Now().Before(deadline) {
				for range 50 {
					Expect(nc.PublishRequest(next, clusterinfo.PingSubject, []byte(`{"batch":256,"no_wait":true}`))).To(Succeed())
					Expect(nc.PublishRequest(info, clusterinfo.PingSubject, nil)).To(Succeed())
				}
				Expect(nc.FlushTimeout(2 * time.Second)).To(Succeed())
				for _, n := range env.Cluster.Nodes() {
					p := env.Health.Get(ctx, n.HealthzURL())
					Expect(p.Err).NotTo(HaveOccurred())
					Expect(p.Code).To(Equal(200), "%s during the flood: %+v", n.Name(), p.Health)
				}
				time.Sleep(100 * time.Millisecond)
			}

			By("the deliveries reached the ping subject and nothing answered them")
			// A daemon answering the "ping" responds to the delivery's ack
			// subject: an ack mallory never sent.
			cons, err := js.Consumer(ctx, room.Stream, rc.Consumer)
			Expect(err).NotTo(HaveOccurred())
			ci, err := cons.Info(ctx)
			Expect(err).NotTo(HaveOccurred())
			GinkgoWriter.Printf("consumer after the flood: delivered %d, ack floor %d, ack pending %d\n",
				ci.Delivered.Consumer, ci.AckFloor.Consumer, ci.NumAckPending)
			Expect(ci.Delivered.Consumer).To(BeNumerically(">", 0), "the fetch replies were delivered")
			Expect(ci.AckFloor.Consumer).To(BeZero(), "the daemon answered injected pings (acking mallory's messages)")

			if inc, err := chaos.DialInternal(env.Cluster, n1); err == nil {
				defer inc.Close()
				sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				sts, err := clusterinfo.CollectStatuses(sctx, inc, len(env.Cluster.Nodes()))
				Expect(err).NotTo(HaveOccurred())
				Expect(sts).To(HaveLen(len(env.Cluster.Nodes())))
				for _, s := range sts {
					GinkgoWriter.Printf("%s ignored %d injected internal messages\n", s.Node, s.Ignored)
					Expect(s.Ignored).To(BeNumerically(">", 0), "%s counted no injected message", s.Node)
					Expect(s.InQuorum).To(BeTrue())
				}
			}
		})
})
