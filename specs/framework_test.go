package specs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/check"
	"github.com/unibus/clusterkit/chaos/claims"
	"github.com/unibus/clusterkit/chaos/report"
	"github.com/unibus/clusterkit/chaos/sshtarget"
	"github.com/unibus/clusterkit/chaos/target"
	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/runbook/sshx"
)

// Claim labels a spec with a registered claim ("claim:<id>", spelled out
// so a grep finds every claim's spec); a typo fails the tree build instead
// of silently matching nothing.
func Claim(label string) Labels {
	id, ok := strings.CutPrefix(label, claims.LabelPrefix)
	if !ok {
		panic(fmt.Sprintf("claim label %q must start with %q", label, claims.LabelPrefix))
	}
	l, err := claims.Label(id)
	if err != nil {
		panic(err)
	}
	return Label(l)
}

// Registered non-claim labels.
var (
	Disruptive = Label("disruptive") // stops nodes or cuts routes
	Slow       = Label("slow")       // observes for tens of seconds
	// WritesHosts: writes files on the deployed hosts (deploy --yes, a
	// rollout, cluster.env). Like disruptive, it needs --allow-disruptive
	// on the ssh target: a read-only live run writes nothing.
	WritesHosts = Label("writes-hosts")
)

// Deadlines from the claims, with margins for a loaded 2-core machine.
const (
	quorumDeadline = 60 * time.Second // cold start; measured 0.2–3 s
	denyDeadline   = 2 * time.Second  // a minority must deny within 2 s
	restartBudget  = 90 * time.Second // restart on existing data; measured 4.5–8 s
)

// resetter is a target whose cluster outlives the spec (ssh): it can be
// reset to no data when a spec is about start-up.
type resetter interface {
	Reset(ctx context.Context) error
}

// Env is what a spec gets: a cluster (not started) and a health client.
type Env struct {
	Cluster chaos.Cluster
	Health  *chaos.HealthClient
	Dir     string

	// tried are identities whose `user add` ran from a prober goroutine
	// (where DeferCleanup cannot be called): any of them that ended up
	// active is revoked when the container ends, refused or ambiguous adds
	// included, so a live run leaves no spec user behind.
	triedMu sync.Mutex
	tried   []*identity.Identity
}

// Tried records an identity a prober tried to add (see Env.tried).
func (e *Env) Tried(id *identity.Identity) {
	e.triedMu.Lock()
	defer e.triedMu.Unlock()
	e.tried = append(e.tried, id)
}

// revokeTried revokes every tried identity that is active on the cluster.
func (e *Env) revokeTried(ctx context.Context) {
	e.triedMu.Lock()
	tried := append([]*identity.Identity(nil), e.tried...)
	e.triedMu.Unlock()
	if len(tried) == 0 {
		return
	}
	for _, n := range e.Cluster.Nodes() {
		r, err := e.Cluster.CLI(ctx, n, "user", "list", "--store", "kv", "--json", "--all")
		if err != nil || r.ExitCode != 0 {
			continue
		}
		var users []store.User
		if json.Unmarshal([]byte(r.Stdout), &users) != nil {
			continue
		}
		for _, id := range tried {
			if u, ok := FindUser(users, id.SignPub()); ok && u.Status == store.StatusActive {
				_, _ = e.Cluster.CLI(ctx, n, "user", "revoke", "--store", "kv", id.SignPub())
			}
		}
		return
	}
}

