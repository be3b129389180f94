package fault

import (
	"context"
	"errors"
	"time"

	"github.com/unibus/clusterkit/chaos"
)

// Kill crashes Args.Nodes with SIGKILL: no raft step-down, nothing
// flushed by the process (the page cache survives: that is power-loss's
// job). Observed: their client ports refuse. Healed: started again on
// their data. On a remote host the node starts by itself after Args.Lease
// if the controller disappears.
type Kill struct{}

// Name implements Fault.
func (Kill) Name() string { return "kill" }

// Available implements Fault: nodes must implement chaos.Killer.
func (f Kill) Available(c chaos.Cluster, _ Args) error {
	return nodesCan[chaos.Killer](c, f.Name(), "SIGKILL one node")
}

// Inject implements Fault.
func (f Kill) Inject(ctx context.Context, c chaos.Cluster, a Args) (Injection, error) {
	ns, err := victims(c, f.Name(), a)
	if err != nil {
		return nil, err
	}
	if err := killAll(ctx, ns, a.lease()); err != nil {
		return nil, err
	}
	return downInjection(c, ns), nil
}

func killAll(ctx context.Context, ns []chaos.Node, lease time.Duration) error {
	var errs []error
	for _, n := range ns {
		errs = append(errs, n.(chaos.Killer).Kill(ctx, lease))
	}
	return errors.Join(errs...)
}

// nodesCan is Available for a node capability I.
func nodesCan[I any](c chaos.Cluster, fault, what string) error {
	for _, n := range c.Nodes() {
		if _, ok := n.(I); !ok {
			why := "its nodes cannot " + what
			if c.Target() == "inproc" {
				why += ": every node shares the test process, so a signal would hit them all (use --target=process)"
			}
			return unavailable(c, fault, why)
		}
	}
	return nil
}
