package inproc_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/inproc"
)

// TestStartAll is the target's own smoke test: three nodes started together
// become healthy, and a stopped node comes back on its data and ports.
func TestStartAll(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	lvl := slog.LevelWarn
	if os.Getenv("INPROC_DEBUG") != "" {
		lvl = slog.LevelInfo
	}
	c, err := inproc.New(inproc.Options{Dir: t.TempDir(), Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.StartAll(ctx); err != nil {
		t.Fatal(err)
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
		t.Fatal(err)
	}
	t.Logf("healthy after %s", time.Since(start))
	n1 := c.Nodes()[0]
	if err := n1.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
		t.Fatal(err)
	}
	t.Logf("healthy again after restart %s", time.Since(start))
}
