package node

import (
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// usersReplica reads which leader this node's own replica of the users
// stream follows, from the local raft node (no request leaves the node, so
// it works exactly when requests to the leader do not). The allowlist rule
// uses it to tell a one-way cut towards the leader (the replica still
// hears the leader) from an election or a stream held elsewhere.
type usersReplica struct {
	srv *server.Server

	mu         sync.Mutex
	acc, group string    // the users stream's raft group, once resolved
	resolvedAt time.Time // last lookup of the group (found or not)
}

// resolveEvery spaces the lookups of the users stream's raft group while
// this node holds no replica (the lookup walks every stream's info).
const resolveEvery = 5 * time.Second

// leader is the server name of the leader the local replica follows (its
// own name when it leads), "" when this node holds no replica or the
// replica knows no leader.
func (u *usersReplica) leader(now time.Time) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.group == "" {
		if !u.resolvedAt.IsZero() && now.Sub(u.resolvedAt) < resolveEvery {
			return ""
		}
		u.resolvedAt = now
		if !u.resolve() {
			return ""
		}
	}
	st := u.srv.Raftz(&server.RaftzOptions{AccountFilter: u.acc, GroupFilter: u.group})
	if st == nil {
		u.group = "" // stream recreated or moved off this node: look again
		return ""
	}
	g, ok := (*st)[u.acc][u.group]
	if !ok || g.Leader == "" {
		return ""
	}
	if g.Leader == g.ID {
		return u.srv.Name()
	}
	if p, ok := g.Peers[g.Leader]; ok && p.Name != "" {
		return p.Name
	}
	return g.Leader
}

// resolve finds the users stream's raft group among this node's streams.
func (u *usersReplica) resolve() bool {
	jsz, err := u.srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true, RaftGroups: true})
	if err != nil {
		return false
	}
	want := kv.StreamName(kv.UsersBucket)
	for _, a := range jsz.AccountDetails {
		for _, s := range a.Streams {
			if s.Name == want && s.RaftGroup != "" {
				u.acc, u.group = a.Name, s.RaftGroup
				return true
			}
		}
	}
	return false
}
