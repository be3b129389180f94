// Package clusterinfo is the small NATS protocol membershipd nodes use to
// talk about themselves: the quorum gate's peer ping and the status each node
// reports for `membershipd cluster report`. Subjects live under unibus.sys.>,
// which only the internal service identity may use.
package clusterinfo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/unibus/clusterkit/membershipd/store/kv"
)

const (
	// PingSubject: every node answers with a Pong; the gate counts answers.
	PingSubject = "unibus.sys.ping"
	// StatusSubject: every node answers with its Status.
	StatusSubject = "unibus.sys.status"
	// AppliedSubject: every node answers with the membership revision its
	// ACLs reflect, so the control plane can answer a membership change
	// only once every node enforces it.
	AppliedSubject = "unibus.sys.applied"
)

// InboxPrefix is where every request on the internal subjects asks for
// its answers (Collect). Members cannot publish to unibus.sys.> (their
// ACL), but nats-server does not check the reply subject of a publish, so
// a member can have the server deliver there: the answers to its
// JetStream API requests and its fetches ($JS.API.CONSUMER.MSG.NEXT with
// reply unibus.sys.ping). Those arrive with no reply or a $JS.ACK reply,
// never one under InboxPrefix, which only the server's forwarding of a
// genuine internal request produces; Guard drops the rest. (Members can
// reach other clients' exact inbox subjects the same way; inbox subjects
// carry random tokens that a member cannot observe.)
const InboxPrefix = "_UNIBUS_SYS"

// Guard filters the internal subjects' subscribers: see InboxPrefix.
type Guard struct{ ignored atomic.Uint64 }

// Genuine reports whether m is an internal request; anything else is
// counted and must be ignored (not answered: its reply would be an ack
// subject or nothing).
func (g *Guard) Genuine(m *nats.Msg) bool {
	if strings.HasPrefix(m.Reply, InboxPrefix+".") {
		return true
	}
	g.ignored.Add(1)
	return false
}

// Ignored is how many messages Genuine refused.
func (g *Guard) Ignored() uint64 { return g.ignored.Load() }

// Applied is a node's answer on AppliedSubject.
type Applied struct {
	Node     string `json:"node"`
	RoomsRev uint64 `json:"rooms_rev"`
}

