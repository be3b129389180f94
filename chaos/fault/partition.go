package fault

import (
	"context"

	"github.com/unibus/clusterkit/chaos"
)

// Partition isolates Args.Nodes from Args.Rest (default: every other node)
// while every node keeps running. Args.Mode names the kind: rst (every
// connection across is reset) or drop (every packet across is lost; the
// default). Observed: no node on either side reaches a node on the other.
// Healed: links restored, every node healthy and reaching every node.
type Partition struct{}

// Name implements Fault.
func (Partition) Name() string { return "partition" }

// Available implements Fault: the cluster must fault links of that kind.
func (f Partition) Available(c chaos.Cluster, a Args) error {
	kind, err := a.Mode.linkKind()
	if err != nil {
		return badArgs(f.Name(), "%v", err)
	}
	return linkAvailable(c, f.Name(), kind)
}

// Inject implements Fault.
func (f Partition) Inject(ctx context.Context, c chaos.Cluster, a Args) (Injection, error) {
	if a.Stream != "" || a.Latency != 0 {
		return nil, badArgs(f.Name(), "takes Nodes, Rest, Mode, ClientPort, Lease")
	}
	kind, err := a.Mode.linkKind()
	if err != nil {
		return nil, badArgs(f.Name(), "%v", err)
	}
	sa, sb, err := sides(c, f.Name(), a)
	if err != nil {
		return nil, err
	}
	return cutLinks(ctx, c, sa, sb, chaos.LinkFault{Kind: kind, ClientPort: a.ClientPort, Lease: a.lease()})
}

// cutLinks applies lf between a and b; observed as a split, healed when
// the whole cluster has recovered. skip names nodes not to ask (killed).
func cutLinks(ctx context.Context, c chaos.Cluster, a, b []chaos.Node, lf chaos.LinkFault, skip ...string) (*injection, error) {
	heal, err := c.(chaos.LinkFaulter).FaultLinks(ctx, a, b, lf)
	if err != nil {
		return nil, err
	}
	return &injection{
		nodes:      names(a),
		waitInj:    func(ctx context.Context) error { return waitSplit(ctx, c, a, b, skip...) },
		heal:       heal,
		waitHealed: func(ctx context.Context) error { return waitRecovered(ctx, c) },
	}, nil
}
