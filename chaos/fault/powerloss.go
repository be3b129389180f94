package fault

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/diskfault"
	"github.com/unibus/clusterkit/membershipd/clusterinfo"
)

// PowerLoss cuts the power of every node at one instant: every write a
// node did not fsync is dropped from its store, every node is SIGKILLed,
// and all come back on what was durable (kill alone keeps the page cache,
// and with it every write). The cluster must be a chaos.PowerCutter
// created with chaos.ClusterSpec.PowerLoss (the process target, with FUSE).
// Observed: every node runs a new process, started after the cut (its
// server's start time, from each server's own VARZ); what each store
// dropped is the injection's Detail. Healed: nothing to undo (the power is
// back when Inject returns); WaitHealed waits for a healthy cluster.
type PowerLoss struct{}

// Name implements Fault.
func (PowerLoss) Name() string { return "power-loss" }

// Available implements Fault.
func (f PowerLoss) Available(c chaos.Cluster, a Args) error {
	pc, ok := c.(chaos.PowerCutter)
	if !ok {
		why := "its stores cannot drop unsynced writes"
		switch c.Target() {
		case "inproc":
			why += ": every node shares the test process and a plain store directory (use --target=process)"
		case "ssh":
			why += ": a deployed host's power and disk cache are not the controller's to cut"
		}
		return unavailable(c, f.Name(), why)
	}
	if err := pc.PowerLossAvailable(); err != nil {
		return unavailable(c, f.Name(), err.Error())
	}
	for _, n := range c.Nodes() {
		if _, ok := c.TLS().InternalID[n.Name()]; !ok {
			return unavailable(c, f.Name(), "the restart is observed with each node's internal identity, which this target does not expose")
		}
	}
	return nil
}

// Inject implements Fault. It takes no node arguments: the power goes
// everywhere at once.
func (f PowerLoss) Inject(ctx context.Context, c chaos.Cluster, a Args) (Injection, error) {
	if len(a.Nodes) > 0 || len(a.Rest) > 0 {
		return nil, badArgs(f.Name(), "cuts every node at once: Nodes and Rest must be empty")
	}
	pc := c.(chaos.PowerCutter)
	cut := time.Now()
	if err := pc.PowerLoss(ctx); err != nil {
		return nil, err
	}
	inj := &powerInjection{injection: injection{nodes: names(c.Nodes())}}
	if ps, ok := c.(interface{ PowerLossStats() []diskfault.Stats }); ok {
		inj.stats = map[string]diskfault.Stats{}
		for i, s := range ps.PowerLossStats() {
			if i < len(c.Nodes()) {
				inj.stats[c.Nodes()[i].Name()] = s
			}
		}
	}
	inj.waitInj = func(ctx context.Context) error {
		return poll(ctx, "every node restarted after the cut", func(ctx context.Context) (bool, string) {
			starts, err := serverStarts(ctx, c)
			if err != nil {
				return false, err.Error()
			}
			inj.starts = starts
			for _, n := range c.Nodes() {
				at, ok := starts[n.Name()]
				if !ok {
					return false, n.Name() + " does not answer VARZ"
				}
				if at.Before(cut) {
					return false, fmt.Sprintf("%s runs a process started %s, before the cut at %s", n.Name(), at.Format(time.RFC3339Nano), cut.Format(time.RFC3339Nano))
				}
			}
			return true, ""
		})
	}
	inj.heal = func(context.Context) error { return nil }
	inj.waitHealed = func(ctx context.Context) error { return waitRecovered(ctx, c) }
	return inj, nil
}

// powerInjection records what the cut dropped and when each node started again.
type powerInjection struct {
	injection
	stats  map[string]diskfault.Stats
	starts map[string]time.Time
}

// Detail is recorded in the injection's evidence once observed.
func (p *powerInjection) Detail() any {
	return map[string]any{"dropped": p.stats, "restarted_at": p.starts}
}

// varzSubject asks every server for its VARZ; the daemon imports it into
// the internal identity's account.
const varzSubject = "$SYS.REQ.SERVER.PING.VARZ"

// serverStarts asks every server, through any node that answers, when its
// current process started.
func serverStarts(ctx context.Context, c chaos.Cluster) (map[string]time.Time, error) {
	var last error
	for _, n := range c.Nodes() {
		nc, err := chaos.DialInternal(c, n)
		if err != nil {
			last = err
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		raw, err := clusterinfo.Collect(sctx, nc, varzSubject, len(c.Nodes()))
		cancel()
		nc.Close()
		if err != nil {
			last = err
			continue
		}
		out := map[string]time.Time{}
		for _, b := range raw {
			var r struct {
				Server struct {
					Name string `json:"name"`
				} `json:"server"`
				Data struct {
					Start time.Time `json:"start"`
				} `json:"data"`
			}
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("decode VARZ reply: %w", err)
			}
			out[r.Server.Name] = r.Data.Start
		}
		if len(out) == len(c.Nodes()) {
			return out, nil
		}
		last = fmt.Errorf("VARZ via %s: %d of %d servers answered", n.Name(), len(out), len(c.Nodes()))
	}
	return nil, last
}
