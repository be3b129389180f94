package probe_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/clustertest"
	"github.com/unibus/clusterkit/chaos/process"
	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// TestFailoverKill measures the receive-side failover gap under SIGKILL on
// real membershipd processes: the client's node killed while the room
// stream's leader survives, and the stream leader killed (with the raft
// election time measured in the same run, from the kill to STREAM.INFO
// naming a new leader). Each case runs FAILOVER_RUNS times (default 5).
// It asserts zero loss and, as the goals, the gap against its
// deadline: 200 ms for the client's node, election + 500 ms for the leader
// (FAILOVER_STRICT=0 only logs a miss: the machine may be loaded).
// FAILOVER_BUCKET_LEADERS=victim first moves the leaders of the six
// control-plane buckets to the node about to be killed: the worst case for
// a client that needs the control plane to recover (every signed request
// writes a nonce and reads the room, and waits out those elections).
//
// Where the consumer is led (api pinTarget): on a follower of the stream
// that is neither the client's node nor the meta leader, else on the
// stream's leader. Each run checks that placement.
// FAILOVER_STREAM_LEADER=meta first moves the room stream's leader onto
// the meta leader (the consumer is then led by the third node),
// =third onto the node that is neither the meta leader nor the first node
// (the client's usual node): with the meta leader elsewhere than the
// client's node, the one layout where the consumer stays on the stream's
// leader; unset leaves the leaders where they are. The third case,
// consumer-leader-killed, kills the consumer's leader where it is neither
// the stream's leader nor the client's node (it moves the stream onto the
// meta leader itself); it has no goal in the issue, its gaps are logged.
func TestFailoverKill(t *testing.T) {
	if testing.Short() || os.Getenv("FAILOVER_KILL") == "" {
		t.Skip("set FAILOVER_KILL=1: builds membershipd and runs three processes for minutes")
	}
	runs := 5
	if v, err := strconv.Atoi(os.Getenv("FAILOVER_RUNS")); err == nil && v > 0 {
		runs = v
	}
	strict := os.Getenv("FAILOVER_STRICT") != "0"
	bucketsOnVictim := os.Getenv("FAILOVER_BUCKET_LEADERS") == "victim"
	placeStream := os.Getenv("FAILOVER_STREAM_LEADER")
	lvl := slog.LevelWarn
	if os.Getenv("PROBE_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	bin := os.Getenv("MEMBERSHIPD")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "membershipd")
		if b, err := exec.Command("go", "build", "-o", bin, "github.com/unibus/clusterkit/membershipd").CombinedOutput(); err != nil {
			t.Fatalf("build membershipd: %v\n%s", err, b)
		}
	}
	dir := os.Getenv("FAILOVER_DIR") // kept, with the node logs
	if dir == "" {
		dir = t.TempDir()
	}
	c, err := process.New(process.Options{Dir: dir, Binary: bin, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if err := chaos.StartNodes(ctx, c.Nodes()...); err != nil {
		t.Fatal(err)
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
		t.Fatal(err)
	}
	user := clustertest.AddUser(ctx, t, c, "probe")
	tf := c.TLS()
	base := probe.Config{CA: tf.ClientCA, Cert: tf.OperatorCert, Key: tf.OperatorKey,
		Identity: user, Count: 1200, Rate: 300, Log: log, Drain: 20 * time.Second}
	for _, n := range c.Nodes() {
		base.Servers = append(base.Servers, n.ClientURL())
		base.APIURLs = append(base.APIURLs, strings.TrimSuffix(n.HealthzURL(), "/healthz"))
	}
	// A room holds 16 MiB (DiscardNew: a full one refuses every publish),
	// ~25 runs of 1200 messages: each case starts a fresh room, and so
	// does every roomRuns-th run. A first quiet run creates the room (and
	// the consumer).
	const roomRuns = 15
	var stream string
	rooms := 0
	newRoom := func(t *testing.T) {
		t.Helper()
		rooms++
		base.Room = fmt.Sprintf("failover-kill-%d-%d", time.Now().UnixNano()%1e6, rooms)
		rep, err := probe.Run(ctx, base)
		if err != nil || !rep.OK() || rep.Lost != 0 {
			t.Fatalf("first run in room %s: err %v report %+v", base.Room, err, rep)
		}
		stream = api.RoomStream(rep.RoomID)
	}
	consumer := authn.RoomConsumer(user.SignPub())

	type result struct {
		gap, election, consElection time.Duration
		victim, consLeader          string
		metaOnLeader                bool // the stream's leader led the meta layer
		bucketsLed                  int  // control-plane buckets the victim led at the kill
		led                         []string
		killedAt                    time.Time
	}
	measure := func(t *testing.T, kill string, place string) (result, bool) {
		cfg := base
		var (
			once   sync.Once
			victim chaos.Node
			res    result
			done   = make(chan struct{})
			skip   bool
		)
		if place != "" {
			// Before the run: its start (a reset from sequence 1) places
			// the consumer's leader for the new layout.
			placeStreamLeader(ctx, t, c, stream, place)
		}
		cfg.OnAcked = func(n int, server string) {
			if n != 300 {
				return
			}
			once.Do(func() {
				leader, consLeader := leaders(ctx, c, c.Node(server), stream, consumer)
				meta := metaLeader(ctx, c, c.Node(server))
				res.consLeader = consLeader
				res.metaOnLeader = meta == leader
				// Where the control plane leads the consumer (api
				// pinTarget): a follower that is neither the client's
				// node nor the meta leader, else the stream's leader.
				// third is the follower that is not the client's node
				// ("" if the client is on the stream's leader).
				third := ""
				for _, o := range c.Nodes() {
					if o.Name() != leader && o.Name() != server {
						third = o.Name()
					}
				}
				if leader == server {
					third = ""
				}
				switch {
				case meta == "" || leader == "" || consLeader == "":
					t.Logf("placement not checked: meta leader %q, stream leader %q, consumer leader %q", meta, leader, consLeader)
				case consLeader == meta && consLeader != leader:
					t.Errorf("consumer leader %q leads the meta layer (stream leader %q)", consLeader, leader)
				case consLeader == server && server != leader:
					t.Errorf("consumer leader %q is the client's node (stream leader %q, meta leader %q)", consLeader, leader, meta)
				case consLeader == leader && !(third != "" && third == meta):
					t.Errorf("consumer leader %q is the stream's leader, though a follower could lead it (client %q, meta leader %q)", consLeader, server, meta)
				}
				switch {
				case kill == "stream-leader":
					victim = c.Node(leader)
				case kill == "consumer-leader":
					if consLeader == leader || consLeader == server || consLeader == "" {
						skip = true // the consumer is led by the stream's or the client's node: not this case
					} else {
						victim = c.Node(consLeader)
					}
				case leader == server:
					skip = true // the client's node leads the stream: not this case
				default:
					victim = c.Node(server)
				}
				if victim == nil {
					close(done)
					return
				}
				go func() {
					defer close(done)
					if bucketsOnVictim {
						res.bucketsLed = moveBucketLeaders(ctx, c, victim)
					}
					res.led = groupsLed(ctx, c, victim)
					killed := time.Now()
					res.killedAt = killed
					if err := victim.(chaos.Killer).Kill(ctx, 0); err != nil {
						t.Errorf("kill %s: %v", victim.Name(), err)
						return
					}
					var survivor chaos.Node
					for _, o := range c.Nodes() {
						if o.Name() != victim.Name() {
							survivor = o
							break
						}
					}
					res.election, res.consElection = electionTimes(ctx, c, survivor, stream, consumer, victim.Name(), leader, consLeader, killed)
				}()
			})
		}
		rep, err := probe.Run(ctx, cfg)
		<-done
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if rep.Lost != 0 || rep.Duplicated != 0 || rep.Acked != cfg.Count || rep.Received != cfg.Count {
			t.Errorf("loss: %+v", rep)
		}
		res.gap = rep.LongestGap
		if victim != nil {
			res.victim = victim.Name()
			if err := victim.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
				t.Fatal(err)
			}
			waitCurrent(ctx, t, c, stream)
		}
		t.Logf("gap %s election %s (over by %s) consumer-leader %s meta-on-stream-leader %v (election %s) victim %s killed %s (led %d buckets; led groups %v) reconnects %d restarts %d",
			res.gap.Round(time.Millisecond), res.election.Round(time.Millisecond), (res.gap - res.election).Round(time.Millisecond), res.consLeader, res.metaOnLeader,
			res.consElection.Round(time.Millisecond), res.victim, res.killedAt.UTC().Format("15:04:05.000"), res.bucketsLed, res.led, len(rep.Reconnects), rep.ConsumerRestarts)
		return res, !skip
	}

	for _, tc := range []struct {
		name, kill, place string
	}{
		{"client-node-killed", "client", placeStream},
		{"stream-leader-killed", "stream-leader", placeStream},
		{"consumer-leader-killed", "consumer-leader", "meta"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var gaps, over, quiet []time.Duration
			for attempt := 0; len(gaps) < runs && attempt < 3*runs; attempt++ {
				if attempt%roomRuns == 0 {
					newRoom(t)
				}
				res, ok := measure(t, tc.kill, tc.place)
				if !ok {
					// Nothing was killed: the same run without a fault, the
					// gap the machine's load alone causes.
					quiet = append(quiet, res.gap)
					continue
				}
				gaps = append(gaps, res.gap)
				limit := 200 * time.Millisecond
				switch tc.kill {
				case "stream-leader":
					limit = res.election + 500*time.Millisecond
				case "consumer-leader":
					limit = 0 // no goal: logged
				}
				if limit > 0 && res.gap > limit {
					over = append(over, res.gap)
					msg := fmt.Sprintf("gap %s over the goal %s", res.gap.Round(time.Millisecond), limit.Round(time.Millisecond))
					if strict {
						t.Error(msg)
					} else {
						t.Log(msg)
					}
				}
			}
			slices.Sort(gaps)
			slices.Sort(quiet)
			t.Logf("%s: %d runs, gaps sorted %v, %d over the goal; runs without a kill (load alone): %v", tc.name, len(gaps), gaps, len(over), quiet)
		})
	}
}

