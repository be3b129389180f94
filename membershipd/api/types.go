// Package api is the HTTPS control plane (port 8470): signed requests,
// nonces, rooms. This file is the wire contract shared with clients
// (clientcheck); the server lives beside it.
package api

import (
	"time"

	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
)

// Paths.
const (
	PathHealthz = "/healthz"
	PathRooms   = "/v1/rooms"                // POST create, GET list mine
	PathRoom    = "/v1/rooms/{room}"         // GET one room I am a member of
	PathMembers = "/v1/rooms/{room}/members" // POST add a member (members only)
	PathRoomKey = "/v1/rooms/{room}/key"     // GET my wrapped room key
	// PathConsumer: POST creates (or finds, or resets) my pull consumer.
	PathConsumer = "/v1/rooms/{room}/consumer"
	PathMe       = "/v1/me"          // GET who the server thinks I am
	PathUsers    = "/v1/admin/users" // GET all users (admins only)
	// PathCluster (unsigned) names the cluster, which clients sign into
	// every request.
	PathCluster = "/v1/cluster"
)

// Request signing: every /v1 request carries these headers (see
// identity.SignRequest for the canonical string).
const (
	HeaderKey       = identity.HeaderKey
	HeaderTimestamp = identity.HeaderTimestamp
	HeaderNonce     = identity.HeaderNonce
	HeaderSignature = identity.HeaderSignature
	HeaderCluster   = identity.HeaderCluster
	// HeaderIdempotencyKey is required on every POST: a retry with the same
	// key (fresh nonce and signature) gets the first attempt's answer.
	HeaderIdempotencyKey = identity.HeaderIdempotencyKey
)

// ClusterInfo is GET /v1/cluster.
type ClusterInfo struct {
	Cluster string `json:"cluster"`
}

// Window is how far a request timestamp may be from the server's clock.
// Nonces are remembered (UNIBUS_nonces TTL 10 min) far longer than this.
const Window = 30 * time.Second

// CreateRoomRequest creates a room; the creator becomes its first member
// and sends the room key wrapped to itself (the server never sees it).
//
// The room id is e2e.RoomID(creator, idempotency key), so the creator
// knows it before asking and wraps and signs for it: KeyFingerprint and
// CommitSig are e2e.SignCommit's, KeySig e2e.SignGrant's for its own
// copy. The server checks them when present; clients refuse a room key
// without them (see e2e.OpenRoomKey).
type CreateRoomRequest struct {
	Name           string `json:"name"`
	WrappedKey     string `json:"wrapped_key"`
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	CommitSig      string `json:"commit_sig,omitempty"`
	KeySig         string `json:"key_sig,omitempty"`
}

// Room is a room as members see it.
type Room struct {
	ID        string    `json:"id"`   // 16 lower-case hex chars
	Name      string    `json:"name"` // 1-64 chars [A-Za-z0-9._-]
	Creator   string    `json:"creator"`
	CreatedAt time.Time `json:"created_at"`
	// Subject is the room's data-plane subject; Stream its JetStream stream.
	Subject string   `json:"subject"` // "unibus.room.<id>.msg"
	Stream  string   `json:"stream"`  // "ROOM_<id>"
	Members []string `json:"members,omitempty"`
	// IDSalt, KeyFingerprint and CommitSig are the creator's commitment
	// (e2e.Commit): ID = e2e.RoomID(Creator, IDSalt).
	IDSalt         string `json:"id_salt,omitempty"`
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	CommitSig      string `json:"commit_sig,omitempty"`
	// MemberRows (GET /v1/rooms/{room} only) are every member's signed
	// key grant, from which a recipient checks who added whom.
	MemberRows []Member `json:"member_rows,omitempty"`
}

// Member is one member of a room with its signed key grant (e2e.Grant).
type Member struct {
	SignPub    string    `json:"sign_pub"`
	Role       string    `json:"role"`
	AddedBy    string    `json:"added_by"`
	AddedAt    time.Time `json:"added_at"`
	WrappedKey string    `json:"wrapped_key,omitempty"`
	KeySig     string    `json:"key_sig,omitempty"`
}

// Commit is the room's creator commitment as e2e checks it.
func (r Room) Commit() e2e.Commit {
	return e2e.Commit{Room: r.ID, Creator: r.Creator, Salt: r.IDSalt, Fingerprint: r.KeyFingerprint, Sig: r.CommitSig}
}

// Grants are the member rows as e2e checks them.
func (r Room) Grants() []e2e.Grant {
	out := make([]e2e.Grant, 0, len(r.MemberRows))
	for _, m := range r.MemberRows {
		out = append(out, e2e.Grant{Member: m.SignPub, AddedBy: m.AddedBy, WrappedKey: m.WrappedKey, Sig: m.KeySig})
	}
	return out
}

// AddMemberRequest adds a registered, active user to a room, with the room
// key wrapped to that user's key by the caller.
// KeySig is the caller's e2e.SignGrant signature over it.
type AddMemberRequest struct {
	SignPub    string `json:"sign_pub"`
	WrappedKey string `json:"wrapped_key"`
	KeySig     string `json:"key_sig,omitempty"`
}

// RoomKey is the caller's wrapped room key, who added the caller and
// their signature over it.
type RoomKey struct {
	Room       string `json:"room"`
	WrappedKey string `json:"wrapped_key"`
	AddedBy    string `json:"added_by,omitempty"`
	KeySig     string `json:"key_sig,omitempty"`
}

// Grant is the key as e2e checks it, for member.
func (k RoomKey) Grant(member string) e2e.Grant {
	return e2e.Grant{Member: member, AddedBy: k.AddedBy, WrappedKey: k.WrappedKey, Sig: k.KeySig}
}

// ConsumerRequest asks for the caller's pull consumer on a room stream.
// DeliverFromSeq 0 keeps an existing consumer as it is (a new one starts at
// sequence 1); otherwise delivery (re)starts at that stream sequence.
//
// ClientNode names the node (NATS server name) the caller's NATS
// connection is on, if it knows it: when the control plane keeps the
// consumer's leader off the stream's leader (see pinTarget), it also keeps
// it off that node, so that the loss of the client's own node never takes
// the consumer's leader with it. Without it the answering node is assumed.
type ConsumerRequest struct {
	DeliverFromSeq uint64 `json:"deliver_from_seq,omitempty"`
	ClientNode     string `json:"client_node,omitempty"`
}

// RoomConsumer names the caller's consumer: fetch with
// $JS.API.CONSUMER.MSG.NEXT.<Stream>.<Consumer>, the only consumer the
// caller's ACL lets it read, ack or inspect.
type RoomConsumer struct {
	Room           string `json:"room"`
	Stream         string `json:"stream"`
	Consumer       string `json:"consumer"`
	DeliverFromSeq uint64 `json:"deliver_from_seq"`
}

// Me is the caller as the server knows it.
type Me struct {
	SignPub string `json:"sign_pub"`
	Handle  string `json:"handle"`
	Role    string `json:"role"`
	Rooms   []Room `json:"rooms"`
	// InboxPrefix is the only inbox the caller's NATS ACL allows.
	InboxPrefix string `json:"inbox_prefix"`
}

// Error is every non-2xx body.
type Error struct {
	Error string `json:"error"`
}

// Subject and stream names of a room.
func RoomSubject(id string) string { return "unibus.room." + id + ".msg" }

// RoomStream is the JetStream stream that stores a room's messages.
func RoomStream(id string) string { return "ROOM_" + id }
