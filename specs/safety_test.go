package specs

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/sshtarget"
	"github.com/unibus/clusterkit/chaos/target"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/runbook/deploy"
)

// The live-run safety contract (RUNBOOK "Live-run safety contract"): on
// the ssh target the suite snapshots every host before the first spec and
// checks (read-only run) or restores (a run that may change hosts) at the
// end, even when a spec fails or the run is interrupted: the restore is a
// DeferCleanup registered in BeforeSuite, which Ginkgo runs on Ctrl-C too.
var guard struct {
	hosts  *sshtarget.Cluster
	before *sshtarget.Snapshot
	// writes: --allow-disruptive or --allow-wipe; the hosts keep copies of
	// the operator's files and the end restores them.
	writes bool
	// users and streams before the run, as the first node's CLI and each
	// node's store list them.
	users   []store.User
	streams map[string][]string
	// specRooms are the room streams specs created (rooms are never
	// deleted: there is no API for it).
	specRooms map[string]bool
}

// noteSpecRoom records a room a spec created.
func noteSpecRoom(id string) {
	if guard.specRooms == nil {
		guard.specRooms = map[string]bool{}
	}
	guard.specRooms[id] = true
}

// guardHosts takes the suite's snapshot and registers the restore.
func guardHosts() {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := target.New(targetOptions(), chaos.ClusterSpec{})
	Expect(err).NotTo(HaveOccurred())
	hosts := c.(*sshtarget.Cluster)
	guard.hosts = hosts
	guard.writes = *flagDisrupt || *flagWipe
	env := &Env{Cluster: hosts}
	env.Health, err = chaos.NewHealthClient(hosts.TLS().ClientCA)
	Expect(err).NotTo(HaveOccurred())
	if guard.writes {
		// Never disrupt a cluster that is already degraded.
		_, err := env.Health.WaitHealthy(ctx, hosts.Nodes()...)
		Expect(err).NotTo(HaveOccurred(), "every node must be healthy before a run that may disrupt it")
	}
	snap, err := hosts.Snapshot(ctx, guard.writes)
	Expect(err).NotTo(HaveOccurred(), "snapshot the hosts")
	guard.before = snap
	Evidence("hosts-before", snap)
	if guard.writes {
		DeferCleanup(func(ctx SpecContext) {
			defer func() { _ = hosts.Close() }()
			res, err := hosts.Restore(ctx, guard.before, restartBudget)
			GinkgoWriter.Printf("restore at suite end: %s (restored %v; restarted %v)\n", res.Took.Round(time.Millisecond), res.Restored, res.Restarted)
			AddReportEntry("restore at suite end", fmt.Sprintf("%s, restarted %v", res.Took.Round(time.Millisecond), res.Restarted))
			Expect(err).NotTo(HaveOccurred(), "restore the operator's files on every host")
			Expect(hosts.Release(ctx)).To(Succeed())
		}, NodeTimeout(time.Duration(len(hosts.Nodes())+1)*(restartBudget+30*time.Second)))
		for name, st := range snap.Nodes {
			bin := st.File(deploy.BinaryPath)
			Expect(st.RunningSHA256).To(Equal(bin.SHA256), "%s runs a binary other than %s (deployed but not restarted?): a disruptive run restarts nodes, which would switch it; finish that rollout first", name, deploy.BinaryPath)
		}
	} else {
		// A read-only run: nothing to restore, but a change is a failure.
		DeferCleanup(func(ctx SpecContext) {
			defer func() { _ = hosts.Close() }()
			now, err := hosts.Observe(ctx)
			Expect(err).NotTo(HaveOccurred())
			Expect(guard.before.Diff(now)).To(BeEmpty(), "a read-only run changed a host")
		}, NodeTimeout(time.Minute))
	}
	guard.users = listAllUsers(ctx, env, hosts.Nodes()[0])
	guard.streams = map[string][]string{}
	for _, n := range hosts.Nodes() {
		dirs, err := hosts.StreamDirs(n)
		Expect(err).NotTo(HaveOccurred())
		guard.streams[n.Name()] = dirs
	}
}

