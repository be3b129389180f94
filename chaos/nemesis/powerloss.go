package nemesis

import (
	"slices"

	"github.com/unibus/clusterkit/chaos/diskfault"
	"github.com/unibus/clusterkit/chaos/process"
)

// PowerLoss is the power-loss fault's registry name.
const PowerLoss = "power-loss"

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
