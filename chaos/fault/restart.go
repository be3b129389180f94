package fault

import (
	"context"
	"fmt"
	"time"

	"github.com/unibus/clusterkit/chaos"
)

// Restart stops Args.Nodes gracefully and starts them again on their data
// (a rolling restart's step, or an upgrade). The fault is the restart
// itself, so heal has nothing to undo. Observed: each node answers /healthz
// again with an uptime shorter than the time since the restart began.
type Restart struct{}

// Name implements Fault.
func (Restart) Name() string { return "restart" }

// Available implements Fault: every target can stop and start a node.
func (Restart) Available(chaos.Cluster, Args) error { return nil }

// Inject implements Fault.
func (f Restart) Inject(ctx context.Context, c chaos.Cluster, a Args) (Injection, error) {
	ns, err := victims(c, f.Name(), a)
	if err != nil {
		return nil, err
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	if err := chaos.StopNodes(ctx, ns...); err != nil {
		return nil, err
	}
	if err := chaos.StartNodes(ctx, ns...); err != nil {
		return nil, err
	}
	return &injection{
		nodes: names(ns),
		waitInj: func(ctx context.Context) error {
			return poll(ctx, "restarted node answers", func(ctx context.Context) (bool, string) {
				for _, n := range ns {
					p := hc.Get(ctx, n.HealthzURL())
					if p.Err != nil || p.Code == 0 {
						return false, fmt.Sprintf("%s: %s", n.Name(), p)
					}
					if up := time.Duration(p.Health.UptimeMS) * time.Millisecond; up > time.Since(began) {
						return false, fmt.Sprintf("%s has been up %s: not restarted", n.Name(), up)
					}
				}
				return true, ""
			})
		},
		heal:       func(context.Context) error { return nil },
		waitHealed: func(ctx context.Context) error { return waitRecovered(ctx, c) },
	}, nil
}