// leaders names the room stream's and the consumer's raft leaders, asked
// through node n with the internal identity.
func leaders(ctx context.Context, c chaos.Cluster, n chaos.Node, stream, consumer string) (string, string) {
	nc, err := chaos.DialInternal(c, n)
	if err != nil {
		return "", ""
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", ""
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := js.Stream(ictx, stream)
	if err != nil {
		return "", ""
	}
	cons := ""
	if ci, err := js.Consumer(ictx, stream, consumer); err == nil && ci.CachedInfo().Cluster != nil {
		cons = ci.CachedInfo().Cluster.Leader
	}
	return st.CachedInfo().Cluster.Leader, cons
}

// metaLeader names the meta layer's leader as node n's server knows it.
func metaLeader(ctx context.Context, c chaos.Cluster, n chaos.Node) string {
	nc, err := chaos.DialInternal(c, n)
	if err != nil {
		return ""
	}
	defer nc.Close()
	return chaos.MetaLeader(ctx, nc)
}

// placeStreamLeader moves the room stream's leader onto the meta leader
// (mode "meta") or onto the node that is neither the meta leader nor the
// first node ("third"; any other node if the first node leads meta), with
// a step-down naming the node, until stream info shows it (10 s at most; a
// layout not reached is logged).
func placeStreamLeader(ctx context.Context, t *testing.T, c chaos.Cluster, stream, mode string) {
	t.Helper()
	n0 := c.Nodes()[0]
	nc, js := internalJS(t, c, n0)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		meta := chaos.MetaLeader(ctx, nc)
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := js.Stream(ictx, stream)
		cancel()
		if meta == "" || err != nil || st.CachedInfo().Cluster == nil || st.CachedInfo().Cluster.Leader == "" {
			continue
		}
		want := meta
		if mode == "third" {
			want = ""
			for _, o := range c.Nodes() {
				if o.Name() != meta && (o.Name() != n0.Name() || meta == n0.Name()) {
					want = o.Name()
					break
				}
			}
		}
		if st.CachedInfo().Cluster.Leader == want {
			return
		}
		req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": want}})
		_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, 2*time.Second)
	}
	t.Logf("stream %s: leader not moved as %q asks within 10 s", stream, mode)
}

