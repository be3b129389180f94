package fault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/clusterinfo"
)

// Latency delays every route packet between Args.Nodes and Args.Rest
// (default every other node) by Args.Latency each way. Observed: a status
// round from a node of side A to every node takes at least Args.Latency
// (it needs the internal identity: targets that keep it on the hosts
// cannot observe this fault, and say so). Healed: delay removed, cluster
// recovered.
type Latency struct{}

// Name implements Fault.
func (Latency) Name() string { return "latency" }

// Available implements Fault.
func (f Latency) Available(c chaos.Cluster, _ Args) error {
	if err := linkAvailable(c, f.Name(), chaos.LinkLatency); err != nil {
		return err
	}
	if len(c.TLS().InternalID) == 0 {
		return unavailable(c, f.Name(), "observing route latency needs a node's internal identity, which this target keeps on the hosts")
	}
	return nil
}

// Inject implements Fault.
func (f Latency) Inject(ctx context.Context, c chaos.Cluster, a Args) (Injection, error) {
	if a.Latency <= 0 || a.Stream != "" || a.Mode != "" {
		return nil, badArgs(f.Name(), "takes Latency (> 0), Nodes, Rest, Lease")
	}
	sa, sb, err := sides(c, f.Name(), a)
	if err != nil {
		return nil, err
	}
	heal, err := c.(chaos.LinkFaulter).FaultLinks(ctx, sa, sb, chaos.LinkFault{Kind: chaos.LinkLatency, Latency: a.Latency, Lease: a.lease()})
	if err != nil {
		return nil, err
	}
	return &injection{
		nodes: names(sa),
		waitInj: func(ctx context.Context) error {
			return poll(ctx, "status round slowed by the latency", func(ctx context.Context) (bool, string) {
				// Ask from side B first: a delayed node may fail closed and
				// refuse even the internal identity.
				var errs []error
				for _, n := range append(append([]chaos.Node{}, sb...), sa...) {
					rtt, err := statusRound(ctx, c, n)
					if err != nil {
						errs = append(errs, err)
						continue
					}
					return rtt >= a.Latency, fmt.Sprintf("round from %s took %s", n.Name(), rtt)
				}
				return false, errors.Join(errs...).Error()
			})
		},
		heal:       heal,
		waitHealed: func(ctx context.Context) error { return waitRecovered(ctx, c) },
	}, nil
}

// statusRound times one status request through n until every node has
// answered.
func statusRound(ctx context.Context, c chaos.Cluster, n chaos.Node) (time.Duration, error) {
	nc, err := chaos.DialInternal(c, n)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	if err := nc.FlushTimeout(2 * time.Second); err != nil && err != nats.ErrConnectionClosed {
		return 0, err
	}
	want := len(c.Nodes())
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	st, err := clusterinfo.CollectStatuses(sctx, nc, want)
	if err != nil {
		return 0, err
	}
	if len(st) < want {
		return 0, fmt.Errorf("only %d of %d nodes answered through %s", len(st), want, n.Name())
	}
	return time.Since(start), nil
}
