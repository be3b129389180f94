// Package replicaheal un-sticks a stream replica that nats-server 2.15.2
// leaves catching up for minutes after a partition heals.
//
// The case: a stream leader is cut off while its own node keeps writing
// (the heartbeat bucket takes four puts a second from every node). It
// appends those proposals to its log in its old term, uncommitted, until it
// steps down; the majority elects a new leader and goes on. After the heal
// the old leader's log diverges from the new leader's over that whole tail.
// The server repairs it one entry per catchup round: the leader answers a
// catchup request for index i with its entry i+1, whose previous term does
// not match, the follower truncates one entry and cancels the catchup. The
// entries already streamed to it are still processed: every other one asks
// for a catchup on the leader's progress inbox (ignored there), the others
// log "Expected first catchup entry to be a snapshot and peerstate, will
// retry". The next real request goes out only when the catchup stalls, 2 s
// later. A 20 s cut left 72 entries, which took 100 s; it ends sooner only
// when the leader compacts its log past the follower's index (on its own
// every 2-3 min).
//
// The remedy: once the leader's log starts after the follower's index, the
// leader answers with its snapshot, which the follower installs at once. So
// the node that leads the stream, seeing a follower that is alive but has
// not reached what the leader had committed StuckFor ago, snapshots its own
// replica (compacting its log). The follower's next catchup request, within
// 2 s, then gets the snapshot. A snapshot is routine (the server takes one
// every few minutes), so a wrong guess costs nothing.
package replicaheal

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Follower is the leader's view of one follower of a stream's raft group.
type Follower struct {
	Name string
	// Index is the last log index the leader knows the follower holds.
	Index uint64
	// Seen is how long ago the leader last heard from it (< 0: never).
	Seen time.Duration
}

// Group is one stream's raft group as its leader sees it.
type Group struct {
	Stream    string
	Committed uint64
	Followers []Follower
}

// Source is the local server: the groups it leads, and a snapshot of its
// own replica of a stream.
type Source interface {
	// LedGroups returns the groups of streams that this server leads;
	// streams it does not lead are left out.
	LedGroups(streams []string) ([]Group, error)
	// Snapshot installs a snapshot of this server's replica of stream,
	// which compacts its log.
	Snapshot(stream string) error
}

// Defaults: a healthy follower of these small streams reaches the leader's
// commit in well under a second; a stuck one stays behind for minutes.
const (
	DefaultStuckFor = 10 * time.Second
	// DefaultAlive: a stuck follower still asks for a catchup every ~2 s;
	// one not heard from for longer is down or cut off, which a snapshot
	// does not cure (it catches up on its own once it is back).
	DefaultAlive = 5 * time.Second
	// DefaultCooldown between two snapshots of the same stream.
	DefaultCooldown = 30 * time.Second
	DefaultEvery    = time.Second
)

// Healer watches the groups this server leads and snapshots the stream of
// a follower that is stuck behind.
type Healer struct {
	src      Source
	streams  []string
	log      *slog.Logger
	StuckFor time.Duration
	Alive    time.Duration
	Cooldown time.Duration
	Every    time.Duration

	behind map[key]window
	healed map[string]time.Time // stream → last snapshot taken here
}

type key struct{ stream, follower string }

// window: the follower was first seen behind at since, when the leader had
// committed target; it is stuck if it has not reached target StuckFor later.
type window struct {
	since  time.Time
	target uint64
}

// New returns a healer for streams with the default timings.
func New(src Source, streams []string, log *slog.Logger) *Healer {
	return &Healer{
		src: src, streams: streams, log: log,
		StuckFor: DefaultStuckFor, Alive: DefaultAlive, Cooldown: DefaultCooldown, Every: DefaultEvery,
		behind: map[key]window{}, healed: map[string]time.Time{},
	}
}

// Heal is one snapshot taken for a stuck follower.
type Heal struct {
	Stream, Follower string
	Index, Target    uint64
	Err              error
}

// Check looks once and snapshots every stream with a stuck follower.
func (h *Healer) Check(now time.Time) ([]Heal, error) {
	groups, err := h.src.LedGroups(h.streams)
	if err != nil {
		return nil, fmt.Errorf("replica heal: read the led groups: %w", err)
	}
	led := map[key]bool{}
	var out []Heal
	for _, g := range groups {
		var stuck *Heal
		for _, f := range g.Followers {
			k := key{g.Stream, f.Name}
			led[k] = true
			w, ok := h.behind[k]
			switch {
			case f.Seen < 0 || f.Seen > h.Alive:
				// Down or cut off: not a catchup that is stuck.
				delete(h.behind, k)
			case ok && f.Index >= w.target:
				delete(h.behind, k)
			case !ok && f.Index < g.Committed:
				h.behind[k] = window{since: now, target: g.Committed}
			case ok && now.Sub(w.since) >= h.StuckFor && stuck == nil:
				stuck = &Heal{Stream: g.Stream, Follower: f.Name, Index: f.Index, Target: w.target}
			}
		}
		if stuck == nil || now.Sub(h.healed[g.Stream]) < h.Cooldown {
			continue
		}
		stuck.Err = h.src.Snapshot(g.Stream)
		if stuck.Err == nil {
			h.healed[g.Stream] = now
			for k := range h.behind {
				if k.stream == g.Stream {
					delete(h.behind, k)
				}
			}
		}
		out = append(out, *stuck)
	}
	// Leadership moved or the stream is gone: start over if it comes back.
	for k := range h.behind {
		if !led[k] {
			delete(h.behind, k)
		}
	}
	return out, nil
}

// Run checks every h.Every until ctx ends, logging each snapshot it takes.
func (h *Healer) Run(ctx context.Context) {
	t := time.NewTicker(h.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		heals, err := h.Check(time.Now())
		if err != nil {
			h.log.Debug("replica heal check failed", "err", err)
		}
		for _, x := range heals {
			if x.Err != nil {
				h.log.Warn("stream follower stuck catching up; snapshot to compact the leader's log failed, will retry",
					"stream", x.Stream, "follower", x.Follower, "follower_index", x.Index, "target", x.Target, "err", x.Err)
				continue
			}
			h.log.Warn("stream follower stuck catching up; snapshotted the leader's replica so its next catchup gets the snapshot",
				"stream", x.Stream, "follower", x.Follower, "follower_index", x.Index, "target", x.Target, "stuck_for", h.StuckFor)
		}
	}
}
