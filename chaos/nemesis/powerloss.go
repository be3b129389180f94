package nemesis

import (
	"slices"

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

// powerLossOptions prepares the process target for the power-loss fault.
// Until chaos/process has Options.PowerLossFS (the power-loss branch), a
// run that asks for power-loss fails fault.Lookup with a bad-input error
// before it gets here; the merge sets the field here.
func powerLossOptions(o *process.Options, cfg Config) {
	if !wantsPowerLoss(cfg) {
		return
	}
	_ = o
}
