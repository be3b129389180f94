package node_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/inproc"
)

// TestStartToQuorumTiming starts three in-process nodes together
// QUORUM_RUNS times (default 5) and logs the time until every node's
// healthz is 200, with the median. It measures; it asserts only that
// quorum forms. QUORUM_DEBUG=1 prints each node's bring-up timeline.
func TestStartToQuorumTiming(t *testing.T) {
	if testing.Short() || os.Getenv("QUORUM_RUNS") == "" {
		t.Skip("set QUORUM_RUNS=N: starts N clusters")
	}
	runs, err := strconv.Atoi(os.Getenv("QUORUM_RUNS"))
	if err != nil || runs < 1 {
		t.Fatalf("QUORUM_RUNS=%q: want a positive number", os.Getenv("QUORUM_RUNS"))
	}
	lvl := slog.Level(100)
	if os.Getenv("QUORUM_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	var took []time.Duration
	for i := 0; i < runs; i++ {
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("run", i)
		c, err := inproc.New(inproc.Options{Dir: t.TempDir(), Log: log})
		if err != nil {
			t.Fatal(err)
		}
		hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		if err := c.StartAll(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
			t.Fatal(err)
		}
		d := time.Since(start)
		cancel()
		took = append(took, d)
		t.Logf("run %d: start to quorum %s", i, d.Round(time.Millisecond))
		_ = c.Close()
	}
	slices.Sort(took)
	t.Logf("start to quorum, %d runs: median %s, sorted %v", runs, took[len(took)/2].Round(time.Millisecond), took)
}
