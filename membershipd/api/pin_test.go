package api

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestPinTarget: the consumer is led by a current, online follower of the
// stream that is neither the client's node (the answering node when the
// client does not say) nor the meta leader, the same pick on every node;
// with no such follower, by the stream's leader.
func TestPinTarget(t *testing.T) {
	peers := func(rs ...*jetstream.PeerInfo) *jetstream.ClusterInfo {
		return &jetstream.ClusterInfo{Leader: "n1", Replicas: rs}
	}
	cur := func(name string) *jetstream.PeerInfo { return &jetstream.PeerInfo{Name: name, Current: true} }
	for _, tc := range []struct {
		name         string
		meta, client string
		ci           *jetstream.ClusterInfo
		want         string
	}{
		{"the follower that is not the client's", "n1", "n2", peers(cur("n2"), cur("n3")), "n3"},
		{"meta elsewhere: the same", "n2", "n2", peers(cur("n2"), cur("n3")), "n3"},
		{"meta unknown: the same", "", "n2", peers(cur("n2"), cur("n3")), "n3"},
		{"the other follower leads meta: the stream's leader", "n3", "n2", peers(cur("n2"), cur("n3")), "n1"},
		{"client on the stream's leader: the first follower by name", "n1", "n1", peers(cur("n3"), cur("n2")), "n2"},
		{"client on the stream's leader, meta on a follower: the other", "n2", "n1", peers(cur("n3"), cur("n2")), "n3"},
		{"client unknown: the answering node is assumed", "n1", "", peers(cur("n2"), cur("n3")), "n3"},
		{"client outside the stream's peers (five nodes): the first by name", "n1", "n5", peers(cur("n3"), cur("n2")), "n2"},
		{"the other follower lags: the stream's leader", "n1", "n2", peers(cur("n2"), &jetstream.PeerInfo{Name: "n3"}), "n1"},
		{"the other follower is offline: the stream's leader", "n1", "n2", peers(cur("n2"), &jetstream.PeerInfo{Name: "n3", Current: true, Offline: true}), "n1"},
		{"the other follower's daemon does not answer (killed, still listed current): the stream's leader", "n1", "n2", peers(cur("n2"), cur("dead")), "n1"},
		{"no leader: leave it", "n1", "n2", &jetstream.ClusterInfo{Replicas: []*jetstream.PeerInfo{}}, ""},
		{"no cluster (R1): leave it", "n1", "n2", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{d: Deps{Node: "n2", MetaLeader: func() string { return tc.meta }, PeerAlive: func(n string) bool { return n != "dead" }}}
			if got := s.pinTarget(tc.ci, tc.client); got != tc.want {
				t.Errorf("pinTarget = %q, want %q", got, tc.want)
			}
		})
	}
}
