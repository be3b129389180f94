package raftcatchup

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/unibus/clusterkit/chaos/netproxy"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// applyRemedy tries one remedy for a stuck replica on victim and says what
// the server answered.
func applyRemedy(ctx context.Context, c *cluster, stream, remedy, victim string) string {
	nc := c.connect(c.index(victim))
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
	case "nudge":
		m := nats.NewMsg(kv.HeartbeatSubject("_nudge"))
		m.Header.Set("Nats-Expected-Last-Msg-Id", nuid.Next())
		msg, err = nc.RequestMsgWithContext(rctx, m)
	case "stepdown":
		msg, err = nc.RequestWithContext(rctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil)
	case "removepeer":
		msg, err = nc.RequestWithContext(rctx, "$JS.API.STREAM.PEER.REMOVE."+stream, []byte(`{"peer":"`+victim+`"}`))
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

// TestReproStuckFollower cuts the heartbeat stream's leader off (DROP) soon
// after the stream is created, while every node keeps putting its
// heartbeat, heals the cut, and watches whether the old leader's replica
// catches up. It is a reproducer, not a claim: it runs only with
// CATCHUP_REPRO=1 and fails when the follower is stuck.
//
//	CATCHUP_REPRO=1 go test ./chaos/raftcatchup -run TestReproStuckFollower -v -count=1
//
// Knobs: CATCHUP_AFTER (create → cut, default 500ms), CATCHUP_CUT (cut
// length, 20s), CATCHUP_WATCH (after the heal, 40s), CATCHUP_MODE (drop or
// rst), CATCHUP_OUT (directory for the node logs, else a temp dir).
func TestReproStuckFollower(t *testing.T) {
	if os.Getenv("CATCHUP_REPRO") == "" {
		t.Skip("reproducer: set CATCHUP_REPRO=1")
	}
	dir := os.Getenv("CATCHUP_OUT")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("node logs in %s", dir)
	after := envDuration(t, "CATCHUP_AFTER", 500*time.Millisecond)
	cut := envDuration(t, "CATCHUP_CUT", 20*time.Second)
	watch := envDuration(t, "CATCHUP_WATCH", 40*time.Second)
	mode := netproxy.Blackhole
	if os.Getenv("CATCHUP_MODE") == "rst" {
		mode = netproxy.Cut
	}

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
	time.Sleep(after)
	victim := c.index(leader)
	t.Logf("cutting off %s (the stream leader) for %s, mode %v", leader, cut, mode)
	for _, r := range c.replicas(stream) {
		t.Logf("  before: %s", r)
	}
	c.mesh.Isolate(victim, mode)
	time.Sleep(cut)
	for _, r := range c.replicas(stream) {
		t.Logf("  cut: %s", r)
	}
	c.mesh.HealAll()
	healed := time.Now()
	t.Logf("healed")

	remedy := os.Getenv("CATCHUP_REMEDY")
	remedyAt := envDuration(t, "CATCHUP_REMEDY_AT", 5*time.Second)
	var (
		worst      uint64
		caughtUp   time.Duration // since the heal; 0 = not yet
		remediedAt time.Duration
	)
	for time.Since(healed) < watch {
		if remedy != "" && time.Since(healed) >= remedyAt {
			remediedAt = time.Since(healed)
			t.Logf("remedy %s at heal+%s: %s", remedy, remediedAt.Round(time.Millisecond), applyRemedy(ctx, c, stream, remedy, leader))
			remedy = ""
		}
		time.Sleep(time.Second)
		rs := c.replicas(stream)
		worst = spread(rs)
		if worst <= 64 && caughtUp == 0 {
			caughtUp = time.Since(healed)
		} else if worst > 64 {
			caughtUp = 0
		}
		line := fmt.Sprintf("heal+%ds: %d stuck warnings so far", int(time.Since(healed).Seconds()), c.stuckWarnings())
		for _, r := range rs {
			line += "\n    " + r.String()
		}
		t.Log(line)
	}
	t.Logf("RESULT: %d %q warnings; spread at the end %d; caught up at heal+%s (0 = never); remedy at heal+%s",
		c.stuckWarnings(), stuckMsg, worst, caughtUp.Round(time.Second), remediedAt.Round(time.Millisecond))
	if worst > 64 {
		t.Errorf("a replica is still stuck %s after the heal: spread %d", watch, worst)
	}
}
