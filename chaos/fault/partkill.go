package fault

import (
	"context"
	"errors"

	"github.com/unibus/clusterkit/chaos"
)

// PartKill kills one node (SIGKILL) and partitions another from every
// other node at the same time: Args.Nodes is [killed, partitioned], kind
// Args.Mode (default drop). With three nodes no majority is left; with
// five the other three keep one. Observed: the killed node's port refuses
// and the partitioned node reaches nobody. Healed: links restored, the
// killed node started on its data, cluster recovered.
type PartKill struct{}

// Name implements Fault.
func (PartKill) Name() string { return "part-kill" }

// Available implements Fault: needs both Kill and Partition.
func (f PartKill) Available(c chaos.Cluster, a Args) error {
	if err := (Kill{}).Available(c, a); err != nil {
		return err
	}
	return (Partition{}).Available(c, a)
}

// Inject implements Fault.
func (f PartKill) Inject(ctx context.Context, c chaos.Cluster, a Args) (Injection, error) {
	if len(a.Nodes) != 2 || a.Nodes[0] == a.Nodes[1] || len(a.Rest) > 0 || a.Stream != "" || a.Latency != 0 {
		return nil, badArgs(f.Name(), "takes Nodes = [node to kill, node to partition], Mode, ClientPort, Lease")
	}
	kind, err := a.Mode.linkKind()
	if err != nil {
		return nil, badArgs(f.Name(), "%v", err)
	}
	ns, err := resolve(c, f.Name(), a.Nodes)
	if err != nil {
		return nil, err
	}
	killed, parted := ns[0], ns[1]
	var rest []chaos.Node
	for _, n := range c.Nodes() {
		if n.Name() != parted.Name() {
			rest = append(rest, n)
		}
	}
	cut, err := cutLinks(ctx, c, []chaos.Node{parted}, rest, chaos.LinkFault{Kind: kind, ClientPort: a.ClientPort, Lease: a.lease()}, killed.Name())
	if err != nil {
		return nil, err
	}
	if err := killAll(ctx, []chaos.Node{killed}, a.lease()); err != nil {
		return nil, errors.Join(err, cut.heal(ctx))
	}
	return &injection{
		nodes: names(ns),
		waitInj: func(ctx context.Context) error {
			if err := waitRefused(ctx, killed); err != nil {
				return err
			}
			return cut.waitInj(ctx)
		},
		heal: func(ctx context.Context) error {
			return errors.Join(cut.heal(ctx), chaos.StartNodes(ctx, killed))
		},
		waitHealed: func(ctx context.Context) error { return waitRecovered(ctx, c) },
	}, nil
}
