// Package kv owns the control-plane buckets on JetStream KV: their names and
// settings, opening them (with the bootstrap retry), scaling them in place and
// reporting their replication state.
package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket describes one control-plane bucket.
type Bucket struct {
	Name    string
	History uint8
	TTL     time.Duration
}

// Bucket names the control plane uses by name.
const (
	UsersBucket         = "UNIBUS_users"
	RoomsBucket         = "UNIBUS_rooms"
	MembersBucket       = "UNIBUS_members"
	RoomKeysBucket      = "UNIBUS_room_keys"
	RoomsByMemberBucket = "UNIBUS_rooms_by_member"
)

// NoncesBucket holds the signed control-plane requests' nonces.
const NoncesBucket = "UNIBUS_nonces"

// HeartbeatsBucket holds only the quorum gate's heartbeats. It is
// replicated on every node of the configured cluster (R = N), whatever
// --kv-replicas says: a heartbeat committed by a stream's majority proves a
// majority of the cluster only when the stream spans the cluster. It is not
// in Buckets: `kv scale` must not change it, and it holds no control-plane
// data.
const HeartbeatsBucket = "UNIBUS_heartbeats"

var heartbeats = Bucket{Name: HeartbeatsBucket, History: 1}

// Buckets are the six control-plane buckets, in a fixed order.
var Buckets = []Bucket{
	{Name: "UNIBUS_users", History: 5},
	{Name: "UNIBUS_rooms", History: 5},
	{Name: "UNIBUS_members", History: 5},
	{Name: "UNIBUS_room_keys", History: 5},
	{Name: "UNIBUS_rooms_by_member", History: 5},
	{Name: NoncesBucket, History: 1, TTL: 10 * time.Minute},
}

// StreamName is the JetStream stream that backs a KV bucket.
func StreamName(bucket string) string { return "KV_" + bucket }

// HeartbeatKey is the key a node's quorum gate writes.
func HeartbeatKey(node string) string { return "_hb." + node }

// HeartbeatSubject is the subject a heartbeat put is published on; publishing
// there with a JetStream ack is a KV put that needs no bucket handle (binding
// a handle itself needs the meta quorum).
func HeartbeatSubject(node string) string {
	return "$KV." + HeartbeatsBucket + "." + HeartbeatKey(node)
}

// EnsureHeartbeats creates the heartbeat bucket at R = size, or raises an
// existing one to size (e.g. created before the cluster grew). One attempt;
// the caller retries. An error means the gate must not serve: a heartbeat in
// a bucket below R = N proves nothing about the cluster.
func EnsureHeartbeats(ctx context.Context, js jetstream.JetStream, size int) (Opened, error) {
	return ensureHeartbeats(ctx, js, size, true)
}

// CheckHeartbeats is EnsureHeartbeats for a node that leaves creating and
// raising the bucket to another (the meta leader's node): it only looks.
func CheckHeartbeats(ctx context.Context, js jetstream.JetStream, size int) (Opened, error) {
	return ensureHeartbeats(ctx, js, size, false)
}

// ErrNotCreatedYet: a look-only open found a bucket missing (or below its
// replica count); the node that creates buckets has not got to it yet.
var ErrNotCreatedYet = errors.New("not created yet (the meta leader's node creates it)")

func ensureHeartbeats(ctx context.Context, js jetstream.JetStream, size int, create bool) (Opened, error) {
	name := StreamName(HeartbeatsBucket)
	st, err := look(ctx, js, name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound) && !create:
		return Opened{}, fmt.Errorf("heartbeat bucket %s: %w", HeartbeatsBucket, ErrNotCreatedYet)
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = js.CreateStream(ctx, StreamConfig(heartbeats, size))
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return Opened{}, fmt.Errorf("create heartbeat bucket %s at R%d: %w", HeartbeatsBucket, size, err)
		}
		if err == nil {
			return Opened{Bucket: HeartbeatsBucket, Replicas: size, Created: true}, nil
		}
		// Another node created it at the same moment: check what it made.
		if st, err = js.Stream(ctx, name); err != nil {
			return Opened{}, fmt.Errorf("heartbeat bucket %s: %w", HeartbeatsBucket, err)
		}
	case err != nil:
		return Opened{}, fmt.Errorf("heartbeat bucket %s: %w", HeartbeatsBucket, err)
	}
	cfg := st.CachedInfo().Config
	switch {
	case cfg.Replicas == size:
		return Opened{Bucket: HeartbeatsBucket, Replicas: size}, nil
	case cfg.Replicas > size:
		return Opened{}, fmt.Errorf("heartbeat bucket %s has R%d but the configured cluster size is %d: check --routes on every node",
			HeartbeatsBucket, cfg.Replicas, size)
	}
	if !create {
		return Opened{}, fmt.Errorf("heartbeat bucket %s at R%d, not R%d: %w", HeartbeatsBucket, cfg.Replicas, size, ErrNotCreatedYet)
	}
	from := cfg.Replicas
	cfg.Replicas = size // the full config: a partial update resets History
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return Opened{}, fmt.Errorf("raise heartbeat bucket %s from R%d to R%d: %w", HeartbeatsBucket, from, size, err)
	}
	return Opened{Bucket: HeartbeatsBucket, Replicas: size}, nil
}

