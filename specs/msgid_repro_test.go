package specs

import (
	"context"
	"net/http"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
)

// A reproducer, not a claim: in nats-server 2.15.2 one publish carrying a
// wrong Nats-Expected-Last-Msg-Id header to a replicated stream is proposed
// without the check, every replica fails to apply it and marks the stream
// with a write error that is never cleared. Through the real member ACL a
// room member can do it to its room. The spec fails while that holds, so it
// runs only with UNIBUS_REPRO=1 (never in CI until the bug is fixed):
//
//	UNIBUS_REPRO=1 go tool ginkgo --focus='expected last msg id' ./specs -- --target=process --membershipd=$PWD/bin/membershipd
var _ = Describe("A member's publish with a wrong expected last msg id", Ordered, Disruptive, Slow, func() {
	BeforeAll(func() {
		if os.Getenv("UNIBUS_REPRO") == "" {
			Skip("reproducer of a nats-server bug: set UNIBUS_REPRO=1")
		}
	})

	It("leaves the room writable for its members, also after a restart of every node", func(ctx SpecContext) {
		env := NewEnv("msgid-repro", chaos.ClusterSpec{})
		env.StartAll(ctx)
		n1, n2 := env.Cluster.Nodes()[0], env.Cluster.Nodes()[1]
		alice := env.AddUser(ctx, n1, "alice", identity.RoleMember)
		bob := env.AddUser(ctx, n1, "bob", identity.RoleMember)
		key, err := e2e.NewRoomKey()
		Expect(err).NotTo(HaveOccurred())
		name := "spec-msgid-" + randomHex(4)
		self, err := e2e.WrapRoomKey(key, name, alice.SignPub())
		Expect(err).NotTo(HaveOccurred())
		var room api.Room
		Expect(env.call(n1, alice, "POST", api.PathRooms, api.CreateRoomRequest{Name: name, WrappedKey: self}, &room)).To(Equal(201))
		w, err := e2e.WrapRoomKey(key, room.ID, bob.SignPub())
		Expect(err).NotTo(HaveOccurred())
		Expect(env.call(n1, alice, "POST", "/v1/rooms/"+room.ID+"/members", api.AddMemberRequest{SignPub: bob.SignPub(), WrappedKey: w}, nil)).To(Equal(201))

		seal := func(from *identity.Identity, b byte) []byte {
			s, err := e2e.Seal(key, room.ID, from, []byte{b})
			Expect(err).NotTo(HaveOccurred())
			return s
		}
		ajs, err := jetstream.New(dialMember(env, n1, alice))
		Expect(err).NotTo(HaveOccurred())
		_, err = ajs.Publish(ctx, room.Subject, seal(alice, 0))
		Expect(err).NotTo(HaveOccurred())

		By("alice publishes once with a wrong Nats-Expected-Last-Msg-Id")
		m := nats.NewMsg(room.Subject)
		m.Data = seal(alice, 1)
		m.Header.Set(jetstream.MsgIDHeader, nuid.Next())
		m.Header.Set(jetstream.ExpectedLastMsgIDHeader, nuid.Next())
		_, err = ajs.PublishMsg(ctx, m)
		GinkgoWriter.Printf("the bad publish: %v\n", err)
		Expect(err).To(HaveOccurred(), "a wrong expected last msg id must be refused")

		bnc := dialMember(env, n2, bob)
		bjs, err := jetstream.New(bnc)
		Expect(err).NotTo(HaveOccurred())
		// probe is one publish and one read by bob, from another node:
		// what every member sees.
		probe := func(ctx context.Context, b byte) (pubErr, readErr error) {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, pubErr = bjs.Publish(pctx, room.Subject, seal(bob, b))
			cancel()
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var rc api.RoomConsumer
			if code := env.call(n2, bob, "POST", "/v1/rooms/"+room.ID+"/consumer", api.ConsumerRequest{DeliverFromSeq: 1}, &rc); code >= 300 {
				return pubErr, &apiErr{code}
			}
			c, err := bjs.Consumer(rctx, room.Stream, rc.Consumer)
			if err != nil {
				return pubErr, err
			}
			batch, err := c.FetchNoWait(1)
			if err != nil {
				return pubErr, err
			}
			for range batch.Messages() {
			}
			return pubErr, batch.Error()
		}

		By("bob publishes and reads for 60 s")
		start := time.Now()
		var pubFails, readFails, probes int
		var lastPub, lastRead error
		for time.Since(start) < 60*time.Second {
			probes++
			p, r := probe(ctx, byte(probes))
			if p != nil {
				pubFails++
				lastPub = p
			}
			if r != nil {
				readFails++
				lastRead = r
			}
			time.Sleep(time.Second)
		}
		GinkgoWriter.Printf("after the bad publish, over %s: %d probes, %d publishes failed (last: %v), %d reads failed (last: %v)\n",
			time.Since(start).Round(time.Second), probes, pubFails, lastPub, readFails, lastRead)

		By("every node restarts")
		nodes := env.Cluster.Nodes()
		Expect(chaos.StopNodes(ctx, nodes...)).To(Succeed())
		Expect(chaos.StartNodes(ctx, nodes...)).To(Succeed())
		env.WaitHealthy(ctx, restartBudget, nodes...)
		bnc = dialMember(env, n2, bob)
		bjs, err = jetstream.New(bnc)
		Expect(err).NotTo(HaveOccurred())
		start = time.Now()
		var afterPub, afterRead, afterProbes int
		for time.Since(start) < 30*time.Second {
			afterProbes++
			p, r := probe(ctx, byte(100+afterProbes))
			if p != nil {
				afterPub++
				lastPub = p
			}
			if r != nil {
				afterRead++
				lastRead = r
			}
			time.Sleep(time.Second)
		}
		GinkgoWriter.Printf("after a restart of every node, over %s: %d probes, %d publishes failed (last: %v), %d reads failed (last: %v)\n",
			time.Since(start).Round(time.Second), afterProbes, afterPub, lastPub, afterRead, lastRead)

		Expect(pubFails).To(BeZero(), "bob's publishes failed after alice's one bad publish")
		Expect(afterPub).To(BeZero(), "bob's publishes failed after a restart of every node")
	})
})

type apiErr struct{ code int }

func (e *apiErr) Error() string { return "control plane answered " + http.StatusText(e.code) }
