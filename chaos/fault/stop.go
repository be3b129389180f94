package fault

import (
	"context"

	"github.com/unibus/clusterkit/chaos"
)

// Stop stops Args.Nodes gracefully (SIGTERM: raft leaders step down
// first). Observed: their client ports refuse. Healed: started again on
// their data.
type Stop struct{}

// Name implements Fault.
func (Stop) Name() string { return "stop" }

// Available implements Fault: every target can stop a node.
func (Stop) Available(chaos.Cluster, Args) error { return nil }

// Inject implements Fault.
func (f Stop) Inject(ctx context.Context, c chaos.Cluster, a Args) (Injection, error) {
	ns, err := victims(c, f.Name(), a)
	if err != nil {
		return nil, err
	}
	if err := chaos.StopNodes(ctx, ns...); err != nil {
		return nil, err
	}
	return downInjection(c, ns), nil
}

// victims resolves Args.Nodes, which a node fault needs.
func victims(c chaos.Cluster, fault string, a Args) ([]chaos.Node, error) {
	if len(a.Nodes) == 0 {
		return nil, badArgs(fault, "needs Nodes")
	}
	if len(a.Rest) > 0 || a.Stream != "" || a.Latency != 0 || a.Mode != "" {
		return nil, badArgs(fault, "takes only Nodes (and Lease)")
	}
	return resolve(c, fault, a.Nodes)
}

// downInjection: nodes that are down until started again.
func downInjection(c chaos.Cluster, ns []chaos.Node) *injection {
	return &injection{
		nodes:      names(ns),
		waitInj:    func(ctx context.Context) error { return waitRefused(ctx, ns...) },
		heal:       func(ctx context.Context) error { return chaos.StartNodes(ctx, ns...) },
		waitHealed: func(ctx context.Context) error { return waitRecovered(ctx, c) },
	}
}
