package fault

import (
	"context"
	"errors"

	"github.com/unibus/clusterkit/chaos"
)

// Pause freezes Args.Nodes with SIGSTOP (a GC pause, a VM stall) and thaws
// them with SIGCONT on heal. Observed: /healthz stops answering while the
// port still accepts TCP (paused, not dead). On a remote host the node
// thaws by itself after Args.Lease if the controller disappears.
type Pause struct{}

// Name implements Fault.
func (Pause) Name() string { return "pause" }

// Available implements Fault: nodes must implement chaos.Pauser.
func (f Pause) Available(c chaos.Cluster, _ Args) error {
	return nodesCan[chaos.Pauser](c, f.Name(), "SIGSTOP one node")
}

// Inject implements Fault.
func (f Pause) Inject(ctx context.Context, c chaos.Cluster, a Args) (Injection, error) {
	ns, err := victims(c, f.Name(), a)
	if err != nil {
		return nil, err
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		return nil, err
	}
	for i, n := range ns {
		if err := n.(chaos.Pauser).Pause(ctx, a.lease()); err != nil {
			for _, p := range ns[:i] {
				_ = p.(chaos.Pauser).Resume(ctx)
			}
			return nil, err
		}
	}
	return &injection{
		nodes:   names(ns),
		waitInj: func(ctx context.Context) error { return waitSilent(ctx, hc, ns...) },
		heal: func(ctx context.Context) error {
			var errs []error
			for _, n := range ns {
				errs = append(errs, n.(chaos.Pauser).Resume(ctx))
			}
			return errors.Join(errs...)
		},
		waitHealed: func(ctx context.Context) error { return waitRecovered(ctx, c) },
	}, nil
}
