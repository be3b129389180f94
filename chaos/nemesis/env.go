package nemesis

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/history"
)

// env is what every workload shares: the cluster, the history, the seed.
type env struct {
	c     chaos.Cluster
	nodes []chaos.Node
	tls   chaos.TLSFiles
	hist  *history.Recorder
	seed  uint64
	log   *slog.Logger
	// cli: the controller has no internal connection (ssh); the users
	// workload, the setup and the final gathering go through the
	// operator CLI on a node (oncli.go).
	cli bool
}

// rng is a workload's own generator: stream k of the seed, so workloads
// never draw from each other's (or the planner's) sequence.
func (e *env) rng(k uint64) *rand.Rand { return rand.New(rand.NewPCG(e.seed, k)) }

// record adds one operation with its times on the history's clock.
func (e *env) record(op history.Op, invoke, end time.Time) {
	op.InvokeMS, op.EndMS = e.hist.MS(invoke), e.hist.MS(end)
	e.hist.Add(op)
}

// jitter sleeps a random time in [lo, hi]; false when ctx ended.
func jitter(ctx context.Context, rng *rand.Rand, lo, hi time.Duration) bool {
	d := lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func apiBase(n chaos.Node) string { return strings.TrimSuffix(n.HealthzURL(), "/healthz") }

// errText is err's text, "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}
