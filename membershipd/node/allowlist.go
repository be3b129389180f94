package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/quorum"
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

	// Freshness: see quorum.DecideAllowlist.
	userRev     map[string]uint64 // revision each user's entry came from
	usersRev    uint64            // every users revision up to here is applied
	provenAt    time.Time         // send time of the newest proof
	streakStart time.Time         // first proof of the current unbroken run
	pending     []pendingProof    // leader answers the allowlist has not caught up with
	// The leader the node's own users replica follows, and since when
	// (quorum.ListProof.Leader).
	replicaLeader      string
	replicaLeaderSince time.Time
	replicaLeaderPing  pingSeen
}

// pendingProof is a leader's answer naming a sequence not applied yet; it
// becomes a proof once the watch delivers that revision.
type pendingProof struct {
	seq    uint64
	sentAt time.Time
}

// maxPending bounds the leader answers kept while behind (one per check).
const maxPending = 16

// appliedUser records a users-bucket entry at revision rev, unless the
// user's entry is already from a later revision (the watch may be served by
// a lagging replica while the catch-up reads the leader). prefix says every
// revision up to rev is now applied. It reports whether u was taken.
func (a *kvAllowlist) appliedUser(u store.User, rev uint64, prefix bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	took := rev > a.userRev[u.SignPub]
	if took {
		a.users[u.SignPub] = u
		a.userRev[u.SignPub] = rev
	}
	if prefix {
		a.advanceLocked(rev)
	}
	return took
}

// advance: every revision up to rev is applied (the leader holds nothing
// else below it).
func (a *kvAllowlist) advance(rev uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.advanceLocked(rev)
}

// applied is the revision up to which everything is applied.
func (a *kvAllowlist) applied() uint64 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.usersRev
}

func (a *kvAllowlist) advanceLocked(rev uint64) {
	if rev > a.usersRev {
		a.usersRev = rev
	}
	kept := a.pending[:0]
	for _, p := range a.pending {
		if p.seq <= a.usersRev {
			a.proveLocked(p.sentAt)
		} else {
			kept = append(kept, p)
		}
	}
	a.pending = kept
}

// leaderSaid records the users stream leader's last sequence, from a
// request sent at sentAt.
func (a *kvAllowlist) leaderSaid(last uint64, sentAt time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.usersReady {
		return // the initial load is still arriving: no proof yet
	}
	if last <= a.usersRev {
		a.proveLocked(sentAt)
		return
	}
	if len(a.pending) == maxPending {
		a.pending = a.pending[1:]
	}
	a.pending = append(a.pending, pendingProof{seq: last, sentAt: sentAt})
}

func (a *kvAllowlist) proveLocked(sentAt time.Time) {
	if !sentAt.After(a.provenAt) {
		return
	}
	if a.provenAt.IsZero() || sentAt.Sub(a.provenAt) >= listStreakGap {
		a.streakStart = sentAt
	}
	a.provenAt = sentAt
}

// listStreakGap: a gap between proofs this long starts a new streak. It is
// the gate's ListFresh: a streak is "unbroken" at the granularity the rule
// judges freshness.
var listStreakGap = quorum.DefaultParams(1).ListFresh

// sawReplicaLeader records the leader the node's own users replica
// follows at now ("" for none), and that leader's daemon's last ping to
// this node.
func (a *kvAllowlist) sawReplicaLeader(leader string, ping pingSeen, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if leader != a.replicaLeader {
		a.replicaLeader, a.replicaLeaderSince = leader, now
	}
	a.replicaLeaderPing = ping
}

// pingedAt is peer's daemon's last ping to this node (zero: never).
func (n *Node) pingedAt(peer string) pingSeen {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pingedBy[peer]
}

// proof is the allowlist's freshness evidence at now.
func (a *kvAllowlist) proof(now time.Time) quorum.ListProof {
	a.mu.RLock()
	defer a.mu.RUnlock()
	lp := quorum.ListProof{Loaded: a.usersReady && a.roomsReady, ProvenAt: a.provenAt,
		Leader: a.replicaLeader, LeaderSince: a.replicaLeaderSince}
	if !a.replicaLeaderPing.at.IsZero() && a.replicaLeaderPing.noQuorum {
		lp.LeaderNoQuorum = a.replicaLeaderPing.at
	}
	if len(a.pending) > 0 {
		p := a.pending[len(a.pending)-1]
		lp.Behind = fmt.Sprintf("applied revision %d < leader's last sequence %d, asked %s ago",
			a.usersRev, p.seq, now.Sub(a.pending[0].sentAt).Round(time.Millisecond))
	}
	return lp
}

