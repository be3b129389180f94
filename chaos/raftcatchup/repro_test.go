package raftcatchup

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos/netproxy"
	"github.com/unibus/clusterkit/membershipd/replicaheal"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// applyRemedy tries one remedy for the stuck replica on victim (the old
// leader) and says what the server answered. API requests go through a
// healthy node.
func applyRemedy(ctx context.Context, c *cluster, stream, remedy, victim string) string {
	healthy := (c.index(victim) + 1) % len(c.names)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var (
		msg *nats.Msg
		err error
	)
	switch remedy {
	case "snapshot":
		// The current leader compacts its log: the stuck follower's next
		// catchup request is then answered with a snapshot.
		for i, r := range c.replicas(stream) {
			if r.RaftState == "LEADER" {
				if err := c.servers[i].JetStreamSnapshotStream("$G", stream); err != nil {
					return r.Node + ": " + err.Error()
				}
				return r.Node + " snapshotted"
			}
		}
		return "no leader"
	case "restart":
		c.restart(c.index(victim))
		return victim + " restarted"
	case "stepdown":
		// On the leader's server directly: through the API the stuck
		// member, which sees the group leaderless, answers 10008 first.
		for i, r := range c.replicas(stream) {
			if r.RaftState == "LEADER" {
				if err := c.servers[i].JetStreamStepdownStream("$G", stream); err != nil {
					return r.Node + ": " + err.Error()
				}
				return r.Node + " stepped down"
			}
		}
		return "no leader"
	case "stepdown-api":
		msg, err = c.connect(healthy).RequestWithContext(rctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil)
	case "removepeer":
		msg, err = c.connect(healthy).RequestWithContext(rctx, "$JS.API.STREAM.PEER.REMOVE."+stream, []byte(`{"peer":"`+victim+`"}`))
	default:
		return "unknown remedy"
	}
	if err != nil {
		return err.Error()
	}
	return string(msg.Data)
}

// envDuration reads a duration knob of the reproducer.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// scenario is one run: cut the heartbeat stream's leader off (DROP) soon
// after the stream is created while every node keeps putting its
// heartbeat, heal, and watch the replicas.
type scenario struct {
	after, cut, watch time.Duration
	mode              netproxy.Mode
	remedy            string        // applied once at heal+remedyAt (applyRemedy)
	remedyAt          time.Duration //
	healer            bool          // run membershipd's replicaheal on every server throughout
	untilCaughtUp     bool          // stop watching once every replica caught up
}

// outcome is what the watch saw after the heal.
type outcome struct {
	warnings int64
	spread   uint64        // at the end
	caughtUp time.Duration // heal → every replica within 64 of the others; 0 = not within the watch
}

