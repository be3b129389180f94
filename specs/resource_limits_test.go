package specs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
)

// Runbook section "Resource limits": one member with a valid identity
// tries to fill the disks. Oversized messages are refused, a room that
// fills up rejects new messages, room creation stops at the member's
// quota, and all the while the control plane (user add and revoke) keeps
// working. The flood is bounded by the room's own limit (16 MiB by
// default), so it stays small on the ssh target too.
var _ = Describe("Resource limits", Ordered, func() {
	var (
		env     *Env
		mallory *identity.Identity
		n1, n2  chaos.Node
		rooms   []api.Room
		roomKey []byte
	)

	BeforeAll(func(ctx SpecContext) {
		env = NewEnv("limits", chaos.ClusterSpec{})
		env.StartAll(ctx)
		n1, n2 = env.Cluster.Nodes()[0], env.Cluster.Nodes()[1]
		mallory = env.AddUser(ctx, n1, "mallory", identity.RoleMember)
		var err error
		roomKey, err = e2e.NewRoomKey()
		Expect(err).NotTo(HaveOccurred())
		// Rooms cannot be deleted through the API: remove the streams the
		// spec made where the target lends the internal identity.
		DeferCleanup(func(ctx SpecContext) {
			nc, err := chaos.DialInternal(env.Cluster, n1)
			if err != nil {
				GinkgoWriter.Printf("rooms left on the cluster (no internal identity on %s): %d\n", env.Cluster.Target(), len(rooms))
				return
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			Expect(err).NotTo(HaveOccurred())
			for _, r := range rooms {
				_ = js.DeleteStream(ctx, r.Stream)
			}
		}, NodeTimeout(time.Minute))
	})

	createRoom := func(name string) (int, api.Room, string) {
		GinkgoHelper()
		wrapped, err := e2e.WrapRoomKey(roomKey, name, mallory.SignPub())
		Expect(err).NotTo(HaveOccurred())
		body, err := json.Marshal(api.CreateRoomRequest{Name: name, WrappedKey: wrapped})
		Expect(err).NotTo(HaveOccurred())
		code, b := env.send(env.signedRequest(n1, mallory, "POST", api.PathRooms, body, time.Now()), body)
		var room api.Room
		if code == 201 {
			Expect(json.Unmarshal(b, &room)).To(Succeed())
			rooms = append(rooms, room)
		}
		return code, room, string(b)
	}

	// userAddRevoke is the control plane a full data plane must not block.
	userAddRevoke := func(ctx context.Context, handle string) {
		GinkgoHelper()
		id, err := identity.Generate()
		Expect(err).NotTo(HaveOccurred())
		r := env.CLI(ctx, n2, "user", "add", "--store", "kv", "--handle", SpecHandle(handle), "--role", "member", "--sign-pub", id.SignPub())
		Expect(r.ExitCode).To(Equal(0), "user add: %s", r.Stderr)
		r = env.CLI(ctx, n2, "user", "revoke", "--store", "kv", id.SignPub())
		Expect(r.ExitCode).To(Equal(0), "user revoke: %s", r.Stderr)
	}

	It("a flooding member is stopped at the room's limits and its quota; user add and revoke keep working",
		Claim("claim:resource-limits"), Disruptive, func(ctx SpecContext) { // floods a room to its 16 MiB limit: not on a read-only live run
			code, room, body := createRoom("spec-flood-" + randomHex(4))
			Expect(code).To(Equal(201), body)
			nc := dialMember(env, n1, mallory)
			js, err := jetstream.New(nc)
			Expect(err).NotTo(HaveOccurred())
			st, err := js.Stream(ctx, room.Stream)
			Expect(err).NotTo(HaveOccurred())
			cfg := st.CachedInfo().Config
			Evidence("room-stream-limits", map[string]any{"max_bytes": cfg.MaxBytes, "max_msgs": cfg.MaxMsgs, "max_msg_size": cfg.MaxMsgSize, "discard": cfg.Discard.String()})
			Expect(cfg.MaxBytes).To(BeNumerically(">", 0), "the room stream is bounded in bytes")
			Expect(cfg.MaxMsgSize).To(BeNumerically(">", 0), "the room stream is bounded in message size")
			Expect(cfg.MaxBytes).To(BeNumerically("<=", 256<<20), "a flood this spec can afford")

			By("an oversized message is refused")
			_, err = js.Publish(ctx, room.Subject, bytes.Repeat([]byte{'x'}, int(cfg.MaxMsgSize)+1))
			Expect(err).To(HaveOccurred(), "a message of max_msg_size+1 bytes")
			GinkgoWriter.Printf("oversized: %v\n", err)

			By("flooding the room until it is full, with user add and revoke running meanwhile")
			payload := bytes.Repeat([]byte{'f'}, int(cfg.MaxMsgSize)-1024)
			maxSends := int(cfg.MaxBytes/int64(len(payload))) + 64 // bounded: a little past full
			var (
				stored, rejected atomic.Int64
				firstReject      atomic.Value
				stop             = make(chan struct{})
				flooded          = make(chan struct{})
			)
			go func() {
				defer GinkgoRecover()
				defer close(flooded)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					_, err := js.Publish(pctx, room.Subject, payload)
					cancel()
					switch {
					case err == nil:
						stored.Add(1)
					case ctx.Err() != nil:
						return
					default:
						if rejected.Add(1) == 1 {
							firstReject.Store(err.Error())
						}
						if i >= maxSends {
							// Full: keep knocking, slowly, until told to stop.
							select {
							case <-stop:
								return
							case <-time.After(50 * time.Millisecond):
							}
						}
					}
				}
			}()
			floodStopped := false
			stopFlood := func() {
				if !floodStopped {
					close(stop)
					floodStopped = true
					<-flooded
				}
			}
			DeferCleanup(stopFlood)
			userAddRevoke(ctx, "during-flood-1")
			Eventually(func() int64 { return rejected.Load() }).WithContext(ctx).WithTimeout(3*time.Minute).WithPolling(200*time.Millisecond).
				Should(BeNumerically(">", 0), "the room fills up and rejects new messages")
			userAddRevoke(ctx, "during-flood-2")
			stopFlood()
			info, err := st.Info(ctx)
			Expect(err).NotTo(HaveOccurred())
			Evidence("flood", map[string]any{"stored": stored.Load(), "rejected": rejected.Load(), "first_reject": firstReject.Load(),
				"room_bytes": info.State.Bytes, "room_msgs": info.State.Msgs})
			Expect(info.State.Bytes).To(BeNumerically("<=", uint64(cfg.MaxBytes)), "the room stays within its MaxBytes")
			Expect(info.State.Bytes).To(BeNumerically(">", uint64(cfg.MaxBytes)-uint64(2*cfg.MaxMsgSize)), "the flood filled the room")
			Expect(fmt.Sprint(firstReject.Load())).To(ContainSubstring("maximum bytes"), "a full room rejects new messages")

			By("the full room still rejects; the first message stored is still there (reject-new, not discard-old)")
			_, err = js.Publish(ctx, room.Subject, payload)
			Expect(err).To(HaveOccurred())
			Expect(info.State.FirstSeq).To(BeEquivalentTo(1))

			By("creating rooms past the member's room quota")
			created := 1
			var refused string
			for i := 0; i < api.DefaultRoomQuota+5 && refused == ""; i++ {
				code, _, body := createRoom("spec-quota-" + randomHex(4))
				switch code {
				case 201:
					created++
				case 403:
					refused = body
				default:
					Fail(fmt.Sprintf("room creation: %d %s", code, body))
				}
			}
			Evidence("quota", map[string]any{"created": created, "refused": refused})
			Expect(refused).To(ContainSubstring("room quota reached"), "creation past the quota is refused")
			Expect(refused).To(ContainSubstring(fmt.Sprintf("%d rooms created, limit %d", created, created)))

			By("after the flood: the control plane serves, every node healthy")
			userAddRevoke(ctx, "after-flood")
			for _, n := range env.Cluster.Nodes() {
				p := env.Health.Get(ctx, n.HealthzURL())
				Expect(p.Code).To(Equal(200), "%s: %s", n.Name(), p)
			}
			var me api.Me
			Expect(env.call(n2, mallory, "GET", api.PathMe, nil, &me)).To(Equal(200))
			Expect(me.Rooms).To(HaveLen(created))
		})
})
