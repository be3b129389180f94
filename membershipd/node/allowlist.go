package node

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
	"github.com/unibus/clusterkit/membershipd/store/sqlite"
)

// allowlist is what the authenticator asks on every connect.
type allowlist interface {
	Lookup(signPub string) (store.User, bool)
	Ready() bool
}

// kvAllowlist is the node's in-memory copy of the replicated users bucket,
// kept current by a KV watch (served by the stream leader, so it never
// reads a stale replica). Authentication is a map lookup; it is never the
// only check: the quorum gate comes first.
type kvAllowlist struct {
	mu    sync.RWMutex
	users map[string]store.User
	ready bool
}

func newKVAllowlist() *kvAllowlist { return &kvAllowlist{users: map[string]store.User{}} }

func (a *kvAllowlist) Lookup(pub string) (store.User, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	u, ok := a.users[pub]
	return u, ok
}

func (a *kvAllowlist) Ready() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.ready
}

func (a *kvAllowlist) set(u store.User) {
	a.mu.Lock()
	a.users[u.SignPub] = u
	a.mu.Unlock()
}

func (a *kvAllowlist) markReady() {
	a.mu.Lock()
	a.ready = true
	a.mu.Unlock()
}

// watchUsers keeps the allowlist current until ctx ends, re-watching after
// errors. A revocation kicks the user's live connections on this node;
// every node runs its own watch, so every node kicks its own.
func (n *Node) watchUsers(ctx context.Context) {
	al, ok := n.allow.(*kvAllowlist)
	if !ok {
		return
	}
	users := kv.NewUsers(n.js)
	for ctx.Err() == nil {
		err := users.Watch(ctx, func(u store.User) {
			al.set(u)
			if u.Status == store.StatusRevoked {
				go n.kickUser(u.SignPub, "revoked")
			}
		}, func() {
			al.markReady()
			n.log.Info("allowlist loaded")
		})
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("users watch ended; restarting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// sqliteAllowlist reads the local SQLite file directly (a standalone node).
type sqliteAllowlist struct{ st *sqlite.Store }

func (a *sqliteAllowlist) Lookup(pub string) (store.User, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	u, err := a.st.GetUser(ctx, pub)
	return u, err == nil
}

func (a *sqliteAllowlist) Ready() bool { return true }

// sqliteRevocationLoop kicks connections of users revoked in the SQLite
// file (by `user revoke --db` on this host), checking every 500 ms.
func (n *Node) sqliteRevocationLoop(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		users, err := n.users.ListUsers(ctx)
		if err != nil {
			continue
		}
		for _, u := range users {
			if u.Status == store.StatusRevoked {
				n.kickUser(u.SignPub, "revoked")
			}
		}
	}
}

// kickUser closes every connection of one user on this node.
func (n *Node) kickUser(signPub, why string) {
	pub, err := identity.ParseSignPub(signPub)
	if err != nil || n.srv == nil {
		return
	}
	nkey := identity.NKeyFromSignPub(pub)
	cz, err := n.srv.Connz(&server.ConnzOptions{User: nkey, Limit: 1 << 20})
	if err != nil {
		return
	}
	for _, c := range cz.Conns {
		if err := n.srv.DisconnectClientByID(c.Cid); err == nil {
			n.log.Info("closed connection", "user", signPub, "cid", c.Cid, "reason", why)
		}
	}
}

// kickAll closes every client connection on this node but the node's own
// in-process one: a node that lost quorum must not keep serving anyone
// (an on-node CLI mid-write included: it learns "no quorum" at once
// instead of after its write timeout), and its clients fail over sooner.
func (n *Node) kickAll(why string) {
	if n.srv == nil || n.nc == nil {
		return
	}
	self, err := n.nc.GetClientID()
	if err != nil {
		return
	}
	cz, err := n.srv.Connz(&server.ConnzOptions{Limit: 1 << 20})
	if err != nil {
		return
	}
	closed := 0
	for _, c := range cz.Conns {
		if c.Cid == self {
			continue
		}
		if n.srv.DisconnectClientByID(c.Cid) == nil {
			closed++
		}
	}
	if closed > 0 {
		n.log.Warn("closed every client connection", "count", closed, "reason", why)
	}
}

// enforceLoop watches the gate; the moment it flips to no quorum, every
// user connection is closed (new ones are refused by the authenticator).
func (n *Node) enforceLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	was := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, why := n.inQuorum()
		if was && !ok {
			n.kickAll(why)
		}
		was = ok
	}
}
