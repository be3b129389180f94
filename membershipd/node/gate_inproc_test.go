package node_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/chaos/netproxy"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// These tests run real three-node clusters in-process, with every route
// through the target's proxies, and look only at what a client and
// /healthz see.

func testLog() *slog.Logger {
	lvl := slog.Level(100) // nats logs route resets as errors: silence
	if os.Getenv("INPROC_DEBUG") != "" {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

type testCluster struct {
	*inproc.Cluster
	hc *chaos.HealthClient
}

func startCluster(t *testing.T, ctx context.Context, kvReplicas int) (*testCluster, time.Duration) {
	t.Helper()
	c, err := inproc.New(inproc.Options{Dir: t.TempDir(), KVReplicas: kvReplicas, Log: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.StartAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
		t.Fatal(err)
	}
	return &testCluster{c, hc}, time.Since(start)
}

func (c *testCluster) js(t *testing.T, n chaos.Node) jetstream.JetStream {
	t.Helper()
	nc, err := chaos.DialInternal(c, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func (c *testCluster) index(n chaos.Node) int {
	return slices.IndexFunc(c.Nodes(), func(x chaos.Node) bool { return x.Name() == n.Name() })
}

// leaderOf names the leader of a bucket's stream.
func (c *testCluster) leaderOf(t *testing.T, ctx context.Context, js jetstream.JetStream, bucket string) chaos.Node {
	t.Helper()
	for {
		st, err := kv.Inspect(ctx, js, bucket)
		if err == nil && st.Leader != "" {
			return c.Node(st.Leader)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no leader for %s: %v", bucket, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type attempt struct {
	at time.Time
	ok bool
	// detail is the error or "connected".
	detail string
}

// hammer connects to n as id every 50 ms until ctx ends.
func hammer(ctx context.Context, c chaos.Cluster, n chaos.Node, id *identity.Identity) func() []attempt {
	var (
		mu  sync.Mutex
		out []attempt
		wg  sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			a := attempt{at: time.Now()}
			nc, err := chaos.DialAs(c, n, id, nats.Timeout(time.Second))
			if err == nil {
				a.ok, a.detail = true, "connected"
				nc.Close()
			} else {
				a.detail = err.Error()
			}
			mu.Lock()
			out = append(out, a)
			mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() []attempt {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return out
	}
}

// TestRevokeUnderPartition is the stale-allowlist case: node A loses only
// its routes to the users stream's leader and still reaches the third node
// B; a user is revoked through B. A must refuse that user (or fail closed)
// within 2 s of the revocation, and converge after the heal.
func TestRevokeUnderPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, took := startCluster(t, ctx, 3)
	t.Logf("start to quorum (3 nodes together): %v", took.Round(time.Millisecond))

	js0 := c.js(t, c.Nodes()[0])
	leader := c.leaderOf(t, ctx, js0, kv.UsersBucket)
	var a, b chaos.Node
	for _, n := range c.Nodes() {
		switch {
		case n.Name() == leader.Name():
		case a == nil:
			a = n
		default:
			b = n
		}
	}
	t.Logf("users leader %s; cut node A=%s; third node B=%s", leader.Name(), a.Name(), b.Name())
	usersB := kv.NewUsers(c.js(t, b))

	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := usersB.AddUser(ctx, store.User{SignPub: id.SignPub(), Handle: "victim", Role: identity.RoleMember}); err != nil {
		t.Fatal(err)
	}
	// A admits the user before the cut.
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := chaos.DialAs(c, a, id)
		if err == nil {
			nc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A never admitted the registered user: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	liveClosed := make(chan time.Time, 1)
	live, err := chaos.DialAs(c, a, id, nats.ClosedHandler(func(*nats.Conn) { liveClosed <- time.Now() }))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	w := c.hc.Watch(ctx, 100*time.Millisecond, c.Nodes()...)
	hctx, hcancel := context.WithCancel(ctx)
	attempts := hammer(hctx, c, a, id)

	time.Sleep(time.Second)
	cutAt := time.Now()
	c.Mesh().Partition([]int{c.index(a)}, []int{c.index(leader)}, netproxy.Cut)
	t.Cleanup(c.Mesh().HealAll)
	// Revoke right after the cut: A's last proof may still be fresh.
	time.Sleep(200 * time.Millisecond)
	revokeAt := time.Now()
	if _, err := usersB.RevokeUser(ctx, id.SignPub()); err != nil {
		t.Fatal(err)
	}
	t.Logf("revoke through B took %v", time.Since(revokeAt).Round(time.Millisecond))
	time.Sleep(8 * time.Second)
	healAt := time.Now()
	c.Mesh().HealAll()

	// After the heal A converges: healthy, and the user stays refused.
	if _, err := c.hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
		t.Fatalf("not healthy after the heal: %v", err)
	}
	t.Logf("heal to all healthy: %v", time.Since(healAt).Round(time.Millisecond))
	time.Sleep(time.Second)
	hcancel()
	tl := w.Stop()
	all := attempts()

	limit := revokeAt.Add(2 * time.Second)
	var lastOK time.Time
	for _, x := range all {
		if x.ok {
			lastOK = x.at
		}
		if x.ok && x.at.After(limit) {
			t.Errorf("A admitted the revoked user at revoke%+v (cut%+v)", x.at.Sub(revokeAt).Round(time.Millisecond), x.at.Sub(cutAt).Round(time.Millisecond))
		}
	}
	t.Logf("%d connect attempts to A; last admitted at revoke%+v", len(all), lastOK.Sub(revokeAt).Round(time.Millisecond))
	select {
	case at := <-liveClosed:
		t.Logf("live connection on A closed at revoke%+v", at.Sub(revokeAt).Round(time.Millisecond))
		if at.After(limit) {
			t.Errorf("live connection closed %v after the revocation, want <= 2s", at.Sub(revokeAt))
		}
	default:
		t.Error("A never closed the revoked user's live connection")
	}
	first503 := time.Time{}
	for _, p := range chaos.Of(tl, a.Name()).Probes {
		if p.At.After(cutAt) && !p.OK() {
			first503 = p.At
			t.Logf("A first unhealthy at cut%+v: %s", p.At.Sub(cutAt).Round(time.Millisecond), p)
			break
		}
	}
	if first503.IsZero() {
		t.Log("A stayed healthy (the revocation reached it some other way)")
	}
	// B reaches everyone and must serve throughout. The leader is cut off
	// from A as much as A from it: whichever of them is also cut from the
	// heartbeat stream's leader fails closed too.
	for _, p := range chaos.Of(tl, b.Name()).Probes {
		if p.At.After(cutAt) && p.At.Before(healAt) && !p.OK() {
			t.Errorf("%s (not cut off) unhealthy at cut%+v: %s", b.Name(), p.At.Sub(cutAt).Round(time.Millisecond), p)
			break
		}
	}
	for _, p := range chaos.Of(tl, leader.Name()).Probes {
		if p.At.After(cutAt) && !p.OK() {
			t.Logf("users leader %s first unhealthy at cut%+v: %s", leader.Name(), p.At.Sub(cutAt).Round(time.Millisecond), p)
			break
		}
	}
	// Converged: A refuses the user for good.
	if nc, err := chaos.DialAs(c, a, id); err == nil {
		nc.Close()
		t.Error("A admits the revoked user after the heal")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Logf("post-heal connect error: %v", err)
	}
}

// TestIsolatedNodeFailsClosed measures, at R3 and at --kv-replicas 1, the
// time from isolating a running node (routes reset) to its first 503, and
// checks that it stays denied and that the other two stay healthy. At R1
// the isolated node is the users stream's host (it holds the R1 streams'
// majority on its own).
//
// A measurement (two clusters, 20 s windows each): set GATE_MEASURE=1.
// The partition-fails-closed spec is the claim.
func TestIsolatedNodeFailsClosed(t *testing.T) {
	if testing.Short() || os.Getenv("GATE_MEASURE") == "" {
		t.Skip("measurement: set GATE_MEASURE=1")
	}
	for _, r := range []int{3, 1} {
		t.Run(fmt.Sprintf("R%d", r), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c, took := startCluster(t, ctx, r)
			t.Logf("start to quorum: %v", took.Round(time.Millisecond))
			js := c.js(t, c.Nodes()[0])
			var victim chaos.Node
			if r == 1 {
				victim = c.leaderOf(t, ctx, js, kv.UsersBucket)
			} else {
				victim = c.leaderOf(t, ctx, js, kv.HeartbeatsBucket)
			}
			var majority []chaos.Node
			for _, n := range c.Nodes() {
				if n.Name() != victim.Name() {
					majority = append(majority, n)
				}
			}
			w := c.hc.Watch(ctx, 50*time.Millisecond, c.Nodes()...)
			time.Sleep(time.Second)
			cutAt := time.Now()
			c.Mesh().Isolate(c.index(victim), netproxy.Cut)
			t.Cleanup(c.Mesh().HealAll)
			const window = 20 * time.Second
			time.Sleep(window)
			tl := w.Stop()
			c.Mesh().HealAll()

			var first time.Time
			for _, p := range chaos.Of(tl, victim.Name()).Probes {
				if !p.At.After(cutAt) {
					continue
				}
				if first.IsZero() && !p.OK() {
					first = p.At
					t.Logf("isolated %s: first 503 %v after the cut: %s", victim.Name(), p.At.Sub(cutAt).Round(time.Millisecond), p)
				}
				if !first.IsZero() && p.OK() {
					t.Errorf("isolated node healthy again at cut%+v", p.At.Sub(cutAt).Round(time.Millisecond))
					break
				}
			}
			if first.IsZero() || first.Sub(cutAt) > 2*time.Second {
				t.Errorf("isolated node not denied within 2 s (first 503 at %v)", first.Sub(cutAt))
			}
			for _, n := range majority {
				bad := 0
				var firstBad chaos.Probe
				for _, p := range chaos.Of(tl, n.Name()).Probes {
					if p.At.After(cutAt) && !p.OK() {
						if bad == 0 {
							firstBad = p
						}
						bad++
					}
				}
				if bad > 0 {
					t.Errorf("majority node %s unhealthy in %d probes, first at cut%+v: %s", n.Name(), bad, firstBad.At.Sub(cutAt).Round(time.Millisecond), firstBad)
				} else {
					t.Logf("majority node %s: 200 throughout %v", n.Name(), window)
				}
			}
			healAt := time.Now()
			if _, err := c.hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
				t.Fatalf("not healthy after the heal: %v", err)
			}
			t.Logf("heal to all healthy: %v", time.Since(healAt).Round(time.Millisecond))
		})
	}
}

// TestFiveNodePartitionMinorityDenies is the 5-node case on a real
// cluster: {a,b} | {c,d,e} with the users/nonces leader on the {a,b} side.
// a and b must deny within 2 s; c, d and e stay or become healthy within
// election time + grace. A measurement: GATE_MEASURE=1.
func TestFiveNodePartitionMinorityDenies(t *testing.T) {
	if testing.Short() || os.Getenv("GATE_MEASURE") == "" {
		t.Skip("measurement: set GATE_MEASURE=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := inproc.New(inproc.Options{Dir: t.TempDir(), Size: 5, KVReplicas: 3, Log: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.StartAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
		t.Fatal(err)
	}
	t.Logf("start to quorum (5 nodes together): %v", time.Since(start).Round(time.Millisecond))
	tc := &testCluster{c, hc}
	js := tc.js(t, c.Nodes()[0])
	leader := tc.leaderOf(t, ctx, js, kv.NoncesBucket)
	st, err := kv.Inspect(ctx, js, kv.HeartbeatsBucket)
	if err != nil || st.Replicas != 5 {
		t.Fatalf("heartbeat bucket: %+v, %v (want R5)", st, err)
	}
	// The minority: the nonces leader plus one other node.
	minority := []int{tc.index(leader)}
	var majority []int
	for i := range c.Nodes() {
		if i == minority[0] {
			continue
		}
		if len(minority) < 2 {
			minority = append(minority, i)
		} else {
			majority = append(majority, i)
		}
	}
	w := hc.Watch(ctx, 50*time.Millisecond, c.Nodes()...)
	time.Sleep(time.Second)
	cutAt := time.Now()
	c.Mesh().Partition(minority, majority, netproxy.Cut)
	t.Cleanup(c.Mesh().HealAll)
	time.Sleep(20 * time.Second)
	tl := w.Stop()
	c.Mesh().HealAll()
	for _, i := range minority {
		n := c.Nodes()[i]
		var first time.Time
		for _, p := range chaos.Of(tl, n.Name()).Probes {
			if p.At.After(cutAt) && first.IsZero() && !p.OK() {
				first = p.At
				t.Logf("minority %s: first 503 %v after the partition: %s", n.Name(), p.At.Sub(cutAt).Round(time.Millisecond), p)
			}
			if !first.IsZero() && p.OK() {
				t.Errorf("minority %s healthy again at cut%+v", n.Name(), p.At.Sub(cutAt).Round(time.Millisecond))
				break
			}
		}
		if first.IsZero() || first.Sub(cutAt) > 2*time.Second {
			t.Errorf("minority %s not denied within 2 s", n.Name())
		}
	}
	for _, i := range majority {
		n := c.Nodes()[i]
		var lastBad time.Time
		bad := 0
		for _, p := range chaos.Of(tl, n.Name()).Probes {
			if p.At.After(cutAt) && !p.OK() {
				bad++
				lastBad = p.At
			}
		}
		if bad == 0 {
			t.Logf("majority %s: 200 throughout", n.Name())
		} else {
			t.Logf("majority %s: %d unhealthy probes, healthy again from cut%+v", n.Name(), bad, lastBad.Sub(cutAt).Round(time.Millisecond))
			if lastBad.Sub(cutAt) > 15*time.Second {
				t.Errorf("majority %s not healthy within election + grace", n.Name())
			}
		}
	}
}

// Two of three nodes at --kv-replicas 1 can create every control-plane
// bucket and commit to it, but they are not the cluster: the heartbeat
// bucket cannot be placed at R3, so neither serves, and /healthz says why.
// The third node's start brings all three up.
func TestHeartbeatBucketNeedsEveryNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := inproc.New(inproc.Options{Dir: t.TempDir(), KVReplicas: 1, Log: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		t.Fatal(err)
	}
	two := c.Nodes()[:2]
	if err := chaos.StartNodes(ctx, two...); err != nil {
		t.Fatal(err)
	}
	// Wait until the pair has a meta leader and has tried the placement.
	deadline := time.Now().Add(30 * time.Second)
	for {
		p := hc.Get(ctx, two[0].HealthzURL())
		if p.Code == 503 && strings.Contains(p.Health.Reason, "heartbeat bucket UNIBUS_heartbeats cannot be placed at R3") {
			t.Logf("two of three: %s", p)
			break
		}
		if p.OK() {
			t.Fatalf("two of three nodes serve: %s", p)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no placement reason after 30 s: %s", p)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for range 8 { // and it holds
		for _, n := range two {
			if p := hc.Get(ctx, n.HealthzURL()); p.OK() {
				t.Fatalf("%s serves with two of three nodes: %s", n.Name(), p)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	third := time.Now()
	if err := c.Nodes()[2].Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
		t.Fatal(err)
	}
	t.Logf("third node start to all healthy: %v", time.Since(third).Round(time.Millisecond))
}
