// Package target builds a cluster of the kind the suite was asked for, so
// every spec runs unchanged on every target.
package target

import (
	"fmt"
	"log/slog"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/diskfault"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/chaos/process"
	"github.com/unibus/clusterkit/chaos/sshtarget"
	"github.com/unibus/clusterkit/runbook/sshx"
)

// Options are the suite-wide settings a target needs.
type Options struct {
	Name   string // "inproc" (default), "process" or "ssh"
	Binary string // built membershipd: the nodes of the process target, every target's local CLI
	Log    *slog.Logger
	// Size is the local targets' cluster size for specs that do not ask
	// for one (0: 3). The ssh target is the deployed cluster, whatever its size.
	Size int
	// ssh target
	NodesFile string
	CertsDir  string
	SSH       sshx.Options
	AllowWipe bool
	SimDir    string
}

// Names lists the targets this build knows.
var Names = []string{"inproc", "process", "ssh"}

// New makes a cluster. In-process and subprocess clusters are new and
// unstarted, of spec.Size nodes; the ssh target is the deployed cluster
// itself (one for the whole run).
func New(o Options, spec chaos.ClusterSpec) (chaos.Cluster, error) {
	if spec.Size == 0 {
		spec.Size = o.Size
	}
	switch o.Name {
	case "", "inproc":
		return inproc.New(inproc.Options{
			Size: spec.Size, KVReplicas: spec.KVReplicas, Dir: spec.Dir,
			Binary: o.Binary, Log: o.Log, Sync: spec.Sync,
		})
	case "process":
		if o.Binary == "" {
			return nil, fmt.Errorf("target process: needs the membershipd binary (--membershipd)")
		}
		po := process.Options{
			Size: spec.Size, KVReplicas: spec.KVReplicas, Dir: spec.Dir,
			Binary: o.Binary, Log: o.Log, Sync: spec.Sync,
		}
		if spec.PowerLoss && diskfault.Available() == nil {
			// Without FUSE the stores stay plain directories and the
			// power-loss fault says why it is unavailable.
			po.PowerLossFS = diskfault.MetadataImmediate
		}
		return process.New(po)
	case "ssh":
		return sshtarget.New(sshtarget.Options{NodesFile: o.NodesFile, CertsDir: o.CertsDir, SSH: o.SSH, AllowWipe: o.AllowWipe, SimDir: o.SimDir, Log: o.Log})
	default:
		return nil, fmt.Errorf("unknown target %q (known: %v)", o.Name, Names)
	}
}
