package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Deps are what the control plane needs from its node.
type Deps struct {
	Node string
	// Cluster is the cluster's name: a request signed for another cluster
	// is refused (401), so a captured request cannot be replayed there.
	Cluster  string
	JS       jetstream.JetStream // the node's internal connection
	Replicas int                 // room streams get the control plane's replica count
	// MaxConsumers is every new room stream's consumer limit (0:
	// DefaultMaxConsumers). Only the control plane creates consumers, one
	// per member; the limit is the backstop.
	MaxConsumers int
	// Gate is the quorum gate: nothing is served without quorum.
	Gate func() (bool, string)
	// Lookup answers from the node's allowlist.
	Lookup func(signPub string) (store.User, bool)
	// IsMember, when set, answers from the node's memberships (what its
	// ACLs are made of) whether signPub is a member of room id; false
	// means "not known here", and the buckets are read.
	IsMember func(signPub, roomID string) bool
	// MetaLeader, when set, names the JetStream meta layer's leader ("":
	// none or unknown). It decides where a member's consumer is led (see
	// pinTarget).
	MetaLeader func() string
	// PeerAlive, when set, reports whether a node's daemon answers this
	// node now (its pings): a consumer's leader is never moved to a node
	// that does not (nats-server lists a killed node as a current replica
	// for a while, and a step-down naming it leaves the consumer without
	// a leader).
	PeerAlive func(node string) bool
	// ConsumerLeader, when set, names the leader that this node's replica
	// of a consumer follows ("" none known) and whether this node holds a
	// replica: a reset whose consumer is silent replaces it at once when
	// that leader's daemon is dead (see consumerLeaderDead).
	ConsumerLeader func(stream, consumer string) (leader string, replica bool)
	Log            *slog.Logger
	Now            func() time.Time
	// WaitApplied blocks until every node's ACLs reflect membership
	// revision rev (or ctx ends) and returns the nodes still behind.
	WaitApplied func(ctx context.Context, rev uint64) []string
	// AfterStep, when set (tests), is called after each step of a
	// multi-write operation; an error simulates a crash there.
	AfterStep func(step string) error
	// Limits bound room streams and room creation (zero: defaults).
	Limits Limits
}

// Server is the signed HTTPS control plane.
type Server struct {
	d      Deps
	resets resets
	nonces localNonces     // the consumer endpoint's (see recordFailoverNonce)
	notes  chan clientNote // client nodes to record, drained by KeepPlacement
}

// New makes a server; Register mounts it.
func New(d Deps) *Server {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.MaxConsumers <= 0 {
		d.MaxConsumers = DefaultMaxConsumers
	}
	return &Server{d: d, notes: make(chan clientNote, maxPendingNotes)}
}

// Register mounts every /v1 endpoint on mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.Handle("POST "+PathRooms, s.signed(s.createRoom))
	mux.Handle("GET "+PathRooms, s.signed(s.listRooms))
	mux.Handle("GET "+PathRoom, s.signed(s.getRoom))
	mux.Handle("POST "+PathMembers, s.signed(s.addMember))
	mux.Handle("GET "+PathRoomKey, s.signed(s.roomKey))
	mux.Handle("POST "+PathConsumer, s.signedFailover(s.roomConsumer))
	mux.Handle("GET "+PathMe, s.signed(s.me))
	mux.Handle("GET "+PathUsers, s.signed(s.users))
	mux.HandleFunc("GET "+PathCluster, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, ClusterInfo{Cluster: s.d.Cluster})
	})
}

type handler func(ctx context.Context, caller store.User, r *http.Request, body []byte) (int, any)

const maxBody = 64 << 10

// signed authenticates and de-duplicates every request before the handler
// sees it: quorum first (a minority serves nothing), then the signature,
// the timestamp window, the caller's status, and the nonce, recorded with
// create-if-absent in the replicated nonce bucket.
func (s *Server) signed(h handler) http.Handler { return s.signedWith(h, false) }