// proofAges is what a pong reports: the last proof's age and the current
// streak's length at now, -1 if there has been no proof.
func (a *kvAllowlist) proofAges(now time.Time) (age, streak time.Duration) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.provenAt.IsZero() {
		return -1, -1
	}
	return max(now.Sub(a.provenAt), 0), max(now.Sub(a.streakStart), 0)
}

// behindFor is how long the leader has been ahead of the allowlist (0 if
// it is not).
func (a *kvAllowlist) behindFor(now time.Time) time.Duration {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if len(a.pending) == 0 {
		return 0
	}
	return now.Sub(a.pending[0].sentAt)
}

func newKVAllowlist() *kvAllowlist {
	return &kvAllowlist{users: map[string]store.User{}, userRev: map[string]uint64{},
		rooms: map[string]map[string]bool{}, conns: map[uint64]map[string]bool{}}
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

// advanceRooms marks every membership revision up to rev applied (entries
// that add no membership: deletes, malformed keys).
func (a *kvAllowlist) advanceRooms(rev uint64) {
	a.mu.Lock()
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

// summary is the allowlist in brief for Status.
func (a *kvAllowlist) summary() *clusterinfo.AllowlistSummary {
	a.mu.RLock()
	defer a.mu.RUnlock()
	status := make(map[string]string, len(a.users))
	active := 0
	for k, u := range a.users {
		status[k] = string(u.Status)
		if u.Status == store.StatusActive {
			active++
		}
	}
	return &clusterinfo.AllowlistSummary{Users: len(status), Active: active, Hash: clusterinfo.AllowlistHash(status), AppliedRev: a.usersRev}
}

func (a *kvAllowlist) Ready() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.usersReady && a.roomsReady
}

// usersLoaded reports whether the users bucket's initial load is in.
func (a *kvAllowlist) usersLoaded() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.usersReady
}

// markUsersReady reports whether this call made it ready.
func (a *kvAllowlist) markUsersReady() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	was := a.usersReady
	a.usersReady = true
	return !was
}

func (a *kvAllowlist) markRoomsReady() {
	a.mu.Lock()
	a.roomsReady = true
	a.mu.Unlock()
}

