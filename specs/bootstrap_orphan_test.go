package specs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Runbook section "Seed the first admin into the KV": the old loopback
// bootstrap (a standalone, unclustered server writing the users bucket into
// the seed node's store dir before the cluster starts) reproduced as it was
// written, so the correction (seed through the live cluster) stays justified
// and is re-checked on every nats-server upgrade.
//
// What nats-server 2.15.2 does with it: the seed node restores the
// standalone stream from disk, the meta layer knows nothing of it, and the
// daemons then create the cluster's own R3 KV_UNIBUS_users under the same
// name. The seed node is always one of its three peers, so it takes the
// restored stream, seed included, as its replica of the new group: the
// stream is never orphaned (nor cleaned up), the seed is never replicated,
// and what the cluster answers depends on who leads the stream: another
// leader serves the real writes, the seed node serves the seed instead of
// them. Reads through a consumer (the allowlist watch, `user list`'s key
// listing) land on a random replica, so on top of that the seed
// authenticates on some nodes and not others: recorded as evidence, since
// placement is random.
var _ = Describe("Seed the first admin", func() {
	Context("the old loopback bootstrap", Ordered, func() {
		It("never seeds the cluster: the seed stays in the seed node's replica only, and replaces acknowledged writes whenever that node leads",
			Claim("claim:bootstrap-orphan"), Slow, func(ctx SpecContext) {
				// nats-server looks for orphaned streams 30 s after its meta
				// recovery (before the node is healthy); watch past that.
				const orphanCheck = 30 * time.Second
				env := NewEnv("orphan", chaos.Spec{})
				nodes := env.Cluster.Nodes()
				seedNode, other, third := nodes[0], nodes[1], nodes[2]
				dirs := map[string]string{}
				for _, n := range nodes {
					sd, ok := n.(interface{ StoreDir() string })
					if !ok {
						Skip(fmt.Sprintf("target %s does not expose node store dirs; the loopback bootstrap writes into one", env.Cluster.Target()))
					}
					dirs[n.Name()] = sd.StoreDir()
				}

				By("seeding an admin the old way: a standalone loopback server on the seed node's JetStream store")
				seed, err := identity.Generate()
				Expect(err).NotTo(HaveOccurred())
				marker := "seed-" + seed.SignPub()[:16] // the seed's handle: unique bytes to find on disk
				seedStandalone(ctx, dirs[seedNode.Name()], seedNode.Name(), store.User{
					SignPub: seed.SignPub(), Handle: marker, Role: identity.RoleAdmin, Status: store.StatusActive,
				})
				seeded := filesWith(dirs[seedNode.Name()], marker)
				Expect(seeded).NotTo(BeEmpty(), "the standalone server wrote the seed into %s", dirs[seedNode.Name()])
				Evidence("seed-node-store-before-start", storeFiles(dirs[seedNode.Name()], marker))

				By("starting the cluster on that store")
				env.StartAll(ctx)
				healthyAt := time.Now()
				conns := map[string]*nats.Conn{}
				for _, n := range nodes {
					nc, err := chaos.DialInternal(env.Cluster, n)
					Expect(err).NotTo(HaveOccurred())
					DeferCleanup(nc.Close)
					conns[n.Name()] = nc
				}
				initial := map[string]any{"users_leader": usersLeader(ctx, env)}
				if v, err := usersView(ctx, conns[other.Name()], seed.SignPub()); err == nil {
					initial["seed_readable"] = v[seed.SignPub()] != ""
				}
				for _, n := range nodes {
					// Each node's allowlist watch reads through one replica picked
					// at random: the seed authenticates on the nodes whose watch
					// landed on the seed node's replica.
					nc, err := chaos.DialAs(env.Cluster, n, seed)
					if err == nil {
						nc.Close()
					}
					initial["seed_admin_connects_"+n.Name()] = err == nil
				}
				Evidence("right-after-start", initial)

				By("seeding the real first admin the corrected way, through the live cluster, while another node leads the users bucket")
				moveUsersLeader(ctx, conns[third.Name()], other.Name())
				root := env.AddUserNoWait(ctx, other, "root", identity.RoleAdmin)
				// `user list` finds keys with a watch on a random replica, so
				// what it shows depends on where that lands: evidence only.
				Evidence("user-list-while-another-node-leads", userListSeen(ctx, env, seed.SignPub(), root.SignPub()))

				By("watching past the orphan check: the seed is invisible everywhere, yet never cleaned up")
				window := time.Until(healthyAt.Add(orphanCheck + 3*time.Second))
				if window < 5*time.Second {
					window = 5 * time.Second
				}
				Consistently(func(g Gomega) {
					for _, n := range nodes {
						v, err := usersView(ctx, conns[n.Name()], seed.SignPub(), root.SignPub())
						g.Expect(err).NotTo(HaveOccurred(), "read through %s", n.Name())
						g.Expect(v[seed.SignPub()]).To(BeEmpty(), "the loopback seed read through %s", n.Name())
						g.Expect(v[root.SignPub()]).To(ContainSubstring(`"`+SpecHandle("root")+`"`), "the live admin read through %s", n.Name())
					}
					g.Expect(filesWith(dirs[seedNode.Name()], marker)).NotTo(BeEmpty(), "the seed was deleted from %s's store", seedNode.Name())
					for _, n := range []chaos.Node{other, third} {
						g.Expect(filesWith(dirs[n.Name()], marker)).To(BeEmpty(), "the seed replicated to %s", n.Name())
					}
				}).WithContext(ctx).WithTimeout(window).WithPolling(time.Second).Should(Succeed())
				survived := time.Since(healthyAt)
				AddReportEntry("loopback seed still on the seed node's disk, never served, after", survived.Round(time.Second).String(), ReportEntryVisibilityFailureOrVerbose)

				By("moving the users bucket's leadership to the seed node: the seed is served, the acknowledged live admin is gone")
				movedAt := time.Now()
				moveUsersLeader(ctx, conns[other.Name()], seedNode.Name())
				Eventually(func(g Gomega) {
					for _, n := range nodes {
						v, err := usersView(ctx, conns[n.Name()], seed.SignPub(), root.SignPub())
						g.Expect(err).NotTo(HaveOccurred(), "read through %s", n.Name())
						g.Expect(v[seed.SignPub()]).To(ContainSubstring(marker), "the loopback seed read through %s", n.Name())
						g.Expect(v[root.SignPub()]).To(BeEmpty(), "the live admin read through %s", n.Name())
					}
				}).WithContext(ctx).WithTimeout(10 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
				AddReportEntry("seed served instead of the live admin, from the step-down towards the seed node", time.Since(movedAt).Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
				Evidence("user-list-while-seed-node-leads", userListSeen(ctx, env, seed.SignPub(), root.SignPub()))

				By("moving the leadership away again: the replicas disagree, the view flips back")
				moveUsersLeader(ctx, conns[other.Name()], third.Name())
				Eventually(func(g Gomega) {
					for _, n := range nodes {
						v, err := usersView(ctx, conns[n.Name()], seed.SignPub(), root.SignPub())
						g.Expect(err).NotTo(HaveOccurred(), "read through %s", n.Name())
						g.Expect(v[seed.SignPub()]).To(BeEmpty(), "the loopback seed read through %s", n.Name())
						g.Expect(v[root.SignPub()]).To(ContainSubstring(`"`+SpecHandle("root")+`"`), "the live admin read through %s", n.Name())
					}
				}).WithContext(ctx).WithTimeout(10 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())

				final := map[string]any{}
				for _, n := range nodes {
					final[n.Name()] = storeFiles(dirs[n.Name()], marker)
				}
				Evidence("stores-at-end", final)
				Expect(filesWith(dirs[seedNode.Name()], marker)).NotTo(BeEmpty(), "the seed is still only on %s", seedNode.Name())
				for _, n := range []chaos.Node{other, third} {
					Expect(filesWith(dirs[n.Name()], marker)).To(BeEmpty(), "the seed never reaches %s", n.Name())
				}
			})
	})
})

// seedStandalone is the old runbook's bootstrap: a temporary, unclustered,
// no-auth JetStream server on loopback over the seed node's store dir; the
// users bucket created as the daemon creates it (R1 here, as migrate-to-kv
// --replicas 1 did) and u written as migrate-to-kv writes it; then stopped.
func seedStandalone(ctx context.Context, storeDir, name string, u store.User) {
	GinkgoHelper()
	Expect(os.MkdirAll(storeDir, 0o700)).To(Succeed())
	s, err := server.NewServer(&server.Options{
		ServerName: name, Host: "127.0.0.1", Port: -1,
		JetStream: true, StoreDir: storeDir,
		NoSigs: true, NoLog: true,
	})
	Expect(err).NotTo(HaveOccurred())
	s.Start()
	defer func() {
		s.Shutdown()
		s.WaitForShutdown()
	}()
	Expect(s.ReadyForConnections(10*time.Second)).To(BeTrue(), "standalone bootstrap server ready")
	nc, err := nats.Connect(s.ClientURL())
	Expect(err).NotTo(HaveOccurred())
	defer nc.Close()
	js, err := jetstream.New(nc)
	Expect(err).NotTo(HaveOccurred())
	_, err = js.CreateStream(ctx, kv.StreamConfig(kv.Buckets[0], 1))
	Expect(err).NotTo(HaveOccurred())
	users := kv.NewUsers(js)
	_, err = users.AddUser(ctx, u)
	Expect(err).NotTo(HaveOccurred())
	got, err := users.GetUser(ctx, u.SignPub)
	Expect(err).NotTo(HaveOccurred())
	Expect(got.Role).To(Equal(identity.RoleAdmin), "the standalone server reads the seed back")
	Expect(got.Handle).To(Equal(u.Handle))
}

// userListSeen runs `user list --store kv` on every node and says which of
// the seed and the live admin each one listed.
func userListSeen(ctx context.Context, env *Env, seedPub, rootPub string) map[string]map[string]bool {
	GinkgoHelper()
	out := map[string]map[string]bool{}
	for _, n := range env.Cluster.Nodes() {
		users := env.ListUsers(ctx, n)
		_, seed := FindUser(users, seedPub)
		_, root := FindUser(users, rootPub)
		out[n.Name()] = map[string]bool{"loopback_seed": seed, "live_admin": root}
	}
	return out
}

// usersView reads keys from the users bucket through nc's node (stream
// leader reads: direct gets are off); a missing key maps to "".
func usersView(ctx context.Context, nc *nats.Conn, keys ...string) (map[string]string, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b, err := js.KeyValue(rctx, kv.Buckets[0].Name)
	if err != nil {
		return nil, fmt.Errorf("bind %s: %w", kv.Buckets[0].Name, err)
	}
	out := map[string]string{}
	for _, k := range keys {
		e, err := b.Get(rctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			out[k] = ""
		case err != nil:
			return nil, fmt.Errorf("get %s: %w", k, err)
		default:
			out[k] = string(e.Value())
		}
	}
	return out, nil
}

// moveUsersLeader makes want the leader of the users bucket's stream (a
// preferred-placement step-down, asked through nc's node).
func moveUsersLeader(ctx context.Context, nc *nats.Conn, want string) {
	GinkgoHelper()
	subj := fmt.Sprintf(server.JSApiStreamLeaderStepDownT, kv.StreamName(kv.Buckets[0].Name))
	req, err := json.Marshal(server.JSApiLeaderStepdownRequest{Placement: &server.Placement{Preferred: want}})
	Expect(err).NotTo(HaveOccurred())
	Eventually(func(g Gomega) {
		if usersLeaderVia(ctx, nc) != want {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			m, err := nc.RequestWithContext(rctx, subj, req)
			g.Expect(err).NotTo(HaveOccurred())
			var resp server.JSApiStreamLeaderStepDownResponse
			g.Expect(json.Unmarshal(m.Data, &resp)).To(Succeed())
			if resp.Error != nil {
				GinkgoWriter.Printf("step-down towards %s: %v\n", want, resp.Error)
			}
		}
		g.Expect(usersLeaderVia(ctx, nc)).To(Equal(want))
	}).WithContext(ctx).WithTimeout(20 * time.Second).WithPolling(time.Second).Should(Succeed())
	GinkgoWriter.Printf("users bucket leader: %s\n", want)
}

// filesWith lists the files under dir (relative) whose bytes contain marker.
// Message blocks are neither compressed nor encrypted by default.
func filesWith(dir, marker string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(marker)) {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// storeFiles is the evidence form of a store dir: every file of the users
// stream with its size and whether it holds marker.
func storeFiles(dir, marker string) []string {
	var out []string
	stream := kv.StreamName(kv.Buckets[0].Name)
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !bytes.Contains([]byte(p), []byte(stream)) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		s := fmt.Sprintf("%s (%d bytes)", rel, len(b))
		if bytes.Contains(b, []byte(marker)) {
			s += " holds the seed"
		}
		out = append(out, s)
		return nil
	})
	return out
}
