package specs

import (
	"context"
	"fmt"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// usersLeader is the current leader of the users bucket's stream, as the
// cluster report on the first node tells it ("" if unknown).
func usersLeader(ctx context.Context, env *Env) string {
	rep, err := chaos.ClusterReport(ctx, env.Cluster, env.Cluster.Nodes()[0])
	if err != nil {
		return ""
	}
	for _, b := range rep.Buckets {
		if b.Bucket == kv.UsersBucket {
			return b.Leader
		}
	}
	return ""
}

// usersLeaderVia asks through an existing (internal) connection.
func usersLeaderVia(ctx context.Context, nc *nats.Conn) string {
	js, err := jetstream.New(nc)
	if err != nil {
		return ""
	}
	st, err := kv.Inspect(ctx, js, kv.UsersBucket)
	if err != nil {
		return ""
	}
	return st.Leader
}

// bucketFollowers is "current/followers" per bucket as node n's cluster
// report tells it (nil when there is no report). With a node down the
// report exits 1 (it lists the missing node as a problem) but still
// reports the buckets.
func bucketFollowers(ctx context.Context, env *Env, n chaos.Node) map[string]string {
	rep, err := chaos.ClusterReport(ctx, env.Cluster, n)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, b := range rep.Buckets {
		out[b.Bucket] = fmt.Sprintf("%d/%d", b.FollowersCurrent, b.Followers)
	}
	return out
}

// stopUsersFollower stops a node that holds a replica of the users bucket
// but does not lead it, and restarts it after the spec. At N=3 every node
// holds one; at N=5 the R3 bucket lives on three of the five.
func stopUsersFollower(ctx context.Context, env *Env) chaos.Node {
	GinkgoHelper()
	leader := ""
	Eventually(func() string {
		leader = usersLeader(ctx, env)
		return leader
	}).WithContext(ctx).WithTimeout(10 * time.Second).ShouldNot(BeEmpty())
	replicas, known := bucketReplicas(ctx, env, kv.UsersBucket)
	var follower chaos.Node
	for _, n := range env.Cluster.Nodes() {
		if n.Name() != leader && (!known || slices.Contains(replicas, n.Name())) {
			follower = n
			break
		}
	}
	Expect(follower).NotTo(BeNil(), "no follower of the users bucket (leader %s, replicas %v)", leader, replicas)
	Expect(follower.Stop(ctx)).To(Succeed())
	DeferCleanup(env.RestartStopped, NodeTimeout(restartBudget+30*time.Second))
	return follower
}

// bucketReplicas names the nodes that hold a replica of bucket (leader and
// followers), asked through the first running node with its internal
// identity. known is false where the target does not expose that identity
// or nobody answers; at N=3 every node holds every R3 bucket anyway.
func bucketReplicas(ctx context.Context, env *Env, bucket string) (replicas []string, known bool) {
	var via chaos.Node
	for _, n := range env.Cluster.Nodes() {
		if n.Running() {
			via = n
			break
		}
	}
	if via == nil {
		return nil, false
	}
	nc, err := chaos.DialInternal(env.Cluster, via)
	if err != nil {
		return nil, false
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, false
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := js.Stream(ictx, kv.StreamName(bucket))
	if err != nil || st.CachedInfo().Cluster == nil || st.CachedInfo().Cluster.Leader == "" {
		return nil, false
	}
	ci := st.CachedInfo().Cluster
	replicas = append(replicas, ci.Leader)
	for _, p := range ci.Replicas {
		replicas = append(replicas, p.Name)
	}
	return replicas, true
}

// waitFollowers waits until node n reports want ("1/2") for every listed
// bucket, then checks that it keeps saying so. NATS itself keeps a stopped
// follower "current" for up to its lost-quorum interval (10 s) after the
// last contact, so the first reports after a graceful stop may lag; a dead
// follower must never be reported current after that.
func waitFollowers(ctx context.Context, env *Env, n chaos.Node, want string, buckets ...string) {
	GinkgoHelper()
	match := func(g Gomega) {
		got := bucketFollowers(ctx, env, n)
		for _, b := range buckets {
			g.Expect(got).To(HaveKeyWithValue(b, want), "%s on %s", b, n.Name())
		}
	}
	start := time.Now()
	Eventually(match).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
	AddReportEntry("follower stopped to followers_current="+want+" reported", time.Since(start).Round(100*time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
	Consistently(match).WithContext(ctx).WithTimeout(5 * time.Second).WithPolling(time.Second).Should(Succeed())
}

// waitUsersFollowers is waitFollowers for the users bucket.
func waitUsersFollowers(ctx context.Context, env *Env, n chaos.Node, want string) {
	GinkgoHelper()
	waitFollowers(ctx, env, n, want, kv.UsersBucket)
}

// bucketLeader is bucket's leader and "current/followers" as node n's
// cluster report tells it.
func bucketLeader(ctx context.Context, env *Env, n chaos.Node, bucket string) (string, string) {
	rep, err := chaos.ClusterReport(ctx, env.Cluster, n)
	if err != nil {
		return "", ""
	}
	for _, b := range rep.Buckets {
		if b.Bucket == bucket {
			return b.Leader, fmt.Sprintf("%d/%d", b.FollowersCurrent, b.Followers)
		}
	}
	return "", ""
}

// waitSettled waits until every node's cluster report is clean (exit 0:
// every server routed and in quorum) and shows every bucket with 2/2
// followers current: the cluster as a spec found it.
func waitSettled(ctx context.Context, env *Env) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		for _, n := range env.Cluster.Nodes() {
			rep, err := chaos.ClusterReport(ctx, env.Cluster, n)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(rep.Servers).To(HaveLen(len(env.Cluster.Nodes())))
			for _, sv := range rep.Servers {
				g.Expect(sv.InQuorum).To(BeTrue(), "%s: %s", sv.Node, sv.Reason)
			}
			// A follower the meta layer still counts offline is not current.
			for _, b := range rep.Buckets {
				g.Expect(fmt.Sprintf("%d/%d", b.FollowersCurrent, b.Followers)).To(Equal("2/2"), "%s on %s", b.Bucket, n.Name())
			}
		}
	}).WithContext(ctx).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(Succeed())
}
