// Package target builds a cluster of the kind the suite was asked for, so
// every spec runs unchanged on every target.
package target

import (
	"fmt"
	"log/slog"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/inproc"
)

// Options are the suite-wide settings a target needs.
type Options struct {
	Name   string // "inproc" (default)
	Binary string // built membershipd, for the CLI
	Log    *slog.Logger
}

// Names lists the targets this build knows.
var Names = []string{"inproc"}

// New makes an unstarted cluster.
func New(o Options, spec chaos.Spec) (chaos.Cluster, error) {
	switch o.Name {
	case "", "inproc":
		return inproc.New(inproc.Options{
			Size: spec.Size, KVReplicas: spec.KVReplicas, Dir: spec.Dir,
			Binary: o.Binary, Log: o.Log,
		})
	default:
		return nil, fmt.Errorf("unknown target %q (known: %v)", o.Name, Names)
	}
}