// listAllUsers lists every user, revoked spec users included (`--all`
// where the CLI hides them by default).
func listAllUsers(ctx context.Context, env *Env, n chaos.Node) []store.User {
	GinkgoHelper()
	var out []store.User
	Eventually(func(g Gomega) {
		r, err := env.Cluster.CLI(ctx, n, "user", "list", "--store", "kv", "--json", "--all")
		g.Expect(err).NotTo(HaveOccurred())
		if r.ExitCode == 2 && strings.Contains(r.Stderr, "all") { // a CLI without --all shows everything
			r, err = env.Cluster.CLI(ctx, n, "user", "list", "--store", "kv", "--json")
			g.Expect(err).NotTo(HaveOccurred())
		}
		g.Expect(r.ExitCode).To(Equal(0), r.Stderr)
		g.Expect(json.Unmarshal([]byte(r.Stdout), &out)).To(Succeed())
	}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(Succeed())
	return out
}

// restoreHosts puts the operator's files back and restarts the nodes that
// changed (one at a time, waiting for health); it returns what it did.
func restoreHosts(ctx context.Context) sshtarget.RestoreResult {
	GinkgoHelper()
	Expect(guard.before).NotTo(BeNil(), "no snapshot of the hosts was taken")
	res, err := guard.hosts.Restore(ctx, guard.before, restartBudget)
	GinkgoWriter.Printf("restore: %s (restored %v; restarted %v)\n", res.Took.Round(time.Millisecond), res.Restored, res.Restarted)
	Expect(err).NotTo(HaveOccurred())
	return res
}

// expectOperatorsVersion: every node healthy on the operator's binary,
// on disk and running, with the /healthz version it had before the run,
// and the rollout backup as it was before the run.
func expectOperatorsVersion(ctx context.Context, env *Env) {
	GinkgoHelper()
	env.WaitHealthy(ctx, restartBudget, env.Cluster.Nodes()...)
	now, err := guard.hosts.Observe(ctx)
	Expect(err).NotTo(HaveOccurred())
	Evidence("hosts-after", now)
	for name, was := range guard.before.Nodes {
		st := now.Nodes[name]
		Expect(st.Version).To(Equal(was.Version), "%s /healthz version", name)
		Expect(st.RunningSHA256).To(Equal(was.RunningSHA256), "%s runs the operator's binary", name)
		Expect(st.File(deploy.BinaryPath)).To(Equal(was.File(deploy.BinaryPath)), "%s binary on disk", name)
		Expect(st.File(deploy.BinaryPath+".bak")).To(Equal(was.File(deploy.BinaryPath+".bak")), "%s rollout backup", name)
	}
	Expect(guard.before.Diff(now)).To(BeEmpty())
}

// expectSpecUsersRevoked: every spec- user added during the run is revoked.
func expectSpecUsersRevoked(users []store.User) {
	GinkgoHelper()
	before := map[string]bool{}
	for _, u := range guard.users {
		before[u.SignPub] = true
	}
	for _, u := range users {
		if !before[u.SignPub] && strings.HasPrefix(u.Handle, SpecHandle("")) {
			Expect(u.Status).To(Equal(store.StatusRevoked), "spec user %s (%s) left active", u.Handle, u.SignPub)
		}
	}
}

// The claims are checked by the last specs of the run (SpecPriority -1:
// after every other container, whatever the random order), so they see
// what every other spec left behind. The suite-level cleanup then
// restores (or checks) once more, which covers failed and interrupted runs.
var _ = Describe("Live-run safety contract", SpecPriority(-1), func() {
	var env *Env

	BeforeEach(func() {
		if *flagTarget != "ssh" {
			Skip("about a deployed cluster: run with --target=ssh (make specs-live, make test-vps)")
		}
		env = &Env{Cluster: guard.hosts}
		var err error
		env.Health, err = chaos.NewHealthClient(guard.hosts.TLS().ClientCA)
		Expect(err).NotTo(HaveOccurred())
	})

	It("a read-only run changes nothing on any host: files, unit, running process, streams and the operator's users",
		Claim("claim:live-readonly"), func(ctx SpecContext) {
			if guard.writes {
				Skip("this run may change hosts (--allow-disruptive or --allow-wipe): live-restore checks it instead")
			}
			now, err := guard.hosts.Observe(ctx)
			Expect(err).NotTo(HaveOccurred())
			Evidence("hosts-after", now)
			By("every deployed file byte-identical (sha256, mode, owner), the same executable running, same version")
			Expect(guard.before.Diff(now)).To(BeEmpty())
			for name, was := range guard.before.Nodes {
				Expect(now.Nodes[name].MainPID).To(Equal(was.MainPID), "%s was restarted", name)
			}

			By("the store: the same streams (plus only the spec's own rooms, which cannot be deleted)")
			// The store directory itself changes every 250 ms (the quorum
			// heartbeats), so the streams it holds are compared, not bytes.
			for _, n := range env.Cluster.Nodes() {
				dirs, err := guard.hosts.StreamDirs(n)
				Expect(err).NotTo(HaveOccurred())
				Expect(dirs).To(ContainElements(guard.streams[n.Name()]), "%s lost a stream", n.Name())
				for _, d := range dirs {
					if slices.Contains(guard.streams[n.Name()], d) {
						continue
					}
					id, ok := strings.CutPrefix(d, "ROOM_")
					Expect(ok && guard.specRooms[id]).To(BeTrue(), "%s: new stream %s is not a room a spec made", n.Name(), d)
				}
			}

			By("the operator's users unchanged; spec users revoked")
			users := listAllUsers(ctx, env, env.Cluster.Nodes()[0])
			byKey := map[string]store.User{}
			for _, u := range users {
				byKey[u.SignPub] = u
			}
			for _, u := range guard.users {
				Expect(byKey).To(HaveKeyWithValue(u.SignPub, u), "user %s changed", u.Handle)
			}
			expectSpecUsersRevoked(users)
		})

	It("a run that changed hosts leaves every node healthy on the operator's binary, config and version; spec users revoked",
		Claim("claim:live-restore"), func(ctx SpecContext) {
			if !guard.writes {
				Skip("a read-only run (no --allow-disruptive): live-readonly shows it changed nothing")
			}
			res := restoreHosts(ctx)
			AddReportEntry("restore after disruption (files put back, nodes restarted one at a time)",
				fmt.Sprintf("%s, %d files, restarted %v", res.Took.Round(time.Millisecond), len(res.Restored), res.Restarted))
			expectOperatorsVersion(ctx, env)
			users := listAllUsers(ctx, env, env.Cluster.Nodes()[0])
			expectSpecUsersRevoked(users)
			if !*flagWipe {
				// Without a wipe the operator's users are all still there.
				byKey := map[string]store.User{}
				for _, u := range users {
					byKey[u.SignPub] = u
				}
				for _, u := range guard.users {
					Expect(byKey).To(HaveKeyWithValue(u.SignPub, u), "user %s changed", u.Handle)
				}
			}
		})
})
