package nemesis

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/diskfault"
	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/process"
)

// PowerLoss is the power-loss fault's registry name.
const PowerLoss = "power-loss"

// Until chaos/fault registers its own power-loss fault, the nemesis
// registers this stand-in on the process target's PowerLoss: the name then
// maps through fault.Lookup like every other, and the real fault replaces
// it (this init does nothing once Lookup knows the name).
func init() {
	if _, err := fault.Lookup(PowerLoss); err != nil {
		fault.All = append(fault.All, powerLossFault{})
	}
}

// wantsPowerLoss: the run may inject power-loss (asked for, or in the
// replayed schedule), so the nodes' stores must sit on the fault's
// filesystem from the start.
func wantsPowerLoss(cfg Config) bool {
	if cfg.Replay != nil {
		return slices.ContainsFunc(cfg.Replay.Steps, func(s Step) bool { return s.Fault == PowerLoss })
	}
	return slices.Contains(cfg.Faults, PowerLoss)
}

// powerLossOptions puts every store on a diskfault mount when the run may
// cut the power (FUSE costs throughput, so only then). Namespace
// operations are durable when they return, as on ext4/xfs.
func powerLossOptions(o *process.Options, cfg Config) {
	if wantsPowerLoss(cfg) {
		o.PowerLossFS = diskfault.MetadataImmediate
	}
}

// powerLossFault cuts the power of every node at once (process target):
// every write not fsynced is lost, every node is killed and restarted on
// what was durable. Injected and over in one step: the observer checks the
// nodes came back; the heal has nothing left to undo.
type powerLossFault struct{}

func (powerLossFault) Name() string { return PowerLoss }

func (f powerLossFault) Available(c chaos.Cluster, _ fault.Args) error {
	pc, ok := c.(*process.Cluster)
	if !ok {
		return fmt.Errorf("%w: %s on target %s: only the process target can drop unsynced writes", fault.ErrUnavailable, PowerLoss, c.Target())
	}
	if err := pc.PowerLossAvailable(); err != nil {
		return fmt.Errorf("%w: %s: %v", fault.ErrUnavailable, PowerLoss, err)
	}
	return nil
}

func (f powerLossFault) Inject(ctx context.Context, c chaos.Cluster, _ fault.Args) (fault.Injection, error) {
	pc, ok := c.(*process.Cluster)
	if !ok {
		return nil, errors.New("power-loss: not a process cluster")
	}
	if err := pc.PowerLoss(ctx); err != nil {
		return nil, err
	}
	return &powerLossInjection{c: c}, nil
}

type powerLossInjection struct{ c chaos.Cluster }

func (i *powerLossInjection) Nodes() []string {
	var out []string
	for _, n := range i.c.Nodes() {
		out = append(out, n.Name())
	}
	return out
}

// WaitInjected: PowerLoss returned, so every node was killed and started
// again; seen from outside, each runs.
func (i *powerLossInjection) WaitInjected(context.Context) error {
	for _, n := range i.c.Nodes() {
		if !n.Running() {
			return fmt.Errorf("%s is not running after the power came back", n.Name())
		}
	}
	return nil
}

func (i *powerLossInjection) Heal(context.Context) error { return nil }

func (i *powerLossInjection) WaitHealed(ctx context.Context) error {
	hc, err := chaos.NewHealthClient(i.c.TLS().ClientCA)
	if err != nil {
		return err
	}
	_, err = hc.WaitHealthy(ctx, i.c.Nodes()...)
	return err
}
