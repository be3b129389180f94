package specs

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Runbook section "Replication: go straight to R3" — and the in-place
// raise for buckets that were created at R1.
var _ = Describe("Replication", func() {
	Context("buckets created at R1", Ordered, func() {
		var env *Env

		BeforeAll(func(ctx SpecContext) {
			env = NewEnv("r1", chaos.Spec{KVReplicas: 1})
			env.StartAll(ctx)
		})

		It("are raised to R3 in place by `kv scale --replicas 3`, every key still readable on every node",
			Claim("r1-to-r3"), func(ctx SpecContext) {
				const keysPerBucket = 25
				first := env.Cluster.Nodes()[0]
				nc, err := chaos.DialInternal(env.Cluster, first)
				Expect(err).NotTo(HaveOccurred())
				defer nc.Close()
				js, err := jetstream.New(nc)
				Expect(err).NotTo(HaveOccurred())

				By("writing keys into every bucket while it is R1")
				before := map[string]jetstream.StreamConfig{}
				for _, b := range kv.Buckets {
					st, err := js.Stream(ctx, kv.StreamName(b.Name))
					Expect(err).NotTo(HaveOccurred())
					Expect(st.CachedInfo().Config.Replicas).To(Equal(1), "%s starts at R1", b.Name)
					before[b.Name] = st.CachedInfo().Config
					store, err := js.KeyValue(ctx, b.Name)
					Expect(err).NotTo(HaveOccurred())
					for i := range keysPerBucket {
						_, err := store.Put(ctx, fmt.Sprintf("spec.r1.k%03d", i), []byte(fmt.Sprintf("%s-%d", b.Name, i)))
						Expect(err).NotTo(HaveOccurred())
					}
				}

				By("scaling with the CLI on a node")
				r := env.CLI(ctx, first, "kv", "scale", "--replicas", "3")
				Expect(r.ExitCode).To(Equal(0), r.Stderr)
				Expect(strings.Count(r.Stdout, "replicas=3")).To(Equal(len(kv.Buckets)), r.Stdout)
				Expect(strings.Count(r.Stdout, "followers_current=2/2")).To(Equal(len(kv.Buckets)), r.Stdout)

				By("reading every key through every node, with the rest of each bucket's config unchanged")
				for _, n := range env.Cluster.Nodes() {
					nc, err := chaos.DialInternal(env.Cluster, n)
					Expect(err).NotTo(HaveOccurred())
					js, err := jetstream.New(nc)
					Expect(err).NotTo(HaveOccurred())
					for _, b := range kv.Buckets {
						st, err := js.Stream(ctx, kv.StreamName(b.Name))
						Expect(err).NotTo(HaveOccurred())
						cfg := st.CachedInfo().Config
						Expect(cfg.Replicas).To(Equal(3))
						want := before[b.Name]
						Expect(cfg.MaxMsgsPerSubject).To(Equal(want.MaxMsgsPerSubject), "%s history kept", b.Name)
						Expect(cfg.MaxAge).To(Equal(want.MaxAge), "%s TTL kept", b.Name)
						Expect(cfg.AllowDirect).To(BeFalse(), "%s direct gets stay off", b.Name)
						store, err := js.KeyValue(ctx, b.Name)
						Expect(err).NotTo(HaveOccurred())
						for i := range keysPerBucket {
							e, err := store.Get(ctx, fmt.Sprintf("spec.r1.k%03d", i))
							Expect(err).NotTo(HaveOccurred(), "%s key %d via %s", b.Name, i, n.Name())
							Expect(string(e.Value())).To(Equal(fmt.Sprintf("%s-%d", b.Name, i)))
						}
					}
					nc.Close()
				}
				env.WaitHealthy(ctx, 30*time.Second, env.Cluster.Nodes()...)
			})
	})
})
