package specs

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Runbook section "Replication: go straight to R3" — and the in-place
// raise for buckets that were created at R1.
var _ = Describe("Replication", func() {
	Context("buckets created at R1", Ordered, Wipe, func() {
		var env *Env

		BeforeAll(func(ctx SpecContext) {
			env = NewEnv("r1", chaos.ClusterSpec{KVReplicas: 1})
			env.StartAll(ctx)
		})

		It("are raised to R3 in place by `kv scale --replicas 3`, every key still readable on every node",
			Claim("claim:r1-to-r3"), func(ctx SpecContext) {
				first := env.Cluster.Nodes()[0]
				report := func() clusterinfo.Report {
					GinkgoHelper()
					return env.Report(ctx, first)
				}
				for _, b := range report().Buckets {
					Expect(b.Replicas).To(Equal(1), "%s starts at R1", b.Bucket)
				}
				// The stream configs, where the target lets us read them.
				before := map[string]jetstream.StreamConfig{}
				if nc, err := chaos.DialInternal(env.Cluster, first); err == nil {
					js, _ := jetstream.New(nc)
					for _, b := range kv.Buckets {
						st, err := js.Stream(ctx, kv.StreamName(b.Name))
						Expect(err).NotTo(HaveOccurred())
						before[b.Name] = st.CachedInfo().Config
					}
					nc.Close()
				}

				By("writing keys into the buckets while they are R1: users, rooms, members, wrapped keys")
				var users []*identity.Identity
				for i := range 8 {
					users = append(users, env.AddUser(ctx, first, fmt.Sprintf("r1-%d", i), identity.RoleMember))
				}
				owner := users[0]
				var rooms []api.Room
				wrapped := map[string]string{}
				for i := range 3 {
					key, err := e2e.NewRoomKey()
					Expect(err).NotTo(HaveOccurred())
					name := fmt.Sprintf("spec-r1-%d-%s", i, randomHex(3))
					w, err := e2e.WrapRoomKey(key, name, owner.SignPub())
					Expect(err).NotTo(HaveOccurred())
					var room api.Room
					Expect(env.call(first, owner, "POST", api.PathRooms, api.CreateRoomRequest{Name: name, WrappedKey: w}, &room)).To(Equal(201))
					rooms = append(rooms, room)
					wrapped[room.ID] = w
				}

				By("scaling with the CLI on a node")
				r := env.CLI(ctx, first, "kv", "scale", "--replicas", "3")
				Expect(r.ExitCode).To(Equal(0), r.Stderr)
				Expect(strings.Count(r.Stdout, "replicas=3")).To(Equal(len(kv.Buckets)), r.Stdout)
				Expect(strings.Count(r.Stdout, "followers_current=2/2")).To(Equal(len(kv.Buckets)), r.Stdout)

				By("reading every key through every node")
				for _, n := range env.Cluster.Nodes() {
					listed := env.ListUsers(ctx, n)
					for _, u := range users {
						_, ok := FindUser(listed, u.SignPub())
						Expect(ok).To(BeTrue(), "user %s via %s", u.SignPub(), n.Name())
					}
					var mine []api.Room
					Expect(env.call(n, owner, "GET", api.PathRooms, nil, &mine)).To(Equal(200))
					Expect(mine).To(HaveLen(len(rooms)), "rooms via %s", n.Name())
					for _, room := range rooms {
						var rk api.RoomKey
						Expect(env.call(n, owner, "GET", "/v1/rooms/"+room.ID+"/key", nil, &rk)).To(Equal(200))
						Expect(rk.WrappedKey).To(Equal(wrapped[room.ID]))
					}
				}

				if len(before) > 0 {
					By("the rest of each bucket's config unchanged (a partial update would reset History and TTL)")
					nc, err := chaos.DialInternal(env.Cluster, first)
					Expect(err).NotTo(HaveOccurred())
					defer nc.Close()
					js, _ := jetstream.New(nc)
					for _, b := range kv.Buckets {
						st, err := js.Stream(ctx, kv.StreamName(b.Name))
						Expect(err).NotTo(HaveOccurred())
						cfg := st.CachedInfo().Config
						Expect(cfg.Replicas).To(Equal(3))
						Expect(cfg.MaxMsgsPerSubject).To(Equal(before[b.Name].MaxMsgsPerSubject), "%s history kept", b.Name)
						Expect(cfg.MaxAge).To(Equal(before[b.Name].MaxAge), "%s TTL kept", b.Name)
						Expect(cfg.AllowDirect).To(BeFalse(), "%s direct gets stay off", b.Name)
					}
				}
				env.WaitHealthy(ctx, 30*time.Second, env.Cluster.Nodes()...)
			})
	})
})
