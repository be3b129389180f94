package node

import (
	"fmt"
	"sync"
	"time"

	"github.com/unibus/clusterkit/membershipd/api"
)

// skewTracker estimates every peer's wall-clock offset from its pongs:
// the peer stamps its answer, and the offset is that stamp minus the
// midpoint of the ping's round trip (error at most half the round trip,
// milliseconds on a LAN). Anti-replay holds only while every pair of nodes
// is within api.MaxClockSkew (the nonce TTL runs on the nonces leader's
// clock, the timestamp window on the serving node's), so a node that sees
// a larger offset refuses signed requests until it is back in range.
type skewTracker struct {
	mu   sync.Mutex
	last map[string]skewSample
}

type skewSample struct {
	offset time.Duration // peer clock minus ours
	at     time.Time     // when we measured it
}

// skewKeep: an offset measured longer ago than this no longer counts (the
// peer stopped answering; the gate decides about that).
const skewKeep = 5 * time.Second

// observe records one pong: sent and got are our clock around the round
// trip, peerMS the peer's clock when it answered.
func (t *skewTracker) observe(peer string, sent, got time.Time, peerMS int64) {
	mid := sent.Add(got.Sub(sent) / 2)
	off := time.UnixMilli(peerMS).Sub(mid)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last == nil {
		t.last = map[string]skewSample{}
	}
	t.last[peer] = skewSample{offset: off, at: got}
}

// problem names a peer whose clock is more than limit off ours, from a
// recent measurement, or "" when every answering peer is within limit.
func (t *skewTracker) problem(now time.Time, limit time.Duration) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for peer, s := range t.last {
		if now.Sub(s.at) > skewKeep {
			continue
		}
		if s.offset > limit || s.offset < -limit {
			return fmt.Sprintf("clock of %s is %s off this node's (more than the %s anti-replay tolerates: run NTP)",
				peer, s.offset.Round(time.Second), limit)
		}
	}
	return ""
}

// apiGate is the control plane's gate: serving, and clocks close enough
// for anti-replay.
func (n *Node) apiGate() (bool, string) {
	if ok, why := n.serving(); !ok {
		return false, why
	}
	if why := n.skew.problem(time.Now(), api.MaxClockSkew); why != "" {
		return false, why
	}
	return true, "serving"
}