// Opened reports how one bucket was found or created.
type Opened struct {
	Bucket   string
	Replicas int
	Created  bool
}

// EnsureAll creates every missing bucket at the given replica count and
// returns what it found. Existing buckets are left at their replica count (a
// lower one is reported by the caller, never silently changed). One attempt:
// the caller owns the retry loop and its budget. Each bucket gets perBucket:
// the meta layer drops requests it gets before it has a leader, and one of
// several nodes creating the same bucket at once may get no reply, so a
// short timeout and a quick retry beat a long wait.
//
// The buckets are ensured concurrently: each create is a meta-layer
// proposal plus a new raft group, and one after the other they add up to
// most of a cluster's start-to-quorum time.
func EnsureAll(ctx context.Context, js jetstream.JetStream, replicas int, perBucket time.Duration) ([]Opened, error) {
	return ensureAll(ctx, js, replicas, perBucket, true)
}

// OpenAll is EnsureAll for a node that leaves creating buckets to another
// (the meta leader's node): a missing bucket is ErrNotCreatedYet. Several
// nodes creating the same buckets at once make the meta leader drop
// replies, so one creator brings a cluster up faster.
func OpenAll(ctx context.Context, js jetstream.JetStream, perBucket time.Duration) ([]Opened, error) {
	return ensureAll(ctx, js, 0, perBucket, false)
}

func ensureAll(ctx context.Context, js jetstream.JetStream, replicas int, perBucket time.Duration, create bool) ([]Opened, error) {
	out := make([]Opened, len(Buckets))
	errs := make([]error, len(Buckets))
	var wg sync.WaitGroup
	for i, b := range Buckets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bctx, cancel := context.WithTimeout(ctx, perBucket)
			defer cancel()
			out[i], errs[i] = ensure(bctx, js, b, replicas, create)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", Buckets[i].Name, err)
		}
	}
	return out, nil
}

// lookTimeout bounds a stream info inside ensure: the meta layer drops
// requests while it settles (a new leader catching up), and a stream
// created a moment ago answers nothing until its first leader, so a short
// look and a retry beat waiting out a create's longer timeout.
const lookTimeout = 300 * time.Millisecond

func look(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	lctx, cancel := context.WithTimeout(ctx, lookTimeout)
	defer cancel()
	return js.Stream(lctx, name)
}

func ensure(ctx context.Context, js jetstream.JetStream, b Bucket, replicas int, create bool) (Opened, error) {
	st, err := look(ctx, js, StreamName(b.Name))
	if err == nil {
		cfg := st.CachedInfo().Config
		return Opened{Bucket: b.Name, Replicas: cfg.Replicas}, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return Opened{}, err
	}
	if !create {
		return Opened{}, ErrNotCreatedYet
	}
	// Create the stream in one request with direct gets off. Going through
	// CreateKeyValue would turn AllowDirect on and need a second update,
	// which waits for the new stream's leader and races the other nodes.
	_, err = js.CreateStream(ctx, StreamConfig(b, replicas))
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return Opened{}, err
	}
	return Opened{Bucket: b.Name, Replicas: replicas, Created: err == nil}, nil
}

// StreamConfig is the stream behind bucket b: what jetstream.CreateKeyValue
// builds, except AllowDirect. Direct gets answer from any replica, stale ones
// included (a minority keeps answering forever), so the control plane reads
// from the stream leader only.
func StreamConfig(b Bucket, replicas int) jetstream.StreamConfig {
	dup := 2 * time.Minute
	if b.TTL > 0 && b.TTL < dup {
		dup = b.TTL
	}
	return jetstream.StreamConfig{
		Name:              StreamName(b.Name),
		Subjects:          []string{"$KV." + b.Name + ".>"},
		MaxMsgsPerSubject: int64(b.History),
		MaxBytes:          -1,
		MaxAge:            b.TTL,
		MaxMsgSize:        -1,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        dup,
		AllowDirect:       false,
		Discard:           jetstream.DiscardNew,
	}
}

