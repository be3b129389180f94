package node

import (
	"context"
	"time"
)

// bringupTimeline logs, at debug level, when each condition of serving
// first holds after start (the meta leader, the heartbeat bucket at R=N,
// the first heartbeat put, the quorum verdict, the buckets, the allowlist
// and its first freshness proof), then "serving" with the total at info.
// It only observes; start-to-quorum tuning reads it.
func (n *Node) bringupTimeline(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	seen := map[string]bool{}
	mark := func(what string, ok bool) {
		if ok && !seen[what] {
			seen[what] = true
			n.log.Debug("bring-up", "step", what, "after", time.Since(n.started).Round(time.Millisecond).String())
		}
	}
	for {
		mark("meta leader", n.metaLeader() != "")
		mark("heartbeat bucket at R=N", n.heartbeatProblem() == "")
		_, put := n.gate.LastPut()
		mark("first heartbeat put", put)
		v := n.Verdict()
		mark("peers reachable", len(v.ReachablePeers) > 0)
		mark("quorum verdict", v.InQuorum)
		n.mu.Lock()
		opened := n.opened != nil
		n.mu.Unlock()
		mark("buckets open", opened)
		mark("allowlist loaded", n.allow.Ready())
		if lv, ok := n.allowlistVerdict(); ok {
			mark("allowlist proof", lv.Fresh)
		}
		if n.Health().Status == "ok" {
			n.log.Info("serving", "after", time.Since(n.started).Round(time.Millisecond).String())
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