// signedFailover is signed for the consumer endpoint, which a client's
// failover runs through while the killed node's raft groups elect: its
// nonce may be decided by the node alone when the nonces bucket does not
// answer in time (see recordFailoverNonce), and it keeps no idempotency
// record (a consumer request is idempotent by itself: it names the
// caller's own consumer and where to start it, and running it twice
// starts it there twice). The gate, the signature, the timestamp window
// and the caller's status are checked as for every request.
func (s *Server) signedFailover(h handler) http.Handler { return s.signedWith(h, true) }

func (s *Server) signedWith(h handler, failover bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, why := s.d.Gate(); !ok {
			writeJSON(w, http.StatusServiceUnavailable, Error{Error: why})
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil || len(body) > maxBody {
			writeJSON(w, http.StatusRequestEntityTooLarge, Error{Error: "body too large or unreadable"})
			return
		}
		sr, err := identity.VerifyRequest(r, body)
		if err != nil {
			writeJSON(w, http.StatusUnauthorized, Error{Error: err.Error()})
			return
		}
		if sr.Cluster != s.d.Cluster {
			writeJSON(w, http.StatusUnauthorized, Error{Error: fmt.Sprintf("request signed for cluster %q; this is cluster %q", sr.Cluster, s.d.Cluster)})
			return
		}
		mutating := r.Method != http.MethodGet && r.Method != http.MethodHead
		if mutating && sr.IdempotencyKey == "" {
			writeJSON(w, http.StatusBadRequest, Error{Error: "missing " + identity.HeaderIdempotencyKey + " (one random key per operation, reused by its retries)"})
			return
		}
		if skew := s.d.Now().Sub(sr.Timestamp); skew > Window || skew < -Window {
			writeJSON(w, http.StatusUnauthorized, Error{Error: fmt.Sprintf("stale timestamp (%s off; window %s)", skew.Round(time.Second), Window)})
			return
		}
		caller, ok := s.d.Lookup(sr.SignPub)
		if !ok || caller.Status != store.StatusActive {
			writeJSON(w, http.StatusForbidden, Error{Error: "unknown or revoked key"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		ctx, tr := withTrace(ctx)
		if failover {
			// The nonce is checked beside the handler's reads; the handler
			// waits for it before anything that changes state
			// (nonceChecked), and the answer waits for it too.
			g := &nonceGate{done: make(chan struct{})}
			go func() {
				defer close(g.done)
				start := time.Now()
				g.code, g.err = s.recordFailoverNonce(ctx, sr)
				traceDur(ctx, "nonce", time.Since(start))
			}()
			code, v := h(context.WithValue(ctx, nonceGateKey{}, g), caller, r, body)
			if ncode, err := g.wait(ctx); err != nil {
				if s.d.Log != nil {
					s.d.Log.Info("consumer request refused", append([]any{"path", r.URL.Path, "code", ncode, "err", err}, tr.attrs()...)...)
				}
				code, v = ncode, Error{Error: err.Error()}
			}
			writeJSON(w, code, v)
			return
		}
		if code, err := s.recordNonce(ctx, sr); err != nil {
			writeJSON(w, code, Error{Error: err.Error()})
			return
		}
		traceStep(ctx, "nonce")
		if !mutating {
			code, v := h(ctx, caller, r, body)
			writeJSON(w, code, v)
			return
		}
		s.idempotent(ctx, w, sr, r, body, func() (int, any) {
			traceStep(ctx, "idempotency")
			return h(ctx, caller, r, body)
		})
	})
}

var errReplay = errors.New("replayed request (nonce already used)")

// recordNonce stores the request's nonce with create-if-absent. A nonce
// write that cannot reach quorum is a 503: fail closed, never served. The
// value identifies this attempt, so our own retry after an ambiguous
// timeout is recognised and not mistaken for a replay.
func (s *Server) recordNonce(ctx context.Context, sr identity.SignedRequest) (int, error) {
	key := "n." + sr.SignPub[:16] + "." + sr.Nonce
	mine := []byte(s.d.Node + "|" + randHex(8))
	var last error
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		b, err := s.d.JS.KeyValue(ctx, kv.NoncesBucket)
		if err != nil {
			last = err
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		_, err = b.Create(actx, key, mine)
		cancel()
		if err == nil {
			return 0, nil
		}
		if errors.Is(err, jetstream.ErrKeyExists) {
			e, gerr := b.Get(ctx, key)
			if gerr == nil && bytes.Equal(e.Value(), mine) {
				return 0, nil // our own earlier attempt committed
			}
			return http.StatusConflict, errReplay
		}
		last = err
	}
	return http.StatusServiceUnavailable, fmt.Errorf("no quorum: could not record the request nonce (%v)", last)
}

var roomNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// memberRecord is the value in UNIBUS_members.
type memberRecord struct {
	Role    string    `json:"role"` // creator or member
	AddedBy string    `json:"added_by"`
	AddedAt time.Time `json:"added_at"`
}

// keyRecord is the value in UNIBUS_room_keys: the wrapped key with its
// adder's signature (e2e.Grant). Rows written before signatures were a
// bare wrapped key; clients refuse those.
type keyRecord struct {
	WrappedKey string `json:"wrapped_key"`
	AddedBy    string `json:"added_by,omitempty"`
	KeySig     string `json:"key_sig,omitempty"`
}

func decodeKeyRecord(raw []byte) keyRecord {
	var k keyRecord
	if len(raw) > 0 && raw[0] == '{' && json.Unmarshal(raw, &k) == nil {
		return k
	}
	return keyRecord{WrappedKey: string(raw)}
}

func (s *Server) createRoom(ctx context.Context, caller store.User, r *http.Request, body []byte) (int, any) {
	var req CreateRoomRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return http.StatusBadRequest, Error{Error: "body: " + err.Error()}
	}
	if !roomNameRE.MatchString(req.Name) {
		return http.StatusBadRequest, Error{Error: "name: 1-64 characters of A-Z a-z 0-9 . _ -"}
	}
	if req.WrappedKey == "" {
		return http.StatusBadRequest, Error{Error: "wrapped_key: the room key wrapped to the creator is required"}
	}
	if code, v := s.checkRoomQuota(ctx, caller); code != 0 {
		return code, v
	}
	// The id follows from the caller and the idempotency key, so a retry
	// whose first attempt crashed midway completes the same room instead
	// of making a second one.
	salt := r.Header.Get(identity.HeaderIdempotencyKey)
	id := e2e.RoomID(caller.SignPub, salt)
	now := s.d.Now().UTC()
	room := Room{ID: id, Name: req.Name, Creator: caller.SignPub, CreatedAt: now, Subject: RoomSubject(id), Stream: RoomStream(id),
		IDSalt: salt, KeyFingerprint: req.KeyFingerprint, CommitSig: req.CommitSig}
	// Signatures are checked when present, for a clear answer to a broken
	// client; members' clients check them anyway (e2e.OpenRoomKey), since
	// whoever can write the buckets bypasses this.
	if req.KeyFingerprint != "" || req.CommitSig != "" {
		if err := room.Commit().Verify(); err != nil {
			return http.StatusBadRequest, Error{Error: err.Error() + " (sign the fingerprint for room id e2e.RoomID(you, idempotency key))"}
		}
	}
	if req.KeySig != "" {
		if err := (e2e.Grant{Member: caller.SignPub, AddedBy: caller.SignPub, WrappedKey: req.WrappedKey, Sig: req.KeySig}).Verify(id); err != nil {
			return http.StatusBadRequest, Error{Error: err.Error()}
		}
	}
	if raw, err := s.get(ctx, kv.RoomsBucket, id); err == nil {
		var prev Room
		if json.Unmarshal(raw, &prev) == nil && prev.Creator == caller.SignPub {
			room = prev // a retry: keep the first attempt's record
		}
	}
	// The stream first: a room record never points at a missing stream.
	if _, err := s.d.JS.CreateStream(ctx, RoomStreamConfig(id, s.d.Replicas, s.d.MaxConsumers, s.d.Limits)); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return unavailable("create room stream", err)
	}
	if err := s.step("stream"); err != nil {
		return unavailable("create room", err)
	}
	if err := s.put(ctx, kv.RoomsBucket, id, room); err != nil {
		return unavailable("record room", err)
	}
	if err := s.step("room"); err != nil {
		return unavailable("create room", err)
	}
	if code, v := s.addMembership(ctx, room, caller.SignPub, caller.SignPub, "creator", req.WrappedKey, req.KeySig); code != 0 {
		return code, v
	}
	room.Members = []string{caller.SignPub}
	return http.StatusCreated, room
}

