package node

import (
	"context"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// connSweepEvery is how often the allowlist forgets connections that have
// gone away: nats-server tells a custom authenticator about every new
// connection but about no closed one, so without a sweep the per-connection
// ACL record grows with every reconnect for the life of the process.
const connSweepEvery = 30 * time.Second

// sweepConnsLoop prunes the allowlist's connection records against the
// server's open connections.
func (n *Node) sweepConnsLoop(ctx context.Context) {
	t := time.NewTicker(connSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.sweepConns()
	}
}

// sweepConns forgets every connection record the server no longer has and
// returns how many it dropped.
func (n *Node) sweepConns() int {
	al, ok := n.allow.(*kvAllowlist)
	if !ok || n.srv == nil {
		return 0
	}
	cz, err := n.srv.Connz(&server.ConnzOptions{Limit: 1 << 20})
	if err != nil {
		return 0
	}
	open := make(map[uint64]bool, len(cz.Conns))
	for _, c := range cz.Conns {
		open[c.Cid] = true
	}
	return al.pruneConns(open)
}

// pruneConns drops the records of connections not in open.
func (a *kvAllowlist) pruneConns(open map[uint64]bool) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	dropped := 0
	for cid := range a.conns {
		if !open[cid] {
			delete(a.conns, cid)
			dropped++
		}
	}
	return dropped
}

// connRecords is how many connections the allowlist holds ACL records for.
func (a *kvAllowlist) connRecords() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.conns)
}