// groupsLed names the raft groups of the control plane (meta, the buckets)
// that node v leads, from a cluster report (for the run's timeline).
func groupsLed(ctx context.Context, c chaos.Cluster, v chaos.Node) []string {
	rep, err := chaos.ClusterReport(ctx, c, v)
	if err != nil {
		return []string{"report: " + err.Error()}
	}
	var out []string
	if rep.MetaLeader() == v.Name() {
		out = append(out, "meta")
	}
	for _, b := range rep.Buckets {
		if b.Leader == v.Name() {
			out = append(out, b.Bucket)
		}
	}
	return out
}

// moveBucketLeaders moves the leader of every control-plane bucket to node
// to (a step-down with to preferred, until stream info names it, 3 s per
// bucket at most) and returns how many it leads.
func moveBucketLeaders(ctx context.Context, c chaos.Cluster, to chaos.Node) int {
	nc, err := chaos.DialInternal(c, to)
	if err != nil {
		return 0
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0
	}
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to.Name()}})
	led := 0
	for _, b := range kv.Buckets {
		stream := kv.StreamName(b.Name)
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			ictx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			st, err := js.Stream(ictx, stream)
			cancel()
			if err == nil && st.CachedInfo().Cluster != nil && st.CachedInfo().Cluster.Leader == to.Name() {
				led++
				break
			}
			if err == nil {
				_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, time.Second)
			}
		}
	}
	return led
}

