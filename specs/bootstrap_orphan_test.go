package specs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/inproc"
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
// Left alone, nats-server 2.15.2 restores the standalone stream from disk,
// the meta layer knows nothing of it, and once the daemons create the
// cluster's own R3 KV_UNIBUS_users the seed node takes the restored stream
// as its replica: the seed shadows acknowledged writes whenever that node
// leads. So membershipd refuses such a store at start-up: it names the
// stream and the path to move aside, and exits 2. With the stream moved
// aside the node starts, and the seed is neither served nor replicated.
var _ = Describe("Seed the first admin", func() {
	Context("the old loopback bootstrap", Ordered, func() {
		It("is refused: a node whose store holds a standalone-written control-plane stream exits 2 naming it and the fix",
			Claim("claim:bootstrap-orphan"), func(ctx SpecContext) {
				env := NewEnv("orphan", chaos.ClusterSpec{})
				nodes := env.Cluster.Nodes()
				seedNode := nodes[0]
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
				Expect(filesWith(dirs[seedNode.Name()], marker)).NotTo(BeEmpty(), "the standalone server wrote the seed into %s", dirs[seedNode.Name()])
				Evidence("seed-node-store-before-start", storeFiles(dirs[seedNode.Name()], marker))
				orphan := filepath.Join(dirs[seedNode.Name()], "jetstream", "$G", "streams", kv.StreamName(kv.UsersBucket))
				Expect(orphan).To(BeADirectory(), "where nats-server 2.15.2 keeps a standalone account stream")

				By("starting the real binary on that store: exit 2, naming the stream and the path to move aside")
				r, err := inproc.RunBinary(ctx, suite.binary, serveArgs(env, seedNode, dirs[seedNode.Name()])...)
				Expect(err).NotTo(HaveOccurred())
				GinkgoWriter.Printf("membershipd serve on the seeded store -> exit %d\n%s", r.ExitCode, r.Stderr)
				Evidence("serve-on-seeded-store", map[string]any{"exit": r.ExitCode, "stderr": r.Stderr})
				Expect(r.ExitCode).To(Equal(2), r.Stderr)
				Expect(r.Stderr).To(ContainSubstring(kv.StreamName(kv.UsersBucket)))
				Expect(r.Stderr).To(ContainSubstring("'" + orphan + "'"))
				Expect(r.Stderr).To(ContainSubstring("mv "))
				Expect(r.Stderr).To(ContainSubstring("user add --store kv"))
				Expect(strings.Count(strings.TrimSpace(r.Stderr), "\n")).To(BeZero(), "one line")

				By("starting the cluster through the target: the seed node refuses, the store is left as it was")
				err = chaos.StartNodes(ctx, nodes...)
				Expect(err).To(HaveOccurred())
				Expect(err.Error()).To(ContainSubstring(kv.StreamName(kv.UsersBucket)))
				Expect(seedNode.Running()).To(BeFalse())
				Expect(filesWith(dirs[seedNode.Name()], marker)).NotTo(BeEmpty(), "the refusal deletes nothing")
				Expect(chaos.StopNodes(ctx, nodes...)).To(Succeed())

				By("applying the fix the message names: move the stream aside, start, seed through the live cluster")
				Expect(os.Rename(orphan, filepath.Join(env.Dir, "orphan-"+kv.StreamName(kv.UsersBucket)))).To(Succeed())
				env.StartAll(ctx)
				root := env.AddUser(ctx, nodes[1], "root", identity.RoleAdmin)
				conns := map[string]*nats.Conn{}
				for _, n := range nodes {
					nc, err := chaos.DialInternal(env.Cluster, n)
					Expect(err).NotTo(HaveOccurred())
					DeferCleanup(nc.Close)
					conns[n.Name()] = nc
				}
				Evidence("after-fix", map[string]any{"users_leader": usersLeader(ctx, env), "users_leader_via_seed_node": usersLeaderVia(ctx, conns[seedNode.Name()])})
				for _, n := range nodes {
					v, err := usersView(ctx, conns[n.Name()], seed.SignPub(), root.SignPub())
					Expect(err).NotTo(HaveOccurred(), "read through %s", n.Name())
					Expect(v[seed.SignPub()]).To(BeEmpty(), "the loopback seed read through %s", n.Name())
					Expect(v[root.SignPub()]).To(ContainSubstring(`"`+SpecHandle("root")+`"`), "the live admin read through %s", n.Name())
					_, err = chaos.DialAs(env.Cluster, n, seed)
					Expect(err).To(HaveOccurred(), "the loopback seed connects to %s", n.Name())
					Expect(filesWith(dirs[n.Name()], marker)).To(BeEmpty(), "the seed is in %s's store", n.Name())
				}
			})
	})
})

// serveArgs is `membershipd serve` for node n as the target configures it
// (ports, certificates, routes to the others), on storeDir.
func serveArgs(env *Env, n chaos.Node, storeDir string) []string {
	GinkgoHelper()
	port := func(raw string) string {
		u, err := url.Parse(raw)
		Expect(err).NotTo(HaveOccurred())
		return u.Port()
	}
	_, routePort, err := net.SplitHostPort(n.RouteAddr())
	Expect(err).NotTo(HaveOccurred())
	var routes []string
	for _, o := range Others(env.Cluster, n) {
		routes = append(routes, "nats-route://"+o.RouteAddr())
	}
	t := env.Cluster.TLS()
	return []string{"serve", "--node-name", n.Name(), "--cluster-name", "unibus-test", "--bind", "127.0.0.1",
		"--client-port", port(n.ClientURL()), "--route-port", routePort, "--http-port", port(n.HealthzURL()),
		"--routes", strings.Join(routes, ","), "--nats-store", storeDir,
		"--tls-cert", t.ServerCert[n.Name()], "--tls-key", t.ServerKey[n.Name()], "--ca", t.ClientCA,
		"--route-cert", t.RouteCert[n.Name()], "--route-key", t.RouteKey[n.Name()], "--route-ca", t.RouteCA,
		"--route-secret-file", t.RouteSecretFile, "--internal-id-file", t.InternalID[n.Name()]}
}

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
