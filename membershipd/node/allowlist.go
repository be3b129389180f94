package node

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
	"github.com/unibus/clusterkit/membershipd/store/sqlite"
)

// allowlist is what the authenticator asks on every connect.
type allowlist interface {
	Lookup(signPub string) (store.User, bool)
	Rooms(signPub string) []string
	Ready() bool
	Admitted(signPub string, cid uint64, rooms []string)
}

// kvAllowlist is the node's in-memory copy of the replicated users bucket,
// kept current by a KV watch (served by the stream leader, so it never
// reads a stale replica). Authentication is a map lookup; it is never the
// only check: the quorum gate comes first.
type kvAllowlist struct {
	mu         sync.RWMutex
	users      map[string]store.User
	rooms      map[string]map[string]bool // member -> rooms
	conns      map[uint64]map[string]bool // connection -> rooms in its ACL
	usersReady bool
	roomsReady bool
	roomsRev   uint64 // last rooms_by_member revision applied
}

func newKVAllowlist() *kvAllowlist {
	return &kvAllowlist{users: map[string]store.User{}, rooms: map[string]map[string]bool{}, conns: map[uint64]map[string]bool{}}
}

func (a *kvAllowlist) Rooms(pub string) []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]string, 0, len(a.rooms[pub]))
	for r := range a.rooms[pub] {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

func (a *kvAllowlist) Admitted(_ string, cid uint64, rooms []string) {
	set := make(map[string]bool, len(rooms))
	for _, r := range rooms {
		set[r] = true
	}
	a.mu.Lock()
	a.conns[cid] = set
	a.mu.Unlock()
}

// addMembership records that member joined room (at KV revision rev).
func (a *kvAllowlist) addMembership(member, room string, rev uint64) {
	a.mu.Lock()
	if a.rooms[member] == nil {
		a.rooms[member] = map[string]bool{}
	}
	a.rooms[member][room] = true
	a.roomsRev = max(a.roomsRev, rev)
	a.mu.Unlock()
}

// RoomsRevision is the last membership revision this node's ACLs reflect.
func (a *kvAllowlist) RoomsRevision() uint64 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.roomsRev
}

// lacks reports whether connection cid was admitted without room.
func (a *kvAllowlist) lacks(cid uint64, room string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return !a.conns[cid][room]
}

func (a *kvAllowlist) forget(cid uint64) {
	a.mu.Lock()
	delete(a.conns, cid)
	a.mu.Unlock()
}

func (a *kvAllowlist) Lookup(pub string) (store.User, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	u, ok := a.users[pub]
	return u, ok
}

func (a *kvAllowlist) Ready() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.usersReady && a.roomsReady
}

func (a *kvAllowlist) set(u store.User) {
	a.mu.Lock()
	a.users[u.SignPub] = u
	a.mu.Unlock()
}

func (a *kvAllowlist) markUsersReady() {
	a.mu.Lock()
	a.usersReady = true
	a.mu.Unlock()
}

func (a *kvAllowlist) markRoomsReady() {
	a.mu.Lock()
	a.roomsReady = true
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
			al.markUsersReady()
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

// watchMemberships keeps the member -> rooms map current from the
// rooms_by_member bucket (keys "<member>.<room>"). A new membership must
// reach the member's live connections: those admitted without the room are
// closed, and the client's reconnect is admitted with the new ACL (nats-
// server cannot change a live connection's permissions).
func (n *Node) watchMemberships(ctx context.Context) {
	al, ok := n.allow.(*kvAllowlist)
	if !ok {
		return
	}
	for ctx.Err() == nil {
		err := n.watchBucket(ctx, kv.RoomsByMemberBucket, func(key string, rev uint64) {
			member, room, ok := strings.Cut(key, ".")
			if !ok {
				return
			}
			al.addMembership(member, room, rev)
			go n.refreshConns(member, room)
		}, func() {
			al.markRoomsReady()
			n.log.Info("memberships loaded")
		})
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("memberships watch ended; restarting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// watchBucket calls fn with every key put into bucket (existing ones first,
// then ready, then new ones) until ctx ends or the watch fails.
func (n *Node) watchBucket(ctx context.Context, bucket string, fn func(key string, rev uint64), ready func()) error {
	b, err := n.js.KeyValue(ctx, bucket)
	if err != nil {
		return err
	}
	w, err := b.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e == nil {
				ready()
				continue
			}
			fn(e.Key(), e.Revision())
		}
	}
}

// refreshConns closes the member's connections on this node whose ACL
// lacks room.
func (n *Node) refreshConns(member, room string) {
	al, ok := n.allow.(*kvAllowlist)
	if !ok || n.srv == nil {
		return
	}
	pub, err := identity.ParseSignPub(member)
	if err != nil {
		return
	}
	cz, err := n.srv.Connz(&server.ConnzOptions{User: identity.NKeyFromSignPub(pub), Limit: 1 << 20})
	if err != nil {
		return
	}
	for _, c := range cz.Conns {
		if al.lacks(c.Cid, room) && n.srv.DisconnectClientByID(c.Cid) == nil {
			al.forget(c.Cid)
			n.log.Info("closed a connection to refresh its ACL", "member", member, "room", room, "cid", c.Cid)
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

// Rooms: a standalone node serves no rooms.
func (a *sqliteAllowlist) Rooms(string) []string { return nil }

func (a *sqliteAllowlist) Admitted(string, uint64, []string) {}

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