// WaitApplied asks every node until each node that answers (a majority
// at least: a stopped node cannot admit anyone) reports a membership
// revision of at least rev, or ctx ends. It returns the nodes that had not
// caught up (empty: all did).
func WaitApplied(ctx context.Context, nc *nats.Conn, size int, rev uint64) []string {
	var behind []string
	for {
		qctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		raw, _ := Collect(qctx, nc, AppliedSubject, size)
		cancel()
		behind = behind[:0]
		answered := 0
		for _, b := range raw {
			var a Applied
			if json.Unmarshal(b, &a) != nil {
				continue
			}
			answered++
			if a.RoomsRev < rev {
				behind = append(behind, a.Node)
			}
		}
		if (answered > size/2 && len(behind) == 0) || ctx.Err() != nil {
			return behind
		}
		select {
		case <-ctx.Done():
			return behind
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Ping is the gate's request on PingSubject. Seq lets the pinger match a
// reply to the ping it answers (and drop replies to old pings).
type Ping struct {
	Node string `json:"node"`
	Seq  uint64 `json:"seq"`
	// NoQuorum: the pinger's own quorum gate denies. A stream leader that
	// says so commits nothing; a node whose replica follows it cannot
	// write through it (the one-way cut towards a leader).
	NoQuorum bool `json:"no_quorum,omitempty"`
}

// Pong is a peer's answer to a ping. PutAgeMS is the age of the peer's own
// last successful heartbeat write (counted from when it was sent), -1 if it
// never had one. ListAgeMS and ListStreakMS are the age of the peer's last
// allowlist proof (contact with the users stream leader) and how long its
// proofs have been continuous, -1 if none. Seq echoes the ping's.
type Pong struct {
	Node     string `json:"node"`
	Seq      uint64 `json:"seq,omitempty"`
	PutAgeMS int64  `json:"put_age_ms"`
	// PutStreakMS is how long the peer's puts have been succeeding without
	// a gap (the gate's cut-off rule weighs it), -1 if unknown.
	PutStreakMS  int64 `json:"put_streak_ms"`
	ListAgeMS    int64 `json:"list_age_ms"`
	ListStreakMS int64 `json:"list_streak_ms"`
	// HopAgeMS and HopStreakMS relay the freshest allowlist proof among the
	// answering node's own peers (the pinger excluded), -1 if none.
	HopAgeMS    int64 `json:"hop_age_ms"`
	HopStreakMS int64 `json:"hop_streak_ms"`
	// NowMS is the answering node's wall clock (Unix ms) when it answered:
	// the pinger estimates the clock offset between the two nodes from it
	// (anti-replay tolerates a bounded skew; see api.MaxClockSkew). 0 from
	// an older peer.
	NowMS int64 `json:"now_ms,omitempty"`
}

// Route is one route as the answering node sees it.
type Route struct {
	Remote string `json:"remote"`
	Conns  int    `json:"conns"`
}

// Status is what a node says about itself.
type Status struct {
	Node       string   `json:"node"`
	Cluster    string   `json:"cluster"`
	Version    string   `json:"version"`
	Routes     []Route  `json:"routes"`
	MetaLeader string   `json:"meta_leader"`
	InQuorum   bool     `json:"in_quorum"`
	Reason     string   `json:"reason"`
	Features   []string `json:"features"`
	// Ignored counts messages on the internal subjects that did not come
	// from an internal connection (see Genuine).
	Ignored uint64 `json:"ignored,omitempty"`
	// Allowlist summarises the node's in-memory copy of the users bucket,
	// so a controller can compare every node's copy with the KV (nil on a
	// standalone SQLite node).
	Allowlist *AllowlistSummary `json:"allowlist,omitempty"`
}

// AllowlistSummary is a node's allowlist in brief: how many users it
// holds, how many are active, AllowlistHash of them, and the users-bucket
// revision up to which it has applied every change.
type AllowlistSummary struct {
	Users      int    `json:"users"`
	Active     int    `json:"active"`
	Hash       string `json:"hash"`
	AppliedRev uint64 `json:"applied_rev"`
}

// AllowlistHash is a digest of a set of users (sign key -> status): the
// same on every node that holds the same users with the same statuses,
// whatever order they arrived in. Both sides of a comparison use it.
func AllowlistHash(status map[string]string) string {
	keys := make([]string, 0, len(status))
	for k := range status {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s %s\n", k, status[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Collect publishes one request on subject and gathers replies until want
// replies arrived or the context ends. It returns what it got; fewer than want
// is not an error here (the caller decides what a missing node means).
func Collect(ctx context.Context, nc *nats.Conn, subject string, want int) ([][]byte, error) {
	// Under InboxPrefix, with a random token: the subscribers answer only
	// such requests (Guard), and no member can subscribe there.
	inbox := InboxPrefix + "." + nuid.Next()
	ch := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", inbox, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("publish %s: %w", subject, err)
	}
	var out [][]byte
	for len(out) < want {
		select {
		case m := <-ch:
			out = append(out, m.Data)
		case <-ctx.Done():
			return out, nil
		}
	}
	return out, nil
}

// CollectStatuses asks every node for its status.
func CollectStatuses(ctx context.Context, nc *nats.Conn, want int) ([]Status, error) {
	raw, err := Collect(ctx, nc, StatusSubject, want)
	if err != nil {
		return nil, err
	}
	out := make([]Status, 0, len(raw))
	for _, b := range raw {
		var s Status
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("decode status reply: %w", err)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

// Report is `membershipd cluster report`.
type Report struct {
	Servers []Status   `json:"servers"`
	Buckets []kv.State `json:"buckets"`
	// Problems lists what the collector could not get (a node that did not
	// answer, a bucket without info); an empty list means a complete report.
	Problems []string `json:"problems,omitempty"`
}

// MetaLeader is the meta leader most nodes agree on ("" if none).
func (r Report) MetaLeader() string {
	votes := map[string]int{}
	for _, s := range r.Servers {
		if s.MetaLeader != "" {
			votes[s.MetaLeader]++
		}
	}
	best, n := "", 0
	for l, v := range votes {
		if v > n || (v == n && l < best) {
			best, n = l, v
		}
	}
	return best
}

// WriteText renders the report for people.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "servers: %d\n", len(r.Servers))
	for _, s := range r.Servers {
		routes := make([]string, 0, len(s.Routes))
		for _, rt := range s.Routes {
			routes = append(routes, fmt.Sprintf("%s(conns=%d)", rt.Remote, rt.Conns))
		}
		q := "in quorum"
		if !s.InQuorum {
			q = "NOT in quorum: " + s.Reason
		}
		fmt.Fprintf(&b, "  %s  cluster=%s routes=[%s] meta_leader=%s  %s\n",
			s.Node, s.Cluster, strings.Join(routes, " "), orNone(s.MetaLeader), q)
	}
	fmt.Fprintf(&b, "meta leader: %s\n", orNone(r.MetaLeader()))
	fmt.Fprintf(&b, "buckets:\n")
	for _, st := range r.Buckets {
		fmt.Fprintf(&b, "  %s\n", st)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// Deadline is the default time a report waits for nodes to answer.
const Deadline = 2 * time.Second
