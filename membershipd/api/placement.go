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

// KeepPlacement keeps, every placementEvery until ctx ends, the consumers
// of the room streams this node leads where pinTarget would put them, when
// they lead from a node that costs a failover more than it must: the
// client's node (ClientNodeMetadata: the node the member last read
// through) or the meta layer's leader. Leaders move on their own, and a
// failover places nothing while a node is down (see whole):
//   - after the client's node died, the member reads through another node,
//     perhaps the one that leads its consumer: that node's crash would then
//     cost a consumer replacement (a second of missed heartbeats and more)
//     where it should cost a reconnect;
//   - after a crash the meta layer may elect the node that leads a
//     consumer: that node's crash would take the consumer's leader and the
//     meta layer at once, and the replacement (a create, through the meta
//     layer) would wait for the meta election, a multi-second stall from
//     the loss of a node that leads neither the client's connection nor
//     the stream.
//
// A consumer without the metadata (made by an older daemon) is only moved
// off the meta leader, onto this node (the stream's leader). streamsLed
// names the streams this node leads. KeepPlacement also records the
// client nodes that consumer requests on this node report (see
// queueClientNote).
func (s *Server) KeepPlacement(ctx context.Context, streamsLed func() []string) {
	if s.d.MetaLeader == nil || streamsLed == nil {
		return
	}
	go s.recordClientNotes(ctx)
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
	if meta == "" {
		// The meta layer's election: where it lands is not known yet.
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
		type move struct{ name, from, to, client string }
		var moves []move
		l := st.ListConsumers(rctx)
		for ci := range l.Info() {
			if ci.Cluster == nil || ci.Cluster.Leader == "" {
				continue
			}
			leader, client := ci.Cluster.Leader, ci.Config.Metadata[ClientNodeMetadata]
			to := s.d.Node
			if client != "" {
				to = s.pinTarget(st.CachedInfo().Cluster, client)
			}
			if (leader == meta || (client != "" && leader == client)) && to != "" && to != leader {
				moves = append(moves, move{ci.Name, leader, to, client})
			}
		}
		cancel()
		for _, m := range moves {
			body, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": m.to}})
			mctx, cancel := context.WithTimeout(ctx, pinTimeout)
			_, err := s.d.JS.Conn().RequestWithContext(mctx, "$JS.API.CONSUMER.LEADER.STEPDOWN."+stream+"."+m.name, body)
			cancel()
			if s.d.Log != nil {
				s.d.Log.Info("consumer moved off the meta leader or the client's node", "stream", stream, "consumer", m.name, "from", m.from, "to", m.to, "meta_leader", meta, "client_node", m.client, "err", err)
			}
		}
	}
}
