package specs

import (
	"path/filepath"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
)

// Runbook sections "Rollback" and "Promote an existing single-node (SQLite)
// deployment".
var _ = Describe("Rollback and migration", Ordered, func() {
	var env *Env

	BeforeAll(func(ctx SpecContext) {
		env = NewEnv("rollback", chaos.ClusterSpec{})
		env.StartAll(ctx)
	})

	It("runs a node restarted without --store kv standalone on SQLite, keeping the KV buckets on disk for a retry",
		Claim("claim:rollback-sqlite"), Disruptive, func(ctx SpecContext) {
			if _, ok := env.Cluster.Nodes()[0].(*inproc.Node); !ok {
				Skip("only the in-process target can restart a node standalone")
			}
			si := env.Cluster.(chaos.StoreInspector)
			kvUser := env.AddUser(ctx, env.Cluster.Nodes()[0], "kv-only", identity.RoleMember)
			// The node to roll back holds the users bucket on disk: at N=3
			// every node does (the third is taken), at N=5 three of five.
			var (
				rolled *inproc.Node
				before []string
			)
			for _, n := range slices.Backward(env.Cluster.Nodes()) {
				dirs, err := si.StreamDirs(n)
				Expect(err).NotTo(HaveOccurred())
				if slices.Contains(dirs, "KV_UNIBUS_users") {
					rolled, before = n.(*inproc.Node), dirs
					break
				}
			}
			Expect(rolled).NotTo(BeNil(), "no node holds KV_UNIBUS_users on disk")

			db := filepath.Join(env.Dir, "standalone.db")
			sq, err := identity.Generate()
			Expect(err).NotTo(HaveOccurred())
			r := env.CLI(ctx, rolled, "user", "add", "--db", db, "--handle", "sq", "--role", "member", "--sign-pub", sq.SignPub())
			Expect(r.ExitCode).To(Equal(0), r.Stderr)
			Expect(r.Stdout).To(ContainSubstring("sqlite"))

			Expect(rolled.Stop(ctx)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) {
				_ = rolled.Stop(ctx)
				env.RestartStopped(ctx)
			}, NodeTimeout(restartBudget))
			Expect(rolled.StartStandalone(ctx, db)).To(Succeed())

			p := env.Health.Get(ctx, rolled.HealthzURL())
			Expect(p.Code).To(Equal(200), p.String())
			Expect(p.Health.Posture.Store).To(Equal("sqlite"))
			Expect(p.Health.Posture.Cluster).To(BeFalse())
			Expect(p.Health.Posture.BusAuth).To(Equal("enforce"))

			By("serving the SQLite allowlist, not the KV one")
			nc, err := chaos.DialAs(env.Cluster, rolled, sq)
			Expect(err).NotTo(HaveOccurred(), "a SQLite user on the standalone node")
			nc.Close()
			_, err = chaos.DialAs(env.Cluster, rolled, kvUser)
			Expect(err).To(HaveOccurred(), "a KV-only user on the standalone node")

			By("leaving the KV buckets on disk, and the other two nodes serving")
			after, err := si.StreamDirs(rolled)
			Expect(err).NotTo(HaveOccurred())
			Expect(after).To(ConsistOf(before))
			env.WaitHealthy(ctx, restartBudget, Others(env.Cluster, rolled)...)

			By("rejoining with --store kv: the retry finds its buckets")
			Expect(rolled.Stop(ctx)).To(Succeed())
			Expect(rolled.Start(ctx)).To(Succeed())
			env.WaitHealthy(ctx, restartBudget, env.Cluster.Nodes()...)
			_, ok := FindUser(env.ListUsers(ctx, rolled), kvUser.SignPub())
			Expect(ok).To(BeTrue())
		})

	It("migrates a SQLite store into the live KV over loopback, idempotently; refuses a remote target without --ca",
		Claim("claim:migrate-to-kv"), func(ctx SpecContext) {
			if env.Cluster.Target() != "inproc" {
				Skip("runs on the in-process target (CLAIMS.md: migrate-to-kv is not an ssh-target claim)")
			}
			first := env.Cluster.Nodes()[0]
			db := filepath.Join(env.Dir, "legacy.db")
			var ids []*identity.Identity
			for i, role := range []string{"admin", "member", "member"} {
				id, err := identity.Generate()
				Expect(err).NotTo(HaveOccurred())
				ids = append(ids, id)
				r := env.CLI(ctx, first, "user", "add", "--db", db, "--handle", []string{"legacy-root", "legacy-a", "legacy-b"}[i], "--role", role, "--sign-pub", id.SignPub())
				Expect(r.ExitCode).To(Equal(0), r.Stderr)
			}
			Expect(env.CLI(ctx, first, "user", "revoke", "--db", db, ids[2].SignPub()).ExitCode).To(Equal(0))

			r := env.CLI(ctx, first, "migrate-to-kv", "--db", db)
			Expect(r.ExitCode).To(Equal(0), r.Stderr)
			Expect(r.Stdout).To(ContainSubstring("3 rows: 3 copied, 0 unchanged"))
			for _, n := range env.Cluster.Nodes() {
				users := env.ListUsers(ctx, n)
				for i, id := range ids {
					u, ok := FindUser(users, id.SignPub())
					Expect(ok).To(BeTrue(), "%s on %s", id.SignPub(), n.Name())
					Expect(string(u.Role)).To(Equal([]string{"admin", "member", "member"}[i]))
					want := store.StatusActive
					if i == 2 {
						want = store.StatusRevoked
					}
					Expect(u.Status).To(Equal(want))
				}
			}

			r = env.CLI(ctx, env.Cluster.Nodes()[1], "migrate-to-kv", "--db", db)
			Expect(r.ExitCode).To(Equal(0), r.Stderr)
			Expect(r.Stdout).To(ContainSubstring("3 rows: 0 copied, 3 unchanged"), "a second run changes nothing")

			By("refusing a non-loopback target without --ca (0.0.0.0 stays on this host if it ever connected)")
			res, err := inproc.RunBinary(ctx, suite.binary, "migrate-to-kv", "--db", db, "--nats-url", "tls://0.0.0.0:1")
			Expect(err).NotTo(HaveOccurred())
			Expect(res.ExitCode).To(Equal(2))
			Expect(strings.ToLower(res.Stderr)).To(ContainSubstring("refusing non-loopback"))
		})
})