func (sc scenario) run(t *testing.T, dir string) outcome {
	t.Helper()
	c := startCluster(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	stream := kv.StreamName(kv.HeartbeatsBucket)
	js, _ := jetstream.New(c.connect(0))
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	if _, err := js.CreateStream(cctx, kv.StreamConfig(kv.Bucket{Name: kv.HeartbeatsBucket, History: 1}, 3)); err != nil {
		t.Fatalf("create %s: %v", stream, err)
	}
	ccancel()
	for i, name := range c.names {
		nc := c.connect(i)
		wg.Add(1)
		go func() { defer wg.Done(); heartbeats(ctx, nc, name, &wg) }()
		if sc.healer {
			h := replicaheal.New(replicaheal.ServerSource(c.servers[i]), []string{stream},
				slog.New(slog.NewTextHandler(c.logs[i], nil)).With("node", name))
			wg.Add(1)
			go func() { defer wg.Done(); h.Run(ctx) }()
		}
	}

	leader := ""
	for deadline := time.Now().Add(10 * time.Second); leader == "" && time.Now().Before(deadline); {
		for _, r := range c.replicas(stream) {
			if r.RaftState == "LEADER" {
				leader = r.Node
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if leader == "" {
		t.Fatal("no stream leader")
	}
	time.Sleep(sc.after)
	t.Logf("cutting off %s (the stream leader) for %s, mode %v", leader, sc.cut, sc.mode)
	for _, r := range c.replicas(stream) {
		t.Logf("  before: %s", r)
	}
	c.mesh.Isolate(c.index(leader), sc.mode)
	time.Sleep(sc.cut)
	for _, r := range c.replicas(stream) {
		t.Logf("  cut: %s", r)
	}
	c.mesh.HealAll()
	healed := time.Now()
	t.Logf("healed")

	var o outcome
	remedy := sc.remedy
	for time.Since(healed) < sc.watch {
		if remedy != "" && time.Since(healed) >= sc.remedyAt {
			t.Logf("remedy %s at heal+%s: %s", remedy, time.Since(healed).Round(time.Millisecond), applyRemedy(ctx, c, stream, remedy, leader))
			remedy = ""
		}
		time.Sleep(time.Second)
		rs := c.replicas(stream)
		o.spread = spread(rs)
		if o.spread <= 64 && o.caughtUp == 0 {
			o.caughtUp = time.Since(healed)
		} else if o.spread > 64 {
			o.caughtUp = 0
		}
		line := fmt.Sprintf("heal+%ds: %d stuck warnings so far", int(time.Since(healed).Seconds()), c.stuckWarnings())
		for _, r := range rs {
			line += "\n    " + r.String()
		}
		if os.Getenv("CATCHUP_DEBUG") != "" {
			for _, srv := range c.servers {
				gs, err := replicaheal.ServerSource(srv).LedGroups([]string{stream})
				line += fmt.Sprintf("\n    led: %+v %v", gs, err)
			}
		}
		t.Log(line)
		if sc.untilCaughtUp && o.caughtUp > 0 && remedy == "" {
			break
		}
	}
	o.warnings = c.stuckWarnings()
	t.Logf("RESULT: %d %q warnings; spread at the end %d; caught up at heal+%s (0 = not within %s)",
		o.warnings, stuckMsg, o.spread, o.caughtUp.Round(time.Second), sc.watch)
	return o
}

func logDir(t *testing.T) string {
	dir := os.Getenv("CATCHUP_OUT")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestReproStuckFollower reproduces the stuck follower: the old leader's
// replica loops "Expected first catchup entry to be a snapshot and
// peerstate, will retry" and trails by hundreds of messages for ~100 s
// after a 20 s cut. It is a reproducer, not a claim: it runs only with
// CATCHUP_REPRO=1 and fails while the replica is still behind at the end
// of the watch.
//
//	CATCHUP_REPRO=1 go test ./chaos/raftcatchup -run TestReproStuckFollower -v -count=1
//
// Knobs: CATCHUP_AFTER (create → cut, default 500ms), CATCHUP_CUT (cut
// length, 20s), CATCHUP_WATCH (after the heal, 40s), CATCHUP_MODE (drop or
// rst), CATCHUP_REMEDY (snapshot, stepdown, stepdown-api, removepeer,
// restart: applied once at CATCHUP_REMEDY_AT, default heal+5s; see
// NOTES.md for what each did), CATCHUP_HEALER=1 (run membershipd's
// replicaheal on every server), CATCHUP_OUT (directory for the node logs,
// which include the raft debug lines; else a temp dir).
func TestReproStuckFollower(t *testing.T) {
	if os.Getenv("CATCHUP_REPRO") == "" {
		t.Skip("reproducer: set CATCHUP_REPRO=1")
	}
	dir := logDir(t)
	t.Logf("node logs in %s", dir)
	sc := scenario{
		after:    envDuration(t, "CATCHUP_AFTER", 500*time.Millisecond),
		cut:      envDuration(t, "CATCHUP_CUT", 20*time.Second),
		watch:    envDuration(t, "CATCHUP_WATCH", 40*time.Second),
		mode:     netproxy.Blackhole,
		remedy:   os.Getenv("CATCHUP_REMEDY"),
		remedyAt: envDuration(t, "CATCHUP_REMEDY_AT", 5*time.Second),
		healer:   os.Getenv("CATCHUP_HEALER") != "",
	}
	if os.Getenv("CATCHUP_MODE") == "rst" {
		sc.mode = netproxy.Cut
	}
	if o := sc.run(t, dir); o.spread > 64 {
		t.Errorf("a replica is still stuck %s after the heal: spread %d", sc.watch, o.spread)
	}
}

// TestHealerUnsticksFollower is the mitigation's proof on a real cluster:
// the same cut with membershipd's replicaheal running on every server. The
// old leader's replica, which alone would trail for over a minute, is
// caught up within a generous deadline (the healer acts after 10 s).
func TestHealerUnsticksFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-node cluster with a 15 s partition")
	}
	sc := scenario{after: 500 * time.Millisecond, cut: 15 * time.Second, watch: 45 * time.Second,
		mode: netproxy.Blackhole, healer: true, untilCaughtUp: true}
	o := sc.run(t, logDir(t))
	if o.warnings == 0 {
		// Every run so far looped; none would mean the scenario no longer
		// provokes it (a nats-server upgrade fixed it?): then this test
		// proves nothing and replicaheal may be unneeded.
		t.Fatalf("the old leader's replica never logged %q: the scenario did not provoke the stuck catchup", stuckMsg)
	}
	if o.caughtUp == 0 {
		t.Fatalf("the old leader's replica did not catch up within %s of the heal with the healer running: spread %d, %d warnings",
			sc.watch, o.spread, o.warnings)
	}
}