// electionTimes measures, through a survivor, the stream's and the
// consumer's elections after the kill (chaos.ElectionTime: a request every
// 20 ms, each on its own, so a request sent while there is no leader does
// not delay the answer to a later one), each when the victim led it (else 0).
func electionTimes(ctx context.Context, c chaos.Cluster, survivor chaos.Node, stream, consumer, victim, streamLeader, consLeader string, killed time.Time) (time.Duration, time.Duration) {
	nc, err := chaos.DialInternal(c, survivor, nats.Timeout(time.Second))
	if err != nil {
		return -1, -1
	}
	defer nc.Close()
	var se, ce time.Duration
	var wg sync.WaitGroup
	if streamLeader == victim {
		wg.Go(func() { se = chaos.ElectionTime(ctx, nc, stream, "", victim, killed, 30*time.Second) })
	}
	if consLeader == victim {
		wg.Go(func() { ce = chaos.ElectionTime(ctx, nc, stream, consumer, victim, killed, 30*time.Second) })
	}
	wg.Wait()
	return se, ce
}

// internalJS connects to node n with the internal identity (closed when
// the test ends).
func internalJS(t *testing.T, c chaos.Cluster, n chaos.Node) (*nats.Conn, jetstream.JetStream) {
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
	return nc, js
}

// waitCurrent waits until every replica of the stream is current.
func waitCurrent(ctx context.Context, t *testing.T, c chaos.Cluster, stream string) {
	t.Helper()
	_, js := internalJS(t, c, c.Nodes()[0])
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		st, err := js.Stream(ctx, stream)
		if err != nil || st.CachedInfo().Cluster == nil || st.CachedInfo().Cluster.Leader == "" {
			continue
		}
		ok := len(st.CachedInfo().Cluster.Replicas) == 2
		for _, p := range st.CachedInfo().Cluster.Replicas {
			ok = ok && p.Current
		}
		if ok {
			return
		}
	}
	t.Fatalf("stream %s replicas not current after 30 s", stream)
}
