package api

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// placementEvery spaces the placement keeper's rounds.
const placementEvery = 10 * time.Second

// KeepPlacement moves, every placementEvery until ctx ends, the consumers
// of the room streams this node leads off the meta layer's leader and
// onto this node (the stream's leader). pinTarget never puts a consumer on
// the meta leader, but leaders move on their own: after a crash the meta
// layer may elect the node that leads a consumer. A crash of that node
// would then take the consumer's leader and the meta layer at once, and
// the consumer's replacement (a create, through the meta layer) would wait
// for the meta election: a multi-second receive stall from the loss of a
// node that leads neither the client's connection nor the stream. The
// keeper does not know the client's node, so it never moves a consumer
// anywhere else: the stream's leader is the placement of the first
// design, where the loss of any node but the stream's leader costs at most
// a reconnect. The next reset of the consumer places it fully again.
// streamsLed names the streams this node leads.
func (s *Server) KeepPlacement(ctx context.Context, streamsLed func() []string) {
	if s.d.MetaLeader == nil || streamsLed == nil {
		return
	}
	t := time.NewTicker(placementEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.placeOnce(ctx, streamsLed())
	}
}

// whole reports whether every replica of a stream is online and its
// daemon answers (a replica still catching up counts: a new stream's
// followers lag its first messages): only then does the keeper move a consumer's leader. With
// a replica down the consumer's group has two members, a move needs the
// old leader's vote for the new one, and one that did not come left a
// consumer without a leader for a second (measured with a client's own
// re-placement after a failover, since removed); and with a node down, the
// next crash ends the quorum anyway, so the placement matters again only
// once the node is back.
func (s *Server) whole(ci *jetstream.ClusterInfo) bool {
	if ci == nil || ci.Leader == "" {
		return false
	}
	for _, r := range ci.Replicas {
		if r.Offline || (s.d.PeerAlive != nil && !s.d.PeerAlive(r.Name)) {
			return false
		}
	}
	return true
}

// placeOnce is one round of KeepPlacement over the streams this node leads.
func (s *Server) placeOnce(ctx context.Context, led []string) {
	meta := s.d.MetaLeader()
	if meta == "" || meta == s.d.Node {
		// No meta leader (its election: nothing can be moved), or this
		// node leads both: no consumer of these streams can lead from the
		// meta leader without leading from the stream's.
		return
	}
	for _, stream := range led {
		if !strings.HasPrefix(stream, RoomStream("")) || ctx.Err() != nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, pinTimeout)
		st, err := s.d.JS.Stream(rctx, stream)
		if err != nil || !s.whole(st.CachedInfo().Cluster) {
			cancel()
			continue
		}
		l := st.ListConsumers(rctx)
		var move []string
		for ci := range l.Info() {
			if ci.Cluster != nil && ci.Cluster.Leader == meta {
				move = append(move, ci.Name)
			}
		}
		cancel()
		for _, name := range move {
			body, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": s.d.Node}})
			mctx, cancel := context.WithTimeout(ctx, pinTimeout)
			_, err := s.d.JS.Conn().RequestWithContext(mctx, "$JS.API.CONSUMER.LEADER.STEPDOWN."+stream+"."+name, body)
			cancel()
			if s.d.Log != nil {
				s.d.Log.Info("consumer led by the meta leader moved to the stream's leader", "stream", stream, "consumer", name, "from", meta, "to", s.d.Node, "err", err)
			}
		}
	}
}