// NewEnv makes a fresh cluster of the suite's target, registered for
// cleanup (LIFO, so evidence is written before the cluster goes away). The
// cluster's data dir is kept when a spec failed.
func NewEnv(name string, spec chaos.ClusterSpec) *Env {
	GinkgoHelper()
	if (spec.Fresh || spec.KVReplicas != 0) && !slices.Contains(CurrentSpecReport().Labels(), "wipe") {
		Fail("a spec on a fresh cluster must carry the Wipe label: on the ssh target it runs only where wiping is allowed (make test-vps selects it by that label)")
	}
	base := filepath.Join(suite.reportDir, "clusters")
	Expect(os.MkdirAll(base, 0o755)).To(Succeed())
	dir, err := os.MkdirTemp(base, name+"-")
	Expect(err).NotTo(HaveOccurred())
	spec.Dir = dir
	if *flagTarget == "ssh" && spec.Size != 0 {
		Skip(fmt.Sprintf("needs a cluster of %d nodes, not the deployed one", spec.Size))
	}
	if *flagTarget == "ssh" && spec.KVReplicas != 0 {
		spec.Fresh = true // buckets are created at the replica count only once
	}
	failuresBefore := suite.failures
	c, err := target.New(targetOptions(), spec)
	Expect(err).NotTo(HaveOccurred())
	if r, ok := c.(resetter); ok {
		// A deployed cluster: leave it running and healthy after the spec.
		DeferCleanup(func(ctx SpecContext) {
			env := &Env{Cluster: c}
			hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
			Expect(err).NotTo(HaveOccurred())
			env.Health = hc
			env.RestartStopped(ctx)
		}, NodeTimeout(restartBudget+30*time.Second))
		if spec.Fresh {
			if !*flagWipe {
				Skip("needs a fresh cluster: on the ssh target only with --allow-wipe (it deletes every node's data)")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			Expect(r.Reset(ctx)).To(Succeed())
			if spec.KVReplicas != 0 {
				st := c.(*sshtarget.Cluster)
				Expect(st.SetEnv(ctx, "KV_REPLICAS", fmt.Sprint(spec.KVReplicas))).To(Succeed())
				DeferCleanup(func(ctx SpecContext) {
					// Back to the deployed config, and running it: the nodes
					// read cluster.env only when they start.
					Expect(st.SetEnv(ctx, "KV_REPLICAS", fmt.Sprint(st.Topology().KVReplicas))).To(Succeed())
					Expect(chaos.StopNodes(ctx, st.Nodes()...)).To(Succeed())
					Expect(chaos.StartNodes(ctx, st.Nodes()...)).To(Succeed())
					hc, err := chaos.NewHealthClient(st.TLS().ClientCA)
					Expect(err).NotTo(HaveOccurred())
					wctx, cancel := context.WithTimeout(ctx, restartBudget)
					defer cancel()
					_, err = hc.WaitHealthy(wctx, st.Nodes()...)
					Expect(err).NotTo(HaveOccurred())
				}, NodeTimeout(restartBudget+time.Minute))
			}
		}
	}
	DeferCleanup(func() {
		// This cleanup runs before ReportAfterEach counts the current
		// spec, so its own report says whether it failed; earlier specs of
		// an Ordered container were counted already.
		failed := CurrentSpecReport().Failed() || suite.failures > failuresBefore
		if !failed && !*flagKeep {
			_ = os.RemoveAll(dir)
		} else {
			GinkgoWriter.Printf("cluster data kept in %s\n", dir)
		}
	})
	DeferCleanup(c.Close)
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	Expect(err).NotTo(HaveOccurred())
	env := &Env{Cluster: c, Health: hc, Dir: dir}
	DeferCleanup(env.revokeTried, NodeTimeout(2*time.Minute))
	return env
}

// targetOptions are the suite's target settings.
func targetOptions() target.Options {
	return target.Options{Name: *flagTarget, Binary: suite.binary, Log: suite.log, Size: *flagSize,
		NodesFile: *flagNodes, CertsDir: *flagCerts, AllowWipe: *flagWipe, SimDir: *flagSimDir,
		SSH: sshx.Options{ConfigFile: *flagSSHConfig, Agent: true}}
}

// StartAll starts every node together and waits for quorum; it returns
// how long that took.
func (e *Env) StartAll(ctx context.Context) time.Duration {
	GinkgoHelper()
	start := time.Now()
	Expect(chaos.StartNodes(ctx, e.Cluster.Nodes()...)).To(Succeed())
	wctx, cancel := context.WithTimeout(ctx, quorumDeadline)
	defer cancel()
	_, err := e.Health.WaitHealthy(wctx, e.Cluster.Nodes()...)
	Expect(err).NotTo(HaveOccurred())
	return time.Since(start)
}

// WaitHealthy waits for nodes to be healthy within d.
func (e *Env) WaitHealthy(ctx context.Context, d time.Duration, nodes ...chaos.Node) {
	GinkgoHelper()
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err := e.Health.WaitHealthy(wctx, nodes...)
	Expect(err).NotTo(HaveOccurred())
}

// CLI runs membershipd on node n and records its output as evidence.
func (e *Env) CLI(ctx context.Context, n chaos.Node, args ...string) chaos.CLIResult {
	GinkgoHelper()
	r, err := e.Cluster.CLI(ctx, n, args...)
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("$ membershipd %v (on %s) -> exit %d\n%s%s", args, n.Name(), r.ExitCode, r.Stdout, r.Stderr)
	return r
}

// Evidence saves v for the current spec.
func Evidence(name string, v any) {
	p, err := report.Evidence(suite.reportDir, CurrentSpecReport().FullText(), name, v)
	if err != nil {
		GinkgoWriter.Printf("evidence %s: %v\n", name, err)
		return
	}
	GinkgoWriter.Printf("evidence: %s\n", p)
}

// Pass is a Gomega matcher for check results that prints the reasons.
func ExpectPass(r check.Result) {
	GinkgoHelper()
	GinkgoWriter.Println(r.String())
	Expect(r.OK).To(BeTrue(), r.String())
}

// Others returns the nodes other than n.
func Others(c chaos.Cluster, n chaos.Node) []chaos.Node {
	var out []chaos.Node
	for _, x := range c.Nodes() {
		if x.Name() != n.Name() {
			out = append(out, x)
		}
	}
	return out
}

// AddUser registers a fresh identity through the CLI on node n, as the
// runbook's live user add does, and returns it.
// Handles are namespaced ("spec-...") so they cannot collide with real
// users of a deployed cluster, and the user is revoked after the spec.
func (e *Env) AddUser(ctx context.Context, n chaos.Node, handle string, role identity.Role) *identity.Identity {
	GinkgoHelper()
	id := e.AddUserNoWait(ctx, n, handle, role)
	e.WaitAdmitted(ctx, id)
	return id
}

// AddUserNoWait is AddUser without waiting for every node to admit the
// user (the bootstrap-orphan spec shows nodes that never will).
func (e *Env) AddUserNoWait(ctx context.Context, n chaos.Node, handle string, role identity.Role) *identity.Identity {
	GinkgoHelper()
	id, err := identity.Generate()
	Expect(err).NotTo(HaveOccurred())
	r := e.CLI(ctx, n, "user", "add", "--store", "kv", "--handle", SpecHandle(handle), "--role", string(role), "--sign-pub", id.SignPub())
	Expect(r.ExitCode).To(Equal(0), r.Stderr)
	e.revokeAfter(id)
	return id
}

// WaitAdmitted waits until every node admits id: each node learns of a new
// user through its own watch of the users bucket, milliseconds after the
// commit.
func (e *Env) WaitAdmitted(ctx context.Context, id *identity.Identity) {
	GinkgoHelper()
	for _, n := range e.Cluster.Nodes() {
		Eventually(func() error {
			nc, err := chaos.DialAs(e.Cluster, n, id)
			if err == nil {
				nc.Close()
			}
			return err
		}).WithContext(ctx).WithTimeout(10*time.Second).WithPolling(50*time.Millisecond).Should(Succeed(), "%s admits the new user", n.Name())
	}
}

// SpecHandle namespaces a handle.
func SpecHandle(h string) string { return "spec-" + h }

// revokeAfter revokes id when the spec ends (best effort: the cluster may
// be down on purpose).
func (e *Env) revokeAfter(id *identity.Identity) {
	DeferCleanup(func(ctx SpecContext) {
		for _, n := range e.Cluster.Nodes() {
			if r, err := e.Cluster.CLI(ctx, n, "user", "revoke", "--store", "kv", id.SignPub()); err == nil && r.ExitCode == 0 {
				return
			}
		}
	}, NodeTimeout(time.Minute))
}

// Report runs `cluster report --json` on node n and returns it (the CLI's
// own view: servers, routes, buckets with leaders and follower counts).
func (e *Env) Report(ctx context.Context, n chaos.Node) clusterinfo.Report {
	GinkgoHelper()
	rep, err := chaos.ClusterReport(ctx, e.Cluster, n)
	Expect(err).NotTo(HaveOccurred())
	return rep
}

// ListUsers runs `user list --store kv --json --all` on node n (--all: the
// specs look at their own revoked spec- users). Right after a
// recovery every stream leader may be stepping down (no request succeeds
// for 4-8 s), so a failed list is retried for a while.
func (e *Env) ListUsers(ctx context.Context, n chaos.Node) []store.User {
	GinkgoHelper()
	var r chaos.CLIResult
	Eventually(func() int {
		r = e.CLI(ctx, n, "user", "list", "--store", "kv", "--json", "--all")
		return r.ExitCode
	}).WithContext(ctx).WithTimeout(30*time.Second).WithPolling(time.Second).Should(Equal(0), "user list on %s", n.Name())
	var users []store.User
	Expect(json.Unmarshal([]byte(r.Stdout), &users)).To(Succeed())
	return users
}

// FindUser returns the listed user with key pub.
func FindUser(users []store.User, pub string) (store.User, bool) {
	for _, u := range users {
		if u.SignPub == pub {
			return u, true
		}
	}
	return store.User{}, false
}

// RestartStopped starts every node that is not running and waits until the
// whole cluster is healthy again: the cleanup of every disruptive spec, so
// the next spec finds the cluster as this one found it.
func (e *Env) RestartStopped(ctx SpecContext) {
	GinkgoHelper()
	var stopped []chaos.Node
	for _, n := range e.Cluster.Nodes() {
		if !n.Running() {
			stopped = append(stopped, n)
		}
	}
	Expect(chaos.StartNodes(ctx, stopped...)).To(Succeed())
	e.WaitHealthy(ctx, restartBudget, e.Cluster.Nodes()...)
}

// WaitAnswering waits until n's /healthz answers at all (any status).
func (e *Env) WaitAnswering(ctx context.Context, n chaos.Node) {
	GinkgoHelper()
	Eventually(func() error { return e.Health.Get(ctx, n.HealthzURL()).Err }).
		WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}
