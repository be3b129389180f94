package nemesis

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/process"
	"github.com/unibus/clusterkit/chaos/storehash"
	"github.com/unibus/clusterkit/chaos/target"
	"github.com/unibus/clusterkit/runbook/sshx"
)

// newCluster makes the run's cluster: new local processes under dir, or
// the deployed cluster of the ssh target (built as the specs' live run
// builds it).
func newCluster(cfg Config, dir string) (chaos.Cluster, error) {
	if cfg.Target == "ssh" {
		return target.New(target.Options{Name: "ssh", Log: cfg.Log.With("component", "cluster"),
			NodesFile: cfg.SSH.NodesFile, CertsDir: cfg.SSH.CertsDir, SimDir: cfg.SSH.SimDir,
			SSH: sshx.Options{ConfigFile: cfg.SSH.SSHConfig, Agent: true}}, chaos.ClusterSpec{})
	}
	popts := process.Options{Size: cfg.Size, Dir: filepath.Join(dir, "cluster"), Binary: cfg.Binary, Sync: cfg.Sync,
		ClusterName: "unibus-nemesis", Log: cfg.Log.With("component", "cluster")}
	powerLossOptions(&popts, cfg)
	return process.New(popts)
}

// storeDirs is a target whose nodes' stores the controller can read (the
// process target).
type storeDirs interface {
	StoreDir(n chaos.Node) (string, error)
}

// withContent stops every node and fills each replica's Hash from its own
// store (chaos/storehash: a copy opened by an embedded standalone server),
// so replicas that agree on sequences, count and bytes but hold other
// messages diverge. A stream the JSZ listed on a node but missing from
// its store, or whose config there is unreadable, gets a Hash saying so.
// When a node's store cannot be read at all, no replica gets a hash (the
// comparison stays on JSZ) and the Note says why.
func withContent(ctx context.Context, reps Replicas, c chaos.Cluster, sd storeDirs) Replicas {
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := chaos.StopNodes(sctx, c.Nodes()...)
	cancel()
	if err != nil {
		reps.Note += fmt.Sprintf("; no content hash: stopping the cluster failed: %v", err)
		return reps
	}
	hashes := map[string]map[string]string{} // node -> stream -> hash
	for _, n := range c.Nodes() {
		hashes[n.Name()] = map[string]string{}
		dir, err := sd.StoreDir(n)
		var streams []storehash.Stream
		if err == nil {
			streams, err = storehash.ReadCopy(ctx, dir, func(s string) bool { return s == movingStream })
		}
		if err != nil {
			reps.Note += fmt.Sprintf("; no content hash: %s's store could not be read: %v", n.Name(), err)
			return reps
		}
		for _, st := range streams {
			h := st.Hash
			if st.Unreadable != "" {
				h = "unreadable: " + st.Unreadable
			}
			hashes[n.Name()][st.Name] = h
		}
	}
	return applyHashes(reps, hashes)
}

// applyHashes sets each replica's Hash from hashes (node -> stream ->
// hash) and judges the replicas again.
func applyHashes(reps Replicas, hashes map[string]map[string]string) Replicas {
	for i, r := range reps.Replicas {
		if r.Stream == movingStream {
			continue
		}
		h, ok := hashes[r.Node][r.Stream]
		if !ok {
			h = "absent from the store"
		}
		reps.Replicas[i].Hash = h
	}
	reps.Diverged = append(reps.Diverged, diverged(reps.Replicas)...)
	slices.Sort(reps.Diverged)
	reps.Diverged = slices.Compact(reps.Diverged)
	reps.Converged = len(reps.Diverged) == 0
	reps.Note += "; hash: SHA-256 over every message (sequence, subject, headers, data) of each node's own store, read after the cluster stopped from a copy opened by an embedded standalone nats-server (chaos/storehash)"
	return reps
}
