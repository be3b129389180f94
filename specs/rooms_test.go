package specs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Runbook section "Chaos test" / report 0012: the data plane a real client
// proved against production — signed control plane, E2E rooms.
var _ = Describe("The data plane", Ordered, func() {
	var (
		env             *Env
		alice, bob, eve *identity.Identity
		room            api.Room
		roomKey         []byte
		n1, n2, n3      chaos.Node
	)

	BeforeAll(func(ctx SpecContext) {
		env = NewEnv("rooms", chaos.ClusterSpec{})
		env.StartAll(ctx)
		n1, n2, n3 = env.Cluster.Nodes()[0], env.Cluster.Nodes()[1], env.Cluster.Nodes()[2]
		alice = env.AddUser(ctx, n1, "alice", identity.RoleMember)
		bob = env.AddUser(ctx, n1, "bob", identity.RoleMember)
		eve = env.AddUser(ctx, n1, "eve", identity.RoleMember)
	})

	It("rejects a replayed signed request on every node, and a stale or future timestamp",
		Claim("claim:anti-replay"), func(ctx SpecContext) {
			r := env.signedRequest(n1, alice, "GET", api.PathMe, nil, time.Now())
			code, body := env.send(r, nil)
			Expect(code).To(Equal(200), string(body))

			By("the same request again, to the same node and to the others")
			for _, n := range []chaos.Node{n1, n2, n3} {
				replay := r.Clone(ctx)
				replay.URL.Host = strings.TrimPrefix(apiBase(n), "https://")
				code, body := env.send(replay, nil)
				Expect(code).To(Equal(409), "replay on %s: %s", n.Name(), body)
				Expect(string(body)).To(ContainSubstring("replayed"))
			}

			By("timestamps outside the window")
			for _, off := range []time.Duration{-api.Window - 5*time.Second, api.Window + 5*time.Second} {
				code, body := env.send(env.signedRequest(n2, alice, "GET", api.PathMe, nil, time.Now().Add(off)), nil)
				Expect(code).To(Equal(401), "timestamp %s: %s", off, body)
				Expect(string(body)).To(ContainSubstring("stale timestamp"))
			}

			By("a tampered body, a wrong key, an unknown key")
			b := []byte(`{"name":"x","wrapped_key":"y"}`)
			tampered := env.signedRequest(n1, alice, "POST", api.PathRooms, b, time.Now())
			code, _ = env.send(tampered, []byte(`{"name":"z","wrapped_key":"y"}`))
			Expect(code).To(Equal(401))
			stranger, err := identity.Generate()
			Expect(err).NotTo(HaveOccurred())
			code, _ = env.send(env.signedRequest(n1, stranger, "GET", api.PathMe, nil, time.Now()), nil)
			Expect(code).To(Equal(403))

			By("a request signed for another cluster")
			other := env.signedRequest(n1, alice, "GET", api.PathMe, nil, time.Now())
			other.Header.Set(identity.HeaderCluster, "another-cluster")
			Expect(identity.SignRequest(other, nil, alice, time.Now())).To(Succeed())
			code, body = env.send(other, nil)
			Expect(code).To(Equal(401), string(body))
			Expect(string(body)).To(ContainSubstring("signed for cluster"))

			By("control: a fresh request with a new nonce is served")
			var me api.Me
			Expect(env.call(n3, alice, "GET", api.PathMe, nil, &me)).To(Equal(200))
			Expect(me.SignPub).To(Equal(alice.SignPub()))
		})

	It("stores only ciphertext; members decrypt, a non-member and the server cannot",
		Claim("claim:e2e"), func(ctx SpecContext) {
			// The real client: signed room creation (creator-signed key
			// fingerprint), signed key grants, every key checked.
			aliceAPI, bobAPI := clientAPI(env, alice), clientAPI(env, bob)
			name := "spec-e2e-" + randomHex(4)
			idem, req, key, err := probe.NewRoomRequest(alice, name)
			Expect(err).NotTo(HaveOccurred())
			roomKey = key
			room, err = aliceAPI.CreateRoom(ctx, idem, req)
			Expect(err).NotTo(HaveOccurred())
			Expect(aliceAPI.AddMember(ctx, room.ID, bob.SignPub(), roomKey)).To(Succeed())

			By("alice publishes sealed messages through the room stream")
			marker := "plaintext-marker-" + randomHex(8)
			nc := dialMember(env, n1, alice)
			js, err := jetstream.New(nc)
			Expect(err).NotTo(HaveOccurred())
			for i := range 5 {
				sealed, err := e2e.Seal(roomKey, room.ID, alice, []byte(marker+"-"+string(rune('a'+i))))
				Expect(err).NotTo(HaveOccurred())
				_, err = js.Publish(ctx, room.Subject, sealed, jetstream.WithMsgID(room.ID+"-"+string(rune('a'+i))))
				Expect(err).NotTo(HaveOccurred())
			}

			By("the stored messages are ciphertext")
			// Read raw: with the node's internal identity where the target
			// exposes it, else through a member's consumer (which hands out
			// the stored bytes unchanged).
			inc, err := chaos.DialInternal(env.Cluster, n3)
			internal := err == nil
			if !internal {
				inc = nc
			} else {
				defer inc.Close()
			}
			ijs, err := jetstream.New(inc)
			Expect(err).NotTo(HaveOccurred())
			st, err := ijs.Stream(ctx, room.Stream)
			Expect(err).NotTo(HaveOccurred())
			Expect(st.CachedInfo().Config.Replicas).To(Equal(3))
			Expect(st.CachedInfo().State.Msgs).To(BeEquivalentTo(5))
			var rawCons jetstream.Consumer
			if internal {
				rawCons, err = ijs.OrderedConsumer(ctx, room.Stream, jetstream.OrderedConsumerConfig{})
			} else {
				rawCons = memberConsumer(ctx, env, n1, alice, js, room)
			}
			Expect(err).NotTo(HaveOccurred())
			first, err := rawCons.Next(jetstream.FetchMaxWait(5 * time.Second))
			Expect(err).NotTo(HaveOccurred())
			rawData := first.Data()
			Expect(bytes.Contains(rawData, []byte(marker))).To(BeFalse(), "plaintext stored")

			if internal {
				By("the server holds only wrapped keys")
				for _, bucket := range []string{kv.RoomKeysBucket, kv.RoomsBucket, kv.MembersBucket} {
					b, err := ijs.KeyValue(ctx, bucket)
					Expect(err).NotTo(HaveOccurred())
					keys, err := b.ListKeys(ctx)
					Expect(err).NotTo(HaveOccurred())
					for k := range keys.Keys() {
						e, err := b.Get(ctx, k)
						Expect(err).NotTo(HaveOccurred())
						Expect(bytes.Contains(e.Value(), roomKey)).To(BeFalse())
						Expect(strings.Contains(string(e.Value()), hex.EncodeToString(roomKey))).To(BeFalse())
					}
				}
			}

			By("bob, a member, fetches his wrapped key and decrypts")
			var rk api.RoomKey
			Expect(env.call(n3, bob, "GET", "/v1/rooms/"+room.ID+"/key", nil, &rk)).To(Equal(200))
			bobKey, _, err := bobAPI.OpenRoomKey(ctx, room.ID, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(bobKey).To(Equal(roomKey))
			pt, sender, err := e2e.Open(bobKey, room.ID, rawData)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(pt)).To(Equal(marker + "-a"))
			Expect(sender).To(Equal(alice.SignPub()))

			By("bob reads the room over NATS with his ACL")
			bnc := dialMember(env, n2, bob)
			bjs, err := jetstream.New(bnc)
			Expect(err).NotTo(HaveOccurred())
			cons := memberConsumer(ctx, env, n2, bob, bjs, room)
			batch, err := cons.Fetch(5, jetstream.FetchMaxWait(5*time.Second))
			Expect(err).NotTo(HaveOccurred())
			got := 0
			for m := range batch.Messages() {
				_, _, err := e2e.Open(bobKey, room.ID, m.Data())
				Expect(err).NotTo(HaveOccurred())
				got++
			}
			Expect(got).To(Equal(5))

			By("eve, registered but not a member, gets no key, no subscription, no plaintext")
			Expect(env.call(n1, eve, "GET", "/v1/rooms/"+room.ID+"/key", nil, nil)).To(Equal(404))
			_, err = e2e.UnwrapRoomKey(rk.WrappedKey, room.ID, eve)
			Expect(err).To(HaveOccurred(), "eve unwrapping bob's key")
			var (
				mu   sync.Mutex
				errs []string
			)
			enc, err := chaos.DialAs(env.Cluster, n1, eve, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				mu.Lock()
				errs = append(errs, err.Error())
				mu.Unlock()
			}))
			Expect(err).NotTo(HaveOccurred())
			defer enc.Close()
			_, err = enc.SubscribeSync(room.Subject)
			Expect(err).NotTo(HaveOccurred())
			Eventually(func() []string { mu.Lock(); defer mu.Unlock(); return errs }).WithTimeout(3 * time.Second).
				Should(ContainElement(ContainSubstring("Permissions Violation for Subscription")))
			otherKey, err := e2e.NewRoomKey()
			Expect(err).NotTo(HaveOccurred())
			_, _, err = e2e.Open(otherKey, room.ID, rawData)
			Expect(err).To(HaveOccurred(), "a wrong room key opens nothing")

			if !internal {
				return // the target does not expose its internal identity
			}
			By("a wrapped key substituted by whoever can write the key bucket is refused by the member's client")
			keys, err := ijs.KeyValue(ctx, kv.RoomKeysBucket)
			Expect(err).NotTo(HaveOccurred())
			orig, err := keys.Get(ctx, room.ID+"."+bob.SignPub())
			Expect(err).NotTo(HaveOccurred())
			defer func() {
				_, err := keys.Put(context.Background(), room.ID+"."+bob.SignPub(), orig.Value())
				Expect(err).NotTo(HaveOccurred())
			}()
			evil, err := e2e.NewRoomKey()
			Expect(err).NotTo(HaveOccurred())
			evilWrap, err := e2e.WrapRoomKey(evil, room.ID, bob.SignPub())
			Expect(err).NotTo(HaveOccurred())
			// Signed by eve (registered, not a member), then unsigned but
			// naming alice as the adder.
			evilGrant, err := e2e.SignGrant(eve, room.ID, bob.SignPub(), evilWrap)
			Expect(err).NotTo(HaveOccurred())
			for _, row := range []map[string]string{
				{"wrapped_key": evilWrap, "added_by": eve.SignPub(), "key_sig": evilGrant.Sig},
				{"wrapped_key": evilWrap, "added_by": alice.SignPub()},
			} {
				b, _ := json.Marshal(row)
				_, err = keys.Put(ctx, room.ID+"."+bob.SignPub(), b)
				Expect(err).NotTo(HaveOccurred())
				_, _, err = bobAPI.OpenRoomKey(ctx, room.ID, nil)
				Expect(err).To(MatchError(e2e.ErrUntrustedKey), "substituted row %v", row)
				GinkgoWriter.Printf("substituted key refused: %v\n", err)
			}
		})
})