// RoomStreamConfig is a room's stream: R3 like the control plane (the
// servers run SyncAlways), de-duplication by Nats-Msg-Id for 2 minutes so
// a publisher's retry after an ambiguous ack is stored once, at most
// maxConsumers consumers (members get one each, made by the control plane).
// Bounded in bytes, messages and message size (see Limits for the disk
// arithmetic); a full room rejects new messages (DiscardNew) so a flood is
// visible to the flooder instead of silently erasing the room's history.
func RoomStreamConfig(id string, replicas, maxConsumers int, lim Limits) jetstream.StreamConfig {
	lim = lim.orDefaults()
	return jetstream.StreamConfig{
		Name:       RoomStream(id),
		Subjects:   []string{"unibus.room." + id + ".>"},
		Storage:    jetstream.FileStorage,
		Replicas:   replicas,
		Duplicates: 2 * time.Minute,
		MaxAge:     30 * 24 * time.Hour,
		MaxBytes:   lim.RoomMaxBytes,
		MaxMsgs:    lim.RoomMaxMsgs,
		MaxMsgSize: lim.RoomMaxMsgSize,
		Discard:    jetstream.DiscardNew,
		// Not editable later: a room keeps the limit it was created with.
		MaxConsumers: maxConsumers,
	}
}

// addMembership writes the three rows of a membership: the member row,
// the wrapped key, and last the ACL index (the nodes' ACLs follow it). A
// retry after a failure at any step completes the missing ones; only a
// membership with all three is "already a member" (409). An existing
// wrapped key is never overwritten.
func (s *Server) addMembership(ctx context.Context, room Room, member, by, role, wrapped, keySig string) (int, any) {
	rec := memberRecord{Role: role, AddedBy: by, AddedAt: s.d.Now().UTC()}
	b, err := s.d.JS.KeyValue(ctx, kv.MembersBucket)
	if err != nil {
		return unavailable("members bucket", err)
	}
	val, _ := json.Marshal(rec)
	key := room.ID + "." + member
	complete := false
	if _, err := b.Create(ctx, key, val); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return unavailable("record membership", err)
		}
		complete = true // unless a later step is missing
	}
	if err := s.step("member"); err != nil {
		return unavailable("record membership", err)
	}
	switch _, err := s.get(ctx, kv.RoomKeysBucket, key); {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		complete = false
		if err := s.put(ctx, kv.RoomKeysBucket, key, keyRecord{WrappedKey: wrapped, AddedBy: by, KeySig: keySig}); err != nil {
			return unavailable("store wrapped key", err)
		}
	case err != nil:
		return unavailable("read wrapped key", err)
	}
	if err := s.step("key"); err != nil {
		return unavailable("store wrapped key", err)
	}
	b2, err := s.d.JS.KeyValue(ctx, kv.RoomsByMemberBucket)
	if err != nil {
		return unavailable("index membership", err)
	}
	if _, err := b2.Get(ctx, member+"."+room.ID); err == nil && complete {
		return http.StatusConflict, Error{Error: "already a member"}
	} else if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return unavailable("read membership index", err)
	}
	rev, err := b2.Put(ctx, member+"."+room.ID, []byte(role))
	if err != nil {
		return unavailable("index membership", err)
	}
	// Answer once every node enforces the membership, so a client that
	// connects anywhere right after the answer already has the room.
	if s.d.WaitApplied != nil {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		behind := s.d.WaitApplied(wctx, rev)
		cancel()
		if len(behind) > 0 && s.d.Log != nil {
			s.d.Log.Warn("membership not yet applied on every node", "member", member, "room", room.ID, "behind", behind)
		}
	}
	return 0, nil
}

