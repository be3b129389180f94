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

// TestConsumerLeaderDead: a silent consumer is replaced during the
// stream's election only when this node's replica names a leader on
// another node whose daemon does not answer; anything unknown waits.
func TestConsumerLeaderDead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		leader  string
		replica bool
		want    bool
	}{
		{"the replica follows a dead node", "dead", true, true},
		{"the replica follows a live node", "n3", true, false},
		{"this node leads it", "n2", true, false},
		{"no leader named (an election)", "", true, false},
		{"no replica here (five nodes)", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{d: Deps{Node: "n2",
				PeerAlive:      func(n string) bool { return n != "dead" },
				ConsumerLeader: func(string, string) (string, bool) { return tc.leader, tc.replica },
			}}
			if got := s.consumerLeaderDead("S", "C"); got != tc.want {
				t.Errorf("consumerLeaderDead = %v, want %v", got, tc.want)
			}
		})
	}
	if (&Server{d: Deps{Node: "n2"}}).consumerLeaderDead("S", "C") {
		t.Error("without ConsumerLeader (tests, older wiring) nothing is dead")
	}
}