// clientAPI is id's control-plane client over every node.
func clientAPI(env *Env, id *identity.Identity) *probe.API {
	GinkgoHelper()
	var urls []string
	for _, n := range env.Cluster.Nodes() {
		urls = append(urls, apiBase(n))
	}
	a, err := probe.NewAPI(urls, env.Cluster.TLS().ClientCA, id)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(a.CloseIdle)
	return a
}

// dialMember connects id to n once its ACL covers its rooms (a membership
// reaches every node's ACL through a KV watch within milliseconds).
func dialMember(env *Env, n chaos.Node, id *identity.Identity) *nats.Conn {
	GinkgoHelper()
	nc, err := chaos.DialAs(env.Cluster, n, id, nats.MaxReconnects(-1))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(nc.Close)
	return nc
}

// memberConsumer gets id's pull consumer on room's stream from the control
// plane (members cannot create consumers themselves), reading from the start.
func memberConsumer(ctx context.Context, env *Env, n chaos.Node, id *identity.Identity, js jetstream.JetStream, room api.Room) jetstream.Consumer {
	GinkgoHelper()
	var rc api.RoomConsumer
	Expect(env.call(n, id, "POST", "/v1/rooms/"+room.ID+"/consumer", api.ConsumerRequest{DeliverFromSeq: 1}, &rc)).To(BeNumerically("<", 300))
	cons, err := js.Consumer(ctx, room.Stream, rc.Consumer)
	Expect(err).NotTo(HaveOccurred())
	return cons
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