func (s *Server) addMember(ctx context.Context, caller store.User, r *http.Request, body []byte) (int, any) {
	room, code, v := s.memberRoom(ctx, caller, r.PathValue("room"))
	if code != 0 {
		return code, v
	}
	var req AddMemberRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return http.StatusBadRequest, Error{Error: "body: " + err.Error()}
	}
	pub, err := store.CanonicalKey(req.SignPub)
	if err != nil {
		return http.StatusBadRequest, Error{Error: "sign_pub: " + err.Error()}
	}
	if u, ok := s.d.Lookup(pub); !ok || u.Status != store.StatusActive {
		return http.StatusNotFound, Error{Error: "no active user with that key"}
	}
	if req.WrappedKey == "" {
		return http.StatusBadRequest, Error{Error: "wrapped_key: the room key wrapped to the new member is required"}
	}
	if req.KeySig != "" {
		if err := (e2e.Grant{Member: pub, AddedBy: caller.SignPub, WrappedKey: req.WrappedKey, Sig: req.KeySig}).Verify(room.ID); err != nil {
			return http.StatusBadRequest, Error{Error: err.Error()}
		}
	}
	if code, v := s.addMembership(ctx, room, pub, caller.SignPub, "member", req.WrappedKey, req.KeySig); code != 0 {
		return code, v
	}
	return http.StatusCreated, map[string]string{"room": room.ID, "member": pub}
}

