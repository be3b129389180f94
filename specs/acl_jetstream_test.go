package specs

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
)

// Runbook section "Identities, enforce auth and the ACL": a member with
// exactly the permissions the ACL gives it tries to escape through
// JetStream. Consumers are made by the control plane only (pull, one per
// member and room), so every attempt is refused or cleaned up.
var _ = Describe("The member ACL and JetStream", Ordered, func() {
	var (
		env                 *Env
		alice, bob, mallory *identity.Identity
		room                api.Room
		n1, n2              chaos.Node
		mnc                 *nats.Conn
		mErrs               *asyncErrs
		bobCons             api.RoomConsumer
		bobJS               jetstream.JetStream
		internal            *nats.Conn // nil where the target does not expose it
	)

	BeforeAll(func(ctx SpecContext) {
		env = NewEnv("acl-jetstream", chaos.ClusterSpec{})
		env.StartAll(ctx)
		n1, n2 = env.Cluster.Nodes()[0], env.Cluster.Nodes()[1]
		alice = env.AddUser(ctx, n1, "alice", identity.RoleMember)
		bob = env.AddUser(ctx, n1, "bob", identity.RoleMember)
		mallory = env.AddUser(ctx, n1, "mallory", identity.RoleMember)

		key, err := e2e.NewRoomKey()
		Expect(err).NotTo(HaveOccurred())
		name := "spec-acljs-" + randomHex(4)
		self, err := e2e.WrapRoomKey(key, name, alice.SignPub())
		Expect(err).NotTo(HaveOccurred())
		Expect(env.call(n1, alice, "POST", api.PathRooms, api.CreateRoomRequest{Name: name, WrappedKey: self}, &room)).To(Equal(201))
		for _, m := range []*identity.Identity{bob, mallory} {
			w, err := e2e.WrapRoomKey(key, room.ID, m.SignPub())
			Expect(err).NotTo(HaveOccurred())
			Expect(env.call(n1, alice, "POST", "/v1/rooms/"+room.ID+"/members", api.AddMemberRequest{SignPub: m.SignPub(), WrappedKey: w}, nil)).To(Equal(201))
		}

		By("alice publishes into the room; bob gets his consumer from the control plane")
		anc := dialMember(env, n1, alice)
		ajs, err := jetstream.New(anc)
		Expect(err).NotTo(HaveOccurred())
		for i := range 3 {
			sealed, err := e2e.Seal(key, room.ID, alice, []byte{byte(i)})
			Expect(err).NotTo(HaveOccurred())
			_, err = ajs.Publish(ctx, room.Subject, sealed)
			Expect(err).NotTo(HaveOccurred())
		}
		Expect(env.call(n2, bob, "POST", "/v1/rooms/"+room.ID+"/consumer", api.ConsumerRequest{DeliverFromSeq: 1}, &bobCons)).To(Equal(201))
		Expect(bobCons.Consumer).To(Equal(authn.RoomConsumer(bob.SignPub())))
		bobJS, err = jetstream.New(dialMember(env, n2, bob))
		Expect(err).NotTo(HaveOccurred())

		mErrs = &asyncErrs{}
		mnc, err = chaos.DialAs(env.Cluster, n1, mallory, nats.ErrorHandler(mErrs.handler))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(mnc.Close)

		if nc, err := chaos.DialInternal(env.Cluster, n1); err == nil {
			internal = nc
			DeferCleanup(nc.Close)
		}
	})

	It("refuses a push consumer to a foreign subject, another member's consumer and acks, consumers past the limit, and a consumer kept after a revoke",
		Claim("claim:acl-jetstream"), func(ctx SpecContext) {
			stream := room.Stream
			bobName := bobCons.Consumer

			By("watchers on the foreign subjects: another member's exact inbox and, where reachable, the daemon's own")
			bnc := dialMember(env, n2, bob)
			bobInbox := authn.InboxPrefix(bob.SignPub()) + ".watch"
			watched := []*nats.Subscription{}
			sub, err := bnc.SubscribeSync(bobInbox)
			Expect(err).NotTo(HaveOccurred())
			watched = append(watched, sub)
			if internal != nil {
				sub, err := internal.SubscribeSync("unibus.sys.probe")
				Expect(err).NotTo(HaveOccurred())
				watched = append(watched, sub)
			}
			Expect(bnc.Flush()).To(Succeed())

			By("a push consumer delivering to them, under every create subject")
			for i, target := range []string{"unibus.sys.probe", bobInbox} {
				cfg, _ := json.Marshal(map[string]any{"stream_name": stream, "config": map[string]any{
					"durable_name": "evil" + string(rune('a'+i)), "name": "evil" + string(rune('a'+i)),
					"deliver_subject": target, "deliver_policy": "all", "ack_policy": "none"}})
				for _, subj := range []string{
					"$JS.API.CONSUMER.CREATE." + stream,
					"$JS.API.CONSUMER.CREATE." + stream + ".evil" + string(rune('a'+i)),
					"$JS.API.CONSUMER.DURABLE.CREATE." + stream + ".evil" + string(rune('a'+i)),
				} {
					Expect(mnc.Publish(subj, cfg)).To(Succeed())
					mErrs.expectDenied("Publish", subj)
				}
			}
			for _, s := range watched {
				_, err := s.NextMsg(2 * time.Second)
				Expect(errors.Is(err, nats.ErrTimeout)).To(BeTrue(), "a delivery reached %s: %v", s.Subject, err)
			}

			By("deleting, draining, inspecting or acking bob's consumer")
			for _, subj := range []string{
				"$JS.API.CONSUMER.DELETE." + stream + "." + bobName,
				"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + bobName,
				"$JS.API.CONSUMER.INFO." + stream + "." + bobName,
				"$JS.ACK." + stream + "." + bobName + ".1.1.1.0.0",
			} {
				Expect(mnc.Publish(subj, nil)).To(Succeed())
				mErrs.expectDenied("Publish", subj)
			}
			// A lookup may meet a consumer or meta election on a loaded
			// host (no reply, 10008): retried. Not found is the claim
			// failing, at once.
			var bc jetstream.Consumer
			Eventually(func(g Gomega) {
				var err error
				bc, err = bobJS.Consumer(ctx, stream, bobName)
				if errors.Is(err, jetstream.ErrConsumerNotFound) {
					StopTrying("bob's consumer is gone after mallory's delete").Wrap(err).Now()
				}
				g.Expect(err).NotTo(HaveOccurred(), "bob's consumer survives mallory's delete")
			}).WithContext(ctx).WithTimeout(20 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
			batch, err := bc.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
			Expect(err).NotTo(HaveOccurred())
			got := 0
			for range batch.Messages() {
				got++ // fetched, not acked
			}
			Expect(got).To(Equal(3), "bob's messages were not drained by mallory")
			Expect(mnc.Publish("$JS.ACK."+stream+"."+bobName+".1.1.1.0.0", []byte("+ACK"))).To(Succeed())
			mErrs.expectDenied("Publish", "$JS.ACK."+stream+"."+bobName)
			info, err := bc.Info(ctx)
			Expect(err).NotTo(HaveOccurred())
			Expect(info.AckFloor.Stream).To(BeZero(), "mallory's ack did not ack bob's message")
			Expect(info.NumAckPending).To(Equal(3))

			By("consumers past the limit: a member creates none itself; the control plane makes one per member")
			for i := range 5 {
				subj := "$JS.API.CONSUMER.CREATE." + stream + ".more" + string(rune('a'+i))
				Expect(mnc.Publish(subj, []byte(`{"config":{"name":"x"}}`))).To(Succeed())
				mErrs.expectDenied("Publish", subj)
			}
			var first api.RoomConsumer
			for range 3 {
				var rc api.RoomConsumer
				Expect(env.call(n1, mallory, "POST", "/v1/rooms/"+room.ID+"/consumer", api.ConsumerRequest{}, &rc)).To(BeElementOf(200, 201))
				if first.Consumer == "" {
					first = rc
				}
				Expect(rc.Consumer).To(Equal(first.Consumer), "the same consumer every time")
			}
			st, err := bobJS.Stream(ctx, stream)
			Expect(err).NotTo(HaveOccurred())
			Expect(st.CachedInfo().State.Consumers).To(Equal(2), "bob's and mallory's, nothing else")
			Expect(st.CachedInfo().Config.MaxConsumers).To(Equal(api.DefaultMaxConsumers), "the stream's backstop limit")

			By("mallory's consumer is deleted when she is revoked")
			revokedAt := time.Now()
			r := env.CLI(ctx, n2, "user", "revoke", "--store", "kv", mallory.SignPub())
			Expect(r.ExitCode).To(Equal(0), r.Stderr)
			Eventually(func(g Gomega) {
				st, err := bobJS.Stream(ctx, stream)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(st.CachedInfo().State.Consumers).To(Equal(1), "only bob's is left")
			}).WithContext(ctx).WithTimeout(15 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
			AddReportEntry("revoke to the member's room consumer deleted", time.Since(revokedAt).Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
			if internal != nil {
				ijs, err := jetstream.New(internal)
				Expect(err).NotTo(HaveOccurred())
				_, err = ijs.Consumer(ctx, stream, first.Consumer)
				Expect(errors.Is(err, jetstream.ErrConsumerNotFound)).To(BeTrue(), "mallory's consumer, seen by the internal identity: %v", err)
				_, err = ijs.Consumer(ctx, stream, bobName)
				Expect(err).NotTo(HaveOccurred(), "bob's consumer is kept")
			}
		})
})

// asyncErrs collects a connection's asynchronous errors (permission
// violations arrive that way).
type asyncErrs struct {
	mu   sync.Mutex
	errs []string
}

func (a *asyncErrs) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	a.errs = append(a.errs, err.Error())
	a.mu.Unlock()
}

func (a *asyncErrs) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.errs...)
}

// expectDenied waits for the server's permission violation naming subject.
func (a *asyncErrs) expectDenied(kind, subject string) {
	GinkgoHelper()
	Eventually(a.list).WithTimeout(3*time.Second).Should(ContainElement(And(
		ContainSubstring("Permissions Violation for "+kind),
		ContainSubstring(strings.TrimSuffix(subject, ".>")))), "%s %s must be refused", kind, subject)
}
