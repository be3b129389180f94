package node

import (
	"context"

	"github.com/unibus/clusterkit/membershipd/replicaheal"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// replicaHealLoop snapshots this node's replica of a control-plane or
// heartbeat stream it leads when a follower of it stays stuck catching up
// (nats-server 2.15.2 repairs a diverged follower one entry per 2 s; see
// the replicaheal package). The heartbeat stream needs it most: a stuck
// replica there leaves the gate's majority one fault from stalling.
func (n *Node) replicaHealLoop(ctx context.Context) {
	streams := []string{kv.StreamName(kv.HeartbeatsBucket)}
	for _, b := range kv.Buckets {
		streams = append(streams, kv.StreamName(b.Name))
	}
	replicaheal.New(replicaheal.ServerSource(n.srv), streams, n.log).Run(ctx)
}