// memberRoom loads a room the caller belongs to; anything else is 404, so
// a non-member learns nothing about the room.
func (s *Server) memberRoom(ctx context.Context, caller store.User, id string) (Room, int, any) {
	if !roomIDRE.MatchString(id) {
		return Room{}, http.StatusNotFound, Error{Error: "no such room"}
	}
	if _, err := s.get(ctx, kv.MembersBucket, id+"."+caller.SignPub); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Room{}, http.StatusNotFound, Error{Error: "no such room"}
		}
		c, v := unavailable("read membership", err)
		return Room{}, c, v
	}
	raw, err := s.get(ctx, kv.RoomsBucket, id)
	if err != nil {
		c, v := unavailable("read room", err)
		return Room{}, c, v
	}
	var room Room
	if err := json.Unmarshal(raw, &room); err != nil {
		return Room{}, http.StatusInternalServerError, Error{Error: "corrupt room record"}
	}
	return room, 0, nil
}

// consumerRoom is memberRoom for the consumer endpoint. A membership the
// node's own memberships hold is taken from there, without reading the
// members and rooms buckets: a client's failover must not wait out those
// buckets' elections when the killed node led them. It grants nothing
// the node does not already grant: the same memberships make the ACL
// that lets the caller's connections fetch from this very consumer.
// Memberships are never removed (there is no leave; a revoked caller is
// refused before any handler, by its status), and the index row the node
// learns them from is written last of a membership's rows, so one the
// node holds is complete. The room's stream name follows from its id. A
// membership the node does not hold (yet: its watch may lag) is read from
// the buckets.
func (s *Server) consumerRoom(ctx context.Context, caller store.User, id string) (Room, int, any) {
	if s.d.IsMember != nil && roomIDRE.MatchString(id) && s.d.IsMember(caller.SignPub, id) {
		return Room{ID: id, Stream: RoomStream(id)}, 0, nil
	}
	return s.memberRoom(ctx, caller, id)
}

var roomIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

func (s *Server) getRoom(ctx context.Context, caller store.User, r *http.Request, _ []byte) (int, any) {
	room, code, v := s.memberRoom(ctx, caller, r.PathValue("room"))
	if code != 0 {
		return code, v
	}
	b, err := s.d.JS.KeyValue(ctx, kv.MembersBucket)
	if err != nil {
		return unavailable("members bucket", err)
	}
	keys, err := b.ListKeysFiltered(ctx, room.ID+".*")
	if err != nil {
		return unavailable("list members", err)
	}
	for k := range keys.Keys() {
		room.Members = append(room.Members, strings.TrimPrefix(k, room.ID+"."))
	}
	sort.Strings(room.Members)
	// Every member's row with its signed key grant, so a member can check
	// who added whom (e2e.Legitimate). A member whose rows are half
	// written is listed without a key.
	for _, m := range room.Members {
		row := Member{SignPub: m}
		if raw, err := b.Get(ctx, room.ID+"."+m); err == nil {
			var rec memberRecord
			if json.Unmarshal(raw.Value(), &rec) == nil {
				row.Role, row.AddedBy, row.AddedAt = rec.Role, rec.AddedBy, rec.AddedAt
			}
		}
		switch raw, err := s.get(ctx, kv.RoomKeysBucket, room.ID+"."+m); {
		case err == nil:
			k := decodeKeyRecord(raw)
			row.WrappedKey, row.KeySig = k.WrappedKey, k.KeySig
			if k.AddedBy != "" {
				row.AddedBy = k.AddedBy
			}
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return unavailable("read wrapped keys", err)
		}
		room.MemberRows = append(room.MemberRows, row)
	}
	return http.StatusOK, room
}

