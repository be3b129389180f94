package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Limits bound what one member can make the cluster store.
//
// The disk arithmetic, per node (every node holds a replica of every R3
// stream, so per-node and per-cluster budgets are the same numbers):
//
//	JetStream max_store  S   --js-max-store: nats-server stops every stream on
//	                          this node, control plane included, at S
//	control reserve      R   --control-reserve: kept free for the control-
//	                          plane buckets (users, rooms, members, keys,
//	                          nonces), never given to rooms
//	room stream          B   --room-max-bytes: each room stream's MaxBytes
//	                          (DiscardNew: a full room rejects new messages)
//	room budget              RoomBudget = S - R
//
// A room is created only while (rooms + 1) × B ≤ S − R, so the data plane
// together can never hold more than S − R and the buckets always find R
// free. B × the per-member quota bounds one member's share. The count is
// read before the stream is created, so parallel creations can overshoot
// by one room each; R (1 GiB by default, 64 rooms of the default 16 MiB)
// absorbs that.
type Limits struct {
	RoomMaxBytes   int64 // per room stream
	RoomMaxMsgSize int32 // per message (an E2E envelope adds ~200 bytes)
	RoomMaxMsgs    int64 // per room stream
	// RoomQuota is how many rooms a member may create; AdminRoomQuota an
	// admin. Negative: unlimited.
	RoomQuota, AdminRoomQuota int
	// RoomBudget is the bytes all room streams together may reserve on a
	// node (max_store − control reserve); 0: unbounded.
	RoomBudget int64
}

// Defaults for the room limits; the serve flags start from these.
const (
	DefaultRoomMaxBytes   = 16 << 20
	DefaultRoomMaxMsgSize = 64 << 10
	DefaultRoomMaxMsgs    = 50_000
	DefaultRoomQuota      = 10
	DefaultAdminRoomQuota = 100
)

// DefaultLimits are the limits of a node started without flags.
func DefaultLimits() Limits {
	return Limits{RoomMaxBytes: DefaultRoomMaxBytes, RoomMaxMsgSize: DefaultRoomMaxMsgSize, RoomMaxMsgs: DefaultRoomMaxMsgs,
		RoomQuota: DefaultRoomQuota, AdminRoomQuota: DefaultAdminRoomQuota}
}

// orDefaults fills zero fields (a Deps built without limits).
func (l Limits) orDefaults() Limits {
	d := DefaultLimits()
	if l.RoomMaxBytes == 0 {
		l.RoomMaxBytes = d.RoomMaxBytes
	}
	if l.RoomMaxMsgSize == 0 {
		l.RoomMaxMsgSize = d.RoomMaxMsgSize
	}
	if l.RoomMaxMsgs == 0 {
		l.RoomMaxMsgs = d.RoomMaxMsgs
	}
	if l.RoomQuota == 0 {
		l.RoomQuota = d.RoomQuota
	}
	if l.AdminRoomQuota == 0 {
		l.AdminRoomQuota = d.AdminRoomQuota
	}
	return l
}

// MaxRooms is how many rooms fit the room budget (-1: unbounded).
func (l Limits) MaxRooms() int64 {
	l = l.orDefaults()
	if l.RoomBudget <= 0 {
		return -1
	}
	return l.RoomBudget / l.RoomMaxBytes
}

// quotaFor is the caller's room quota (-1: unlimited).
func (l Limits) quotaFor(u store.User) int {
	l = l.orDefaults()
	if u.Role == identity.RoleAdmin {
		return l.AdminRoomQuota
	}
	return l.RoomQuota
}

// checkRoomQuota refuses a room the caller may not create: past its own
// quota (403), or past the cluster's room budget (507). Zero code: go on.
func (s *Server) checkRoomQuota(ctx context.Context, caller store.User) (int, any) {
	lim := s.d.Limits.orDefaults()
	if q := lim.quotaFor(caller); q >= 0 {
		n, err := s.roomsCreatedBy(ctx, caller.SignPub)
		if err != nil {
			return unavailable("count rooms", err)
		}
		if n >= q {
			return http.StatusForbidden, Error{Error: fmt.Sprintf("room quota reached: %d rooms created, limit %d for role %s (an operator raises it with --room-quota)", n, q, caller.Role)}
		}
	}
	if maxRooms := lim.MaxRooms(); maxRooms >= 0 {
		n, err := s.roomStreams(ctx)
		if err != nil {
			return unavailable("count room streams", err)
		}
		if int64(n) >= maxRooms {
			return http.StatusInsufficientStorage, Error{Error: fmt.Sprintf("room storage budget full: %d rooms of %d bytes fill --js-max-store minus --control-reserve (%d bytes)", n, lim.RoomMaxBytes, lim.RoomBudget)}
		}
	}
	return 0, nil
}

// roomsCreatedBy counts the caller's "creator" rows in the membership
// index with one watch (values included), not a read per room.
func (s *Server) roomsCreatedBy(ctx context.Context, pub string) (int, error) {
	b, err := s.d.JS.KeyValue(ctx, kv.RoomsByMemberBucket)
	if err != nil {
		return 0, err
	}
	w, err := b.Watch(ctx, pub+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return 0, err
	}
	defer func() { _ = w.Stop() }()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case e := <-w.Updates():
			if e == nil { // initial values delivered
				return n, nil
			}
			if string(e.Value()) == "creator" {
				n++
			}
		}
	}
}

// roomStreams counts the room streams in the account.
func (s *Server) roomStreams(ctx context.Context) (int, error) {
	names := s.d.JS.StreamNames(ctx, jetstream.WithStreamListSubject("unibus.room.>"))
	n := 0
	for name := range names.Name() {
		if strings.HasPrefix(name, "ROOM_") {
			n++
		}
	}
	return n, names.Err()
}