// watchUsers keeps the allowlist current until ctx ends, re-watching after
// errors and whenever restartUsersWatch says the watch stalled. A
// revocation kicks the user's live connections on this node; every node
// runs its own watch, so every node kicks its own.
func (n *Node) watchUsers(ctx context.Context) {
	al, ok := n.allow.(*kvAllowlist)
	if !ok {
		return
	}
	users := kv.NewUsers(n.js)
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		n.mu.Lock()
		n.usersWatchCancel = cancel
		n.mu.Unlock()
		var loadMax uint64 // the initial load's highest revision
		err := users.WatchRevisions(wctx, func(u store.User, rev uint64, loading bool) {
			if loading {
				loadMax = max(loadMax, rev)
			}
			if al.appliedUser(u, rev, !loading) && u.Status == store.StatusRevoked {
				go n.kickUser(u.SignPub, "revoked")
			}
		}, func() {
			al.advance(loadMax)
			if al.markUsersReady() {
				n.log.Info("allowlist loaded")
			}
			// Prove it current now rather than at the next tick: bring-up
			// waits for this proof.
			select {
			case n.proveNow <- struct{}{}:
			default:
			}
		})
		stalled := wctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return
		}
		if stalled {
			continue // restartUsersWatch already logged why; re-watch at once
		}
		n.log.Warn("users watch ended; restarting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Stall handling for the users watch. The watch is an ordered push
// consumer: when its recreation times out (e.g. while the route to the
// stream leader is cut) it stops delivering without ever closing
// Updates(), so nothing would restart it. The freshness check notices
// (the leader is ahead of what we applied, or no proof for long) and
// restarts the watch.
const (
	// behindRestart: the leader has been ahead of the allowlist this long.
	behindRestart = time.Second
	// staleRestart: no proof of contact at all for this long.
	staleRestart = 5 * time.Second
	// restartEvery spaces restarts while the leader stays unreachable.
	restartEvery = 3 * time.Second
)

// catchUpBatch bounds the entries read from the leader per check.
const catchUpBatch = 256

// catchUp applies, from the users stream's leader, every entry after what
// the allowlist holds up to last. The watch normally delivers them first;
// this covers a watch served by a lagging or cut-off replica, or stalled.
func (n *Node) catchUp(ctx context.Context, al *kvAllowlist, last uint64) {
	if !al.Ready() {
		return // the watch's initial load sets the base
	}
	for range catchUpBatch {
		from := al.applied() + 1
		if from > last {
			return
		}
		u, rev, found, err := kv.LeaderNext(ctx, n.nc, from)
		if err != nil {
			return
		}
		if !found || rev > last {
			al.advance(last) // nothing left below last: deleted by history limits
			return
		}
		if al.appliedUser(u, rev, true) {
			n.log.Debug("allowlist caught up from the users stream leader", "user", u.SignPub, "status", u.Status, "revision", rev)
			if u.Status == store.StatusRevoked {
				go n.kickUser(u.SignPub, "revoked")
			}
		}
	}
}

// maybeRestartUsersWatch restarts the users watch if it looks stalled.
func (n *Node) maybeRestartUsersWatch(al *kvAllowlist, now time.Time) {
	why := ""
	if b := al.behindFor(now); b >= behindRestart {
		why = fmt.Sprintf("the users stream leader has been ahead of the allowlist for %s", b.Round(time.Millisecond))
	} else if lp := al.proof(now); lp.Loaded && !lp.ProvenAt.IsZero() && now.Sub(lp.ProvenAt) >= staleRestart {
		why = fmt.Sprintf("no contact with the users stream leader for %s", now.Sub(lp.ProvenAt).Round(time.Millisecond))
	}
	if why == "" {
		return
	}
	n.mu.Lock()
	if now.Sub(n.usersWatchRestarted) < restartEvery || n.usersWatchCancel == nil {
		n.mu.Unlock()
		return
	}
	n.usersWatchRestarted = now
	cancel := n.usersWatchCancel
	n.mu.Unlock()
	n.log.Warn("users watch looks stalled; restarting it", "why", why)
	cancel()
}

// proofLoop asks the users stream's leader for its last sequence every
// tick: an answer the allowlist has caught up with is a proof of
// freshness (quorum.DecideAllowlist).
func (n *Node) proofLoop(ctx context.Context) {
	al, ok := n.allow.(*kvAllowlist)
	if !ok {
		return
	}
	t := time.NewTicker(gateTick)
	defer t.Stop()
	replica := &usersReplica{srv: n.srv}
	for {
		// Read before the check is sent, so a proof is never older than
		// the naming of the leader that gave it.
		leader := replica.leader(time.Now())
		al.sawReplicaLeader(leader, n.pingedAt(leader), time.Now())
		// Before the initial load no answer counts (leaderSaid drops it),
		// and a check sent before the users stream has a leader waits out
		// proofTimeout, delaying the first proof that bring-up waits for.
		first := false // the loaded allowlist still awaits its first proof
		if al.usersLoaded() {
			timeout := proofTimeout
			if age, _ := al.proofAges(time.Now()); age < 0 {
				// A check that is not answered at once was sent before the
				// users stream's first leader; the next one will be.
				first, timeout = true, firstProofTimeout
			}
			sent := time.Now()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			last, _, err := kv.LeaderLastSeq(pctx, n.js)
			if err == nil {
				n.catchUp(pctx, al, last)
				al.leaderSaid(last, sent)
			}
			cancel()
		}
		n.maybeRestartUsersWatch(al, time.Now())
		// Bring-up waits for the first proof: until then, retry soon
		// rather than at the next tick (a few cheap requests, once).
		var soon <-chan time.Time
		if first {
			if age, _ := al.proofAges(time.Now()); age < 0 && time.Since(n.started) < firstProofFor {
				soon = time.After(firstProofRetry)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-soon:
		case <-n.proveNow:
		}
	}
}

// The first allowlist proof after the initial load: bring-up's last step.
const (
	firstProofTimeout = 150 * time.Millisecond
	firstProofRetry   = 20 * time.Millisecond
	// firstProofFor: fast retries only while the node is young; a node
	// whose users stream stays leaderless checks at the tick like any.
	firstProofFor = 30 * time.Second
)

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
		wctx, cancel := context.WithCancel(ctx)
		n.mu.Lock()
		n.roomsWatchCancel = cancel
		n.mu.Unlock()
		err := n.watchBucket(wctx, kv.RoomsByMemberBucket, func(key string, rev uint64) {
			if stallRoomsWatch.Load() {
				return
			}
			n.applyMembership(al, key, rev)
		}, func() {
			al.markRoomsReady()
			n.log.Info("memberships loaded")
		})
		stalled := wctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return
		}
		if stalled {
			continue // roomsCheckLoop logged why; re-watch at once
		}
		n.log.Warn("memberships watch ended; restarting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// stallRoomsWatch makes the memberships watch deliver nothing after its
// initial load, as a stalled watch does (set only by tests).
var stallRoomsWatch atomic.Bool

// applyMembership records a rooms_by_member put ("<member>.<room>") and
// refreshes the member's live connections that lack the room.
func (n *Node) applyMembership(al *kvAllowlist, key string, rev uint64) {
	member, room, ok := strings.Cut(key, ".")
	if !ok {
		al.advanceRooms(rev)
		return
	}
	al.addMembership(member, room, rev)
	go n.refreshConns(member, room)
}

// roomsCheck is how often the node compares its memberships with the
// rooms_by_member stream's leader.
const roomsCheck = 500 * time.Millisecond

// roomsCheckLoop keeps the memberships current when their watch lags or
// has stalled. The watch has the users watch's failure mode (an ordered
// consumer whose recreation times out stops delivering without closing
// Updates()), and there a stalled watch fails closed but for good: a room
// created afterwards is refused on this node ("Permissions Violation")
// until a restart. Every roomsCheck the node asks the stream's leader for
// its last sequence; behind on two checks in a row, it reads the missing
// entries from the leader itself, and lagging that way for behindRestart
// it restarts the watch.
func (n *Node) roomsCheckLoop(ctx context.Context) {
	al, ok := n.allow.(*kvAllowlist)
	if !ok {
		return
	}
	t := time.NewTicker(roomsCheck)
	defer t.Stop()
	var (
		wasBehind bool
		lagSince  time.Time // first check of a run that needed a catch-up
		restarted time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !al.Ready() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, proofTimeout)
		last, _, err := kv.BucketLastSeq(cctx, n.js, kv.RoomsByMemberBucket)
		behind := err == nil && al.RoomsRevision() < last
		switch {
		case behind && wasBehind:
			n.catchUpRooms(cctx, al, last)
			now := time.Now()
			if lagSince.IsZero() {
				lagSince = now
			}
			if now.Sub(lagSince) >= behindRestart && now.Sub(restarted) >= restartEvery {
				restarted = now
				n.mu.Lock()
				stop := n.roomsWatchCancel
				n.mu.Unlock()
				if stop != nil {
					n.log.Warn("memberships watch looks stalled; restarting it (entries read from the stream leader meanwhile)",
						"lagging_for", now.Sub(lagSince).Round(time.Millisecond).String())
					stop()
				}
			}
		case err == nil && !behind:
			lagSince = time.Time{}
		}
		wasBehind = behind
		cancel()
	}
}

// catchUpRooms applies, from the rooms_by_member stream's leader, every
// entry after what the node holds up to last.
func (n *Node) catchUpRooms(ctx context.Context, al *kvAllowlist, last uint64) {
	for range catchUpBatch {
		from := al.RoomsRevision() + 1
		if from > last {
			return
		}
		e, found, err := kv.LeaderNextEntry(ctx, n.nc, kv.RoomsByMemberBucket, from)
		if err != nil {
			return
		}
		if !found || e.Rev > last {
			al.advanceRooms(last) // nothing left below last: deleted by history limits
			return
		}
		if !e.Put { // memberships are never deleted by membershipd; an operator's delete is skipped, as the watch does
			al.advanceRooms(e.Rev)
			continue
		}
		n.log.Info("membership read from the stream leader (the watch lags)", "key", e.Key, "revision", e.Rev)
		n.applyMembership(al, e.Key, e.Rev)
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

// enforceLoop watches the gate (quorum and allowlist freshness); the
// moment it flips to deny, every user connection is closed (new ones are
// refused by the authenticator).
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
		ok, why := n.serving()
		if was && !ok {
			n.kickAll(why)
		}
		was = ok
	}
}
