package fault

import (
	"context"
	"errors"
	"fmt"

	"github.com/unibus/clusterkit/chaos"
)

// IsolateLeader partitions the current leader of Args.Stream ("meta", a KV
// bucket, a room's stream) from every other node, kind Args.Mode (default
// drop). The leader is asked of the first node that answers, at inject
// time; Nodes() names it. Observed and healed like Partition.
type IsolateLeader struct{}

// Name implements Fault.
func (IsolateLeader) Name() string { return "isolate-leader" }

// Available implements Fault.
func (f IsolateLeader) Available(c chaos.Cluster, a Args) error {
	kind, err := a.Mode.linkKind()
	if err != nil {
		return badArgs(f.Name(), "%v", err)
	}
	return linkAvailable(c, f.Name(), kind)
}

// Inject implements Fault.
func (f IsolateLeader) Inject(ctx context.Context, c chaos.Cluster, a Args) (Injection, error) {
	if a.Stream == "" || len(a.Nodes) > 0 || len(a.Rest) > 0 || a.Latency != 0 {
		return nil, badArgs(f.Name(), "takes Stream, Mode, ClientPort, Lease (the leader is found, not named)")
	}
	kind, err := a.Mode.linkKind()
	if err != nil {
		return nil, badArgs(f.Name(), "%v", err)
	}
	var errs []error
	leader := ""
	for _, n := range c.Nodes() {
		l, err := chaos.StreamLeader(ctx, c, n, a.Stream)
		if err == nil {
			leader = l
			break
		}
		errs = append(errs, err)
	}
	if leader == "" {
		return nil, fmt.Errorf("no leader for %s: %w", a.Stream, errors.Join(errs...))
	}
	ln := c.Node(leader)
	if ln == nil {
		return nil, fmt.Errorf("leader %q of %s is not a node of this cluster", leader, a.Stream)
	}
	var rest []chaos.Node
	for _, n := range c.Nodes() {
		if n.Name() != leader {
			rest = append(rest, n)
		}
	}
	return cutLinks(ctx, c, []chaos.Node{ln}, rest, chaos.LinkFault{Kind: kind, ClientPort: a.ClientPort, Lease: a.lease()})
}