func (s *Server) roomKey(ctx context.Context, caller store.User, r *http.Request, _ []byte) (int, any) {
	room, code, v := s.memberRoom(ctx, caller, r.PathValue("room"))
	if code != 0 {
		return code, v
	}
	raw, err := s.get(ctx, kv.RoomKeysBucket, room.ID+"."+caller.SignPub)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Retrying cannot help: a member must add the caller again (which
		// completes the membership).
		return http.StatusNotFound, Error{Error: "no wrapped room key for you in this room; ask a member to add you again"}
	}
	if err != nil {
		return unavailable("read wrapped key", err)
	}
	k := decodeKeyRecord(raw)
	return http.StatusOK, RoomKey{Room: room.ID, WrappedKey: k.WrappedKey, AddedBy: k.AddedBy, KeySig: k.KeySig}
}

func (s *Server) myRooms(ctx context.Context, caller store.User) ([]Room, error) {
	b, err := s.d.JS.KeyValue(ctx, kv.RoomsByMemberBucket)
	if err != nil {
		return nil, err
	}
	keys, err := b.ListKeysFiltered(ctx, caller.SignPub+".*")
	if err != nil {
		return nil, err
	}
	rooms := []Room{}
	for k := range keys.Keys() {
		raw, err := s.get(ctx, kv.RoomsBucket, strings.TrimPrefix(k, caller.SignPub+"."))
		if err != nil {
			return nil, err
		}
		var room Room
		if json.Unmarshal(raw, &room) == nil {
			rooms = append(rooms, room)
		}
	}
	sort.Slice(rooms, func(i, j int) bool { return rooms[i].CreatedAt.Before(rooms[j].CreatedAt) })
	return rooms, nil
}

func (s *Server) listRooms(ctx context.Context, caller store.User, _ *http.Request, _ []byte) (int, any) {
	rooms, err := s.myRooms(ctx, caller)
	if err != nil {
		return unavailable("list rooms", err)
	}
	return http.StatusOK, rooms
}

func (s *Server) me(ctx context.Context, caller store.User, _ *http.Request, _ []byte) (int, any) {
	rooms, err := s.myRooms(ctx, caller)
	if err != nil {
		return unavailable("list rooms", err)
	}
	return http.StatusOK, Me{SignPub: caller.SignPub, Handle: caller.Handle, Role: string(caller.Role), Rooms: rooms,
		InboxPrefix: "_INBOX_" + caller.SignPub[:16]}
}

func (s *Server) users(ctx context.Context, caller store.User, _ *http.Request, _ []byte) (int, any) {
	if caller.Role != identity.RoleAdmin {
		return http.StatusForbidden, Error{Error: "admins only"}
	}
	users, err := kv.NewUsers(s.d.JS).ListUsers(ctx)
	if err != nil {
		return unavailable("list users", err)
	}
	return http.StatusOK, users
}

func (s *Server) get(ctx context.Context, bucket, key string) ([]byte, error) {
	b, err := s.d.JS.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	e, err := b.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

func (s *Server) put(ctx context.Context, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.putRaw(ctx, bucket, key, b)
}

func (s *Server) putRaw(ctx context.Context, bucket, key string, val []byte) error {
	b, err := s.d.JS.KeyValue(ctx, bucket)
	if err != nil {
		return err
	}
	_, err = b.Put(ctx, key, val)
	return err
}

// unavailable: a control-plane read or write that did not complete is a
// 503 (the gate said quorum a moment ago; the write path disagrees).
func unavailable(what string, err error) (int, any) {
	return http.StatusServiceUnavailable, Error{Error: fmt.Sprintf("%s: %v", what, err)}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// step runs the test hook after a step of a multi-write operation.
func (s *Server) step(name string) error {
	if s.d.AfterStep == nil {
		return nil
	}
	return s.d.AfterStep(name)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