// Scale sets every bucket's replica count in place. The full current config
// is sent back: a partial update silently resets History and TTL.
func Scale(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) error {
	for _, b := range Buckets {
		name := StreamName(b.Name)
		err := retryPlacement(ctx, func() error {
			st, err := js.Stream(ctx, name)
			if err != nil {
				return err
			}
			cfg := st.CachedInfo().Config
			if cfg.Replicas == replicas {
				return nil
			}
			from := cfg.Replicas
			cfg.Replicas = replicas
			if _, err := js.UpdateStream(ctx, cfg); err != nil {
				return err
			}
			log.Info("scaled bucket", "bucket", b.Name, "from", from, "to", replicas)
			return nil
		})
		if err != nil {
			return fmt.Errorf("scale %s to R%d: %w", b.Name, replicas, err)
		}
	}
	return nil
}

// retryPlacement retries "no suitable peers" (10005), which the meta layer
// returns for a few seconds after a peer joins.
func retryPlacement(ctx context.Context, f func() error) error {
	for {
		err := f()
		var apiErr *jetstream.APIError
		if err == nil || !errors.As(err, &apiErr) || apiErr.ErrorCode != 10005 {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (still: %v)", ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// State is the replication state of one bucket as its stream reports it.
type State struct {
	Bucket           string `json:"bucket"`
	Replicas         int    `json:"replicas"`
	Leader           string `json:"leader"`
	FollowersCurrent int    `json:"followers_current"`
	Followers        int    `json:"followers"`
	Messages         uint64 `json:"msgs"`
	AllowDirect      bool   `json:"allow_direct"`
	// Created is when the stream was created (a lone node must not have
	// created it: the staggered-start spec checks this).
	Created time.Time `json:"created"`
}

// String renders the runbook's one-line form.
func (s State) String() string {
	leader := s.Leader
	if leader == "" {
		leader = "<none>"
	}
	return fmt.Sprintf("%s: replicas=%d leader=%s followers_current=%d/%d msgs=%d",
		StreamName(s.Bucket), s.Replicas, leader, s.FollowersCurrent, s.Followers, s.Messages)
}

// Inspect reads one bucket's replication state.
func Inspect(ctx context.Context, js jetstream.JetStream, bucket string) (State, error) {
	st, err := js.Stream(ctx, StreamName(bucket))
	if err != nil {
		return State{}, fmt.Errorf("stream info %s: %w", StreamName(bucket), err)
	}
	info := st.CachedInfo()
	s := State{Bucket: bucket, Replicas: info.Config.Replicas, Messages: info.State.Msgs, AllowDirect: info.Config.AllowDirect, Created: info.Created}
	if info.Cluster != nil {
		s.Leader = info.Cluster.Leader
		for _, p := range info.Cluster.Replicas {
			s.Followers++
			if followerCurrent(p) {
				s.FollowersCurrent++
			}
		}
	}
	return s, nil
}

// InspectAll reads every bucket's state.
func InspectAll(ctx context.Context, js jetstream.JetStream) ([]State, error) {
	out := make([]State, 0, len(Buckets))
	for _, b := range Buckets {
		s, err := Inspect(ctx, js, b.Name)
		if err != nil {
			return out, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Explain turns a bucket-open error into what the node is waiting for, so
// each retry log line tells the operator why a lone node does not serve.
func Explain(err error, knownPeers, replicas int) string {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNotCreatedYet):
		return "waiting for the meta leader's node to create the buckets"
	case strings.Contains(err.Error(), "no JetStream meta leader"):
		return "waiting for JetStream meta quorum (no meta leader elected yet)"
	case errors.As(err, &apiErr) && apiErr.ErrorCode == 10005:
		return fmt.Sprintf("R%d placement needs %d peers, %d known", replicas, replicas, knownPeers)
	case errors.As(err, &apiErr) && apiErr.ErrorCode == 10008:
		return "waiting for JetStream meta quorum (JetStream system temporarily unavailable)"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, jetstream.ErrNoStreamResponse),
		strings.Contains(err.Error(), "no responders"), strings.Contains(err.Error(), "timeout"):
		return "waiting for JetStream meta quorum (no reply from the meta layer)"
	default:
		return err.Error()
	}
}

// followerCurrent: a follower counts as current only when the leader saw
// it recently (0 < Active <= currentWindow) and it is not offline, and the
// server calls it Current or it trails by a handful of messages within the
// last second. Active == 0 means "not seen" (nats stream info says so): a
// dead follower, never a current one. The server keeps Current true for up
// to 10s after a peer went silent, hence the window. The nonces bucket takes
// a heartbeat write from every node four times a second, so a healthy
// follower is caught between two of them half the time.
func followerCurrent(p *jetstream.PeerInfo) bool {
	if p.Offline || p.Active <= 0 || p.Active > currentWindow {
		return false
	}
	return p.Current || (p.Active < time.Second && p.Lag <= 8)
}

// currentWindow is how recently the leader must have heard from a follower:
// raft heartbeats go out every second, so three missed ones mean it is gone.
const currentWindow = 3 * time.Second
