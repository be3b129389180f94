package probe_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/clustertest"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// TestRunInproc runs the probe against three in-process nodes: a fresh
// room, a run that stops the node the client is connected to mid-publish,
// and a run joining the same room again.
func TestRunInproc(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	lvl := slog.LevelWarn
	if os.Getenv("PROBE_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	c, hc := clustertest.Inproc(t, inproc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	user := clustertest.AddUser(ctx, t, c, "probe")

	tlsFiles := c.TLS()
	base := probe.Config{
		CA: tlsFiles.ClientCA, Cert: tlsFiles.OperatorCert, Key: tlsFiles.OperatorKey,
		Identity: user, Count: 300, Log: log,
	}
	for _, n := range c.Nodes() {
		base.Servers = append(base.Servers, n.ClientURL())
		base.APIURLs = append(base.APIURLs, strings.TrimSuffix(n.HealthzURL(), "/healthz"))
	}

	var first probe.Report
	t.Run("fresh room", func(t *testing.T) {
		rep, err := probe.Run(ctx, base)
		logReport(t, rep)
		if err != nil {
			t.Fatal(err)
		}
		checkClean(t, rep, 300)
		if !strings.HasPrefix(rep.Room, "clientcheck-") || len(rep.RoomID) != 16 {
			t.Errorf("room %q id %q", rep.Room, rep.RoomID)
		}
		if len(rep.Reconnects) != 0 {
			t.Errorf("reconnects %+v in a quiet run", rep.Reconnects)
		}
		first = rep
	})
	if first.RoomID == "" {
		t.FailNow()
	}

	t.Run("node stopped mid-publish", func(t *testing.T) {
		cfg := base
		cfg.Room = first.Room // joins the room made above
		var once sync.Once
		var stopped chaos.Node
		stopErr := make(chan error, 1)
		cfg.OnAcked = func(n int, server string) {
			if n != 100 {
				return
			}
			once.Do(func() {
				stopped = c.Node(server)
				if stopped == nil {
					stopErr <- nil
					t.Errorf("OnAcked named server %q, not a node", server)
					return
				}
				// Stop it while the probe keeps publishing.
				go func() { stopErr <- stopped.Stop(ctx) }()
			})
		}
		rep, err := probe.Run(ctx, cfg)
		logReport(t, rep)
		if err := <-stopErr; err != nil {
			t.Fatal(err)
		}
		if stopped != nil {
			defer func() {
				if err := stopped.Start(ctx); err != nil {
					t.Error(err)
				}
				if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
					t.Error(err)
				}
			}()
		}
		if err != nil {
			t.Fatal(err)
		}
		if rep.RoomID != first.RoomID {
			t.Errorf("joined room %s, want %s", rep.RoomID, first.RoomID)
		}
		checkClean(t, rep, 300)
		if len(rep.Reconnects) == 0 {
			t.Fatalf("no reconnect recorded after stopping %s", stopped.Name())
		}
		rc := rep.Reconnects[0]
		if rc.From != stopped.Name() || rc.To == stopped.Name() || rc.To == "" {
			t.Errorf("reconnect %+v: want from %s to another node", rc, stopped.Name())
		}
		if len(rep.Servers) < 2 || rep.Servers[0] != stopped.Name() {
			t.Errorf("servers %v", rep.Servers)
		}
		t.Logf("failover: disconnected %s, publish gap %s, longest receive gap %s", rc.Down, rc.Gap, rep.LongestGap)
	})

	t.Run("join again", func(t *testing.T) {
		cfg := base
		cfg.Room = first.Room
		cfg.Count = 50
		cfg.Rate = 500
		rep, err := probe.Run(ctx, cfg)
		logReport(t, rep)
		if err != nil {
			t.Fatal(err)
		}
		// The room holds 600 earlier messages: none may count as this run's.
		checkClean(t, rep, 50)
		if rep.RoomID != first.RoomID {
			t.Errorf("joined room %s, want %s", rep.RoomID, first.RoomID)
		}
		if rep.Elapsed < 90*time.Millisecond {
			t.Errorf("50 messages at 500/s took %s", rep.Elapsed)
		}
	})

	t.Run("replayed envelope", func(t *testing.T) {
		// With the node's internal identity (what the server or an
		// operator holds), store one of this run's envelopes again.
		inc, err := chaos.DialInternal(c, c.Nodes()[0])
		if err != nil {
			t.Fatal(err)
		}
		defer inc.Close()
		ijs, err := jetstream.New(inc)
		if err != nil {
			t.Fatal(err)
		}
		cfg := base
		cfg.Room = first.Room
		cfg.Count = 40
		replayed := make(chan error, 1)
		cfg.OnAcked = func(n int, _ string) {
			if n != 20 {
				return
			}
			subj := "unibus.room." + first.RoomID + ".msg"
			m, err := ijs.Stream(ctx, "ROOM_"+first.RoomID)
			if err == nil {
				var raw *jetstream.RawStreamMsg
				if raw, err = m.GetLastMsgForSubject(ctx, subj); err == nil {
					_, err = ijs.Publish(ctx, subj, raw.Data)
				}
			}
			replayed <- err
		}
		rep, err := probe.Run(ctx, cfg)
		logReport(t, rep)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-replayed; err != nil {
			t.Fatalf("replaying: %v", err)
		}
		if rep.Replays != 1 || rep.OK() || len(rep.ReplayViolations) != 1 || !strings.Contains(rep.ReplayViolations[0], "replayed envelope") {
			t.Fatalf("want 1 replay flagged and the run failed; got replays %d %q ok %v", rep.Replays, rep.ReplayViolations, rep.OK())
		}
		// Flagged at the envelope layer, not handed on: the counts are clean.
		if rep.Received != 40 || rep.Duplicated != 0 || rep.Lost != 0 {
			t.Errorf("received %d duplicated %d lost %d", rep.Received, rep.Duplicated, rep.Lost)
		}
	})

	t.Run("substituted key row", func(t *testing.T) {
		// The internal identity replaces the member's wrapped key with one
		// for a key it knows: the next run refuses to use it.
		inc, err := chaos.DialInternal(c, c.Nodes()[1])
		if err != nil {
			t.Fatal(err)
		}
		defer inc.Close()
		ijs, err := jetstream.New(inc)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := ijs.KeyValue(ctx, kv.RoomKeysBucket)
		if err != nil {
			t.Fatal(err)
		}
		evil, _ := e2e.NewRoomKey()
		w, _ := e2e.WrapRoomKey(evil, first.RoomID, user.SignPub())
		row, _ := json.Marshal(map[string]string{"wrapped_key": w, "added_by": user.SignPub()})
		if _, err := keys.Put(ctx, first.RoomID+"."+user.SignPub(), row); err != nil {
			t.Fatal(err)
		}
		cfg := base
		cfg.Room = first.Room
		cfg.Count = 5
		_, err = probe.Run(ctx, cfg)
		if !errors.Is(err, e2e.ErrUntrustedKey) {
			t.Fatalf("run with a substituted key: %v, want %v", err, e2e.ErrUntrustedKey)
		}
		t.Logf("refused: %v", err)
	})

	t.Run("control plane", func(t *testing.T) {
		a, err := probe.NewAPI(base.APIURLs, base.CA, user)
		if err != nil {
			t.Fatal(err)
		}
		me, err := a.Me(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if me.SignPub != user.SignPub() || len(me.Rooms) != 1 || me.Rooms[0].ID != first.RoomID {
			t.Errorf("me %+v", me)
		}
		_, err = a.RoomKey(ctx, "ffffffffffffffff")
		var he *probe.HTTPError
		if !errors.As(err, &he) || he.Code != 404 {
			t.Errorf("key of a room I am not in: %v", err)
		}
	})
}

func checkClean(t *testing.T, rep probe.Report, count int) {
	t.Helper()
	if !rep.OK() || rep.Sent != count || rep.Acked != count || rep.Received != count || rep.Lost != 0 || rep.Duplicated != 0 || rep.OutOfOrder != 0 {
		t.Errorf("want %d sent, acked and received, none lost, duplicated or out of order; got %+v", count, rep)
	}
	if len(rep.Violations) > 0 {
		t.Errorf("permission violations: %q", rep.Violations)
	}
	if rep.LatencyP50 <= 0 || rep.LatencyP99 < rep.LatencyP50 {
		t.Errorf("latency p50 %s p99 %s", rep.LatencyP50, rep.LatencyP99)
	}
}

func logReport(t *testing.T, rep probe.Report) {
	t.Helper()
	var b strings.Builder
	_ = rep.WriteText(&b)
	t.Log("\n" + b.String())
}
