// Package quorum decides whether this membershipd node is part of a
// JetStream majority.
//
// NATS's own health signals fail open on a minority node (healthz stays OK
// for ~15 s, direct KV reads serve stale data, "current" flags lie), so the
// gate uses only evidence NATS cannot fake, and all of it is about the
// configured cluster of N nodes, not about one stream's replicas (at R1, or
// at N=5 with R3 buckets, a cluster minority can hold a stream's majority):
//
//   - our own heartbeat put into a bucket replicated on all N nodes
//     succeeded: a majority of the cluster committed it;
//   - peer daemons answered our pings, each reporting how long ago its own
//     last put succeeded; self plus the peers that answered recently must be
//     a majority of N, always.
//
// The same file decides whether the node's cached allowlist is current
// (DecideAllowlist): it is only as fresh as its last proof of contact with
// the users stream's leader.
//
// The rule is pure and takes explicit times (no time.Now), so recorded
// timelines replay deterministically in tests.
package quorum

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Params tunes the decision rule.
type Params struct {
	// ClusterSize is the number of nodes (N) in the JetStream cluster.
	ClusterSize int
	// WriteFresh: an own put younger than this proves quorum on its own.
	// Also the window in which a peer's put counts as "can currently write".
	WriteFresh time.Duration
	// PeerFresh: a peer answer younger than this counts the peer as reachable.
	PeerFresh time.Duration
	// Grace bounds how long a reachable majority may go without any write
	// (leader election, step-down storm) before it is denied anyway.
	Grace time.Duration
	// CutOff: how long a reachable peer must have been writing while our
	// own writes failed before we call ourselves cut off from the leader
	// (both our last write and the start of the peer's current write
	// streak must be at least this old). Shorter flaps the healthy majority during a leader change
	// (measured in the route-cut spec: a peer wrote ~0.5 s before this
	// node's first put reached the new leader); it bounds the asymmetric-
	// partition exposure to CutOff instead of Grace.
	CutOff time.Duration
	// ListFresh: an allowlist proof (the users stream leader said it holds
	// nothing we have not applied) younger than this keeps the allowlist
	// current on its own. It bounds how long a revocation can go unseen
	// (the claim is 2 s).
	ListFresh time.Duration
	// LeaderSilence: how long the users stream leader this node's own
	// replica follows may leave this node's requests unanswered before
	// the allowlist is stale even though no other node proves either (0
	// disables the rule). It is the one-way cut towards the leader: the
	// leader's appends still reach this node's replica, so it never calls
	// an election, while nothing sent through this node can commit until
	// the leader steps down on lost quorum (10-20 s on 2.15.2) and an
	// election follows (4-9 s more). It must be longer than an election:
	// a replica keeps naming a crashed or paused leader until its own
	// election timer fires (at most 9 s), so shorter would deny the
	// healthy majority at every leader crash.
	LeaderSilence time.Duration
}

// DefaultParams are the measured values: 1 s freshness with 250 ms ticks
// flips a minority in ~1 s; 12 s grace covers elections (≤ ~6.5 s) and
// step-down storms (4–8 s) with margin; a followed users leader silent for
// the same 12 s is not an election (one names no leader after ≤ 9 s).
func DefaultParams(clusterSize int) Params {
	return Params{
		ClusterSize:   clusterSize,
		WriteFresh:    time.Second,
		PeerFresh:     time.Second,
		Grace:         12 * time.Second,
		CutOff:        4 * time.Second,
		ListFresh:     time.Second,
		LeaderSilence: 12 * time.Second,
	}
}

// Majority is the raft quorum size for ClusterSize nodes: N/2+1.
func (p Params) Majority() int { return p.ClusterSize/2 + 1 }

// WriteLead is how much newer than our own last put a peer's put must be
// before "the peer can write but we cannot" denies us. Without it the
// healthy majority would flap at the start of every election: daemons are
// not phase-locked, so a peer's last pre-outage put can trail ours by up to
// a tick (plus latency) and look fresh for that long after ours went stale.
// Our own puts run every tick (well under WriteFresh/2), so a lead of at
// least WriteFresh/2 means we missed write rounds the peer made, while the
// check still fires by ~WriteFresh + one tick after we were cut off.
func (p Params) WriteLead() time.Duration { return p.WriteFresh / 2 }

// Validate reports parameters the rule cannot work with. Decide fails
// closed on them rather than guessing.
func (p Params) Validate() error {
	var errs []error
	if p.ClusterSize < 1 {
		errs = append(errs, fmt.Errorf("cluster size %d < 1", p.ClusterSize))
	}
	if p.WriteFresh <= 0 {
		errs = append(errs, fmt.Errorf("write freshness %v <= 0", p.WriteFresh))
	}
	if p.PeerFresh <= 0 {
		errs = append(errs, fmt.Errorf("peer freshness %v <= 0", p.PeerFresh))
	}
	if p.Grace <= 0 {
		errs = append(errs, fmt.Errorf("grace %v <= 0", p.Grace))
	}
	if p.ListFresh < 0 {
		errs = append(errs, fmt.Errorf("allowlist freshness %v < 0", p.ListFresh))
	}
	if p.LeaderSilence < 0 {
		errs = append(errs, fmt.Errorf("leader silence %v < 0", p.LeaderSilence))
	}
	return errors.Join(errs...)
}

// PeerReport is the latest answer from one peer daemon.
type PeerReport struct {
	Node       string
	AnsweredAt time.Time
	// PutAge is the peer's own last-successful-put age when it answered;
	// negative means the peer has never put.
	PutAge time.Duration
	// PutStreak is how long the peer's puts had then been succeeding
	// without a gap of WriteFresh or more. Negative: unknown (an older
	// peer); the peer then counts as writing for as long as we have not.
	PutStreak time.Duration
	// ListAge is the age of the peer's last allowlist proof when it
	// answered; ListStreak how long its proofs had then been continuous.
	// Negative: none (or a peer that does not report them).
	ListAge, ListStreak time.Duration
	// HopAge and HopStreak are the same for the freshest proof among the
	// peer's own peers (one hop further, the pinger excluded): a node that
	// could commit a revocation is always within two hops of a node in
	// quorum. Negative: none.
	HopAge, HopStreak time.Duration
	// EarlierList and EarlierHop are the peer's earlier runs of proofs
	// (its own, and one hop further), in absolute times, newest last:
	// filled by the Tracker from the reports before this one. A run that
	// ended (a users leader election broke it) still proves that a leader
	// served while this node did not reach it.
	EarlierList, EarlierHop []Span
}

// Span is a run of allowlist proofs: the first at From, the last at To.
type Span struct{ From, To time.Time }

// spanOf is the run a report shows, from its answer time, proof age and
// streak; ok is false when it shows none.
func spanOf(answered time.Time, age, streak time.Duration) (Span, bool) {
	if age < 0 || streak < 0 {
		return Span{}, false
	}
	return Span{From: answered.Add(-streak), To: answered.Add(-age)}, true
}

// maxEarlierRuns bounds the earlier runs kept per peer (and per kind).
const maxEarlierRuns = 8

// carryRuns returns the earlier runs for a new report: prev's, plus prev's
// own run when the new report's run began after it ended (a new run).
func carryRuns(earlier []Span, prev, next Span, prevOK, nextOK bool) []Span {
	if !prevOK {
		return earlier
	}
	if nextOK && !next.From.After(prev.To) {
		return earlier // the same run, extended
	}
	out := append(append([]Span(nil), earlier...), prev)
	if len(out) > maxEarlierRuns {
		out = out[len(out)-maxEarlierRuns:]
	}
	return out
}

// Verdict is the gate's decision plus the evidence behind it.
type Verdict struct {
	InQuorum bool
	// Reason is a one-line explanation; denials always contain "no quorum"
	// and name what is missing.
	Reason string
	// LastPutAge is the age of our last successful put, -1 if never.
	LastPutAge time.Duration
	// ReachablePeers answered within PeerFresh (sorted).
	ReachablePeers []string
	// WritablePeers are reachable peers whose last put (reported age plus
	// time since the answer) is younger than WriteFresh (sorted).
	WritablePeers []string
}

// Decide is the pure decision rule. lastPut is our last successful put
// (zero = never). peers may hold several reports per node (the latest
// answer wins) and is not modified. Callers must not report this node as
// its own peer.
//
// In quorum ⇔ self + reachable peers ≥ Majority, AND (a put sent
// < WriteFresh ago succeeded, OR (our last successful put < Grace ago AND no
// reachable peer has been writing without us for CutOff)). lastPut is the
// time the put was SENT: an ack that took long proves less.
//
// "Writing without us for CutOff" counts from the later of our last put and
// the start of the peer's current write streak: after an election longer
// than CutOff nobody has written for that long, and the first node whose
// put reaches the new leader must not make its peers look cut off before
// their own next put lands (seen in the pause spec: a majority node refused
// a revoke).
func Decide(now time.Time, lastPut time.Time, peers []PeerReport, p Params) Verdict {
	v := Verdict{LastPutAge: -1}
	if err := p.Validate(); err != nil {
		v.Reason = "no quorum: invalid parameters: " + strings.ReplaceAll(err.Error(), "\n", "; ")
		return v
	}

	// Latest answer per peer: older ones carry nothing the newest lacks.
	latest := latestPerPeer(peers)

	everPut := !lastPut.IsZero()
	var ownAge time.Duration
	if everPut {
		ownAge = max(now.Sub(lastPut), 0) // a put "in the future" is just fresh
		v.LastPutAge = ownAge
	}

	var ahead []string // writable peers whose writes lead ours: we are cut off
	quietest := ownAge // youngest write known anywhere, for the grace reason
	for name, r := range latest {
		since := max(now.Sub(r.AnsweredAt), 0)
		if since >= p.PeerFresh {
			continue
		}
		v.ReachablePeers = append(v.ReachablePeers, name)
		if r.PutAge < 0 {
			continue
		}
		eff := addSat(r.PutAge, since)
		quietest = min(quietest, eff)
		if eff >= p.WriteFresh {
			continue
		}
		v.WritablePeers = append(v.WritablePeers, name)
		// The peer's put landed at AnsweredAt-PutAge; compare it to ours.
		if everPut && r.AnsweredAt.Add(-r.PutAge).Sub(lastPut) >= p.WriteLead() && writingWithoutUs(now, lastPut, r) >= p.CutOff {
			ahead = append(ahead, name)
		}
	}
	slices.Sort(v.ReachablePeers)
	slices.Sort(v.WritablePeers)
	slices.Sort(ahead)

	others := p.ClusterSize - 1
	need := p.Majority() - 1
	switch {
	case !everPut:
		v.Reason = "no quorum: no replicated write has succeeded yet (waiting for a JetStream quorum)"
	case len(v.ReachablePeers) < need:
		// Checked before the write: a write committed by a stream's own
		// majority says nothing about the cluster's (R1 buckets, or a
		// heartbeat bucket below R=N).
		v.Reason = fmt.Sprintf("no quorum: last replicated write %s ago; %d of %d peers reachable (need %d)",
			fmtDur(ownAge), len(v.ReachablePeers), others, need)
	case ownAge < p.WriteFresh:
		v.InQuorum = true
		v.Reason = fmt.Sprintf("quorum: replicated write %s ago; %d of %d peers reachable", fmtDur(ownAge), len(v.ReachablePeers), others)
	case len(ahead) > 0:
		// Checked before the grace: it is the more specific diagnosis.
		v.Reason = fmt.Sprintf("no quorum: peers %v can write but this node cannot (cut off from the stream leader); last replicated write %s ago",
			ahead, fmtDur(ownAge))
	case ownAge >= p.Grace:
		v.Reason = fmt.Sprintf("no quorum: last replicated write %s ago exceeds the %v election grace",
			fmtDur(ownAge), p.Grace)
	default:
		v.InQuorum = true
		v.Reason = fmt.Sprintf("quorum (election grace): no node has written for %s; %d of %d peers reachable",
			fmtDur(quietest), len(v.ReachablePeers), others)
	}
	return v
}

// writingWithoutUs is how long peer r has been writing while we have not:
// since the later of our last put and the start of its write streak.
func writingWithoutUs(now, lastPut time.Time, r PeerReport) time.Duration {
	since := lastPut
	if r.PutStreak >= 0 {
		if start := r.AnsweredAt.Add(-r.PutStreak); start.After(since) {
			since = start
		}
	}
	return max(now.Sub(since), 0)
}

// addSat adds non-negative durations without wrapping: a peer may report
// an absurd age and must not come out "fresh" through overflow.
func addSat(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// fmtDur keeps reasons short: ms below a second, tenths above.
func fmtDur(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// Tracker accumulates the daemon's observations and applies Decide. It is
// safe for concurrent use; all times come from the caller.
type Tracker struct {
	p Params

	mu      sync.Mutex
	lastPut time.Time
	// streak is when the current run of puts began: the first success
	// sent WriteFresh or more after the one before it.
	streak time.Time
	peers  map[string]PeerReport
}

// NewTracker returns a Tracker that has seen nothing (so it denies).
func NewTracker(p Params) *Tracker {
	return &Tracker{p: p, peers: make(map[string]PeerReport)}
}

// Params returns the parameters the tracker decides with.
func (t *Tracker) Params() Params { return t.p }

// PutSucceeded records a successful heartbeat put. Results from concurrent
// attempts may arrive out of order; the newest success is kept.
func (t *Tracker) PutSucceeded(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if at.After(t.lastPut) {
		if t.lastPut.IsZero() || at.Sub(t.lastPut) >= t.p.WriteFresh {
			t.streak = at
		}
		t.lastPut = at
	}
}

// PutStreak is how long this node's puts have succeeded without a gap of
// WriteFresh or more, at now (what a pong reports); false if never.
func (t *Tracker) PutStreak(now time.Time) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lastPut.IsZero() {
		return 0, false
	}
	return max(now.Sub(t.streak), 0), true
}

// PeerAnswered records a peer's ping reply carrying its own put age
// (negative = the peer has never put). at must be the local time the
// answer arrived. Answers older than the one held are dropped, so a late
// reply cannot roll a peer's state back.
func (t *Tracker) PeerAnswered(peer string, at time.Time, peerPutAge time.Duration) {
	t.PeerReported(PeerReport{Node: peer, AnsweredAt: at, PutAge: peerPutAge, PutStreak: -1, ListAge: -1, ListStreak: -1, HopAge: -1, HopStreak: -1})
}

// PeerReported records a full peer report (PeerAnswered plus the peer's
// allowlist proof ages).
func (t *Tracker) PeerReported(r PeerReport) {
	peer, at := r.Node, r.AnsweredAt
	if peer == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old, had := t.peers[peer]
	if had && !at.After(old.AnsweredAt) {
		return
	}
	if t.peers == nil {
		t.peers = make(map[string]PeerReport)
	}
	if had {
		// Keep the runs this report no longer shows: its streak restarts
		// when the peer's proofs break, and evidence that a leader served
		// while this node did not reach it must outlive that.
		prev, pok := spanOf(old.AnsweredAt, old.ListAge, old.ListStreak)
		next, nok := spanOf(r.AnsweredAt, r.ListAge, r.ListStreak)
		r.EarlierList = carryRuns(old.EarlierList, prev, next, pok, nok)
		prev, pok = spanOf(old.AnsweredAt, old.HopAge, old.HopStreak)
		next, nok = spanOf(r.AnsweredAt, r.HopAge, r.HopStreak)
		r.EarlierHop = carryRuns(old.EarlierHop, prev, next, pok, nok)
	}
	t.peers[peer] = r
}

// LastPut returns the last successful put, false if there has been none.
func (t *Tracker) LastPut() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastPut, !t.lastPut.IsZero()
}

// Verdict decides at now from everything recorded so far.
func (t *Tracker) Verdict(now time.Time) Verdict {
	lastPut, peers := t.snapshot()
	return Decide(now, lastPut, peers, t.p)
}

// Allowlist decides whether the allowlist with proof lp is current at now,
// using the peers' reports recorded so far.
func (t *Tracker) Allowlist(now time.Time, lp ListProof) ListVerdict {
	_, peers := t.snapshot()
	return DecideAllowlist(now, lp, peers, t.p)
}

// FreshestPeerProof is what a pong relays as Hop*: among the latest
// reports of every peer but exclude, the own allowlist proof proved most
// recently, as (age, streak) at now. ok is false when no peer has one.
func (t *Tracker) FreshestPeerProof(now time.Time, exclude string) (age, streak time.Duration, ok bool) {
	_, peers := t.snapshot()
	var best time.Time
	for _, r := range peers {
		if r.Node == exclude || r.ListAge < 0 || r.ListStreak < 0 {
			continue
		}
		proved := r.AnsweredAt.Add(-r.ListAge)
		if !ok || proved.After(best) {
			best, ok = proved, true
			age, streak = max(now.Sub(proved), 0), max(now.Sub(r.AnsweredAt.Add(-r.ListStreak)), 0)
		}
	}
	return age, streak, ok
}

// AnsweredWithin reports whether peer's daemon answered a ping within d
// before now.
func (t *Tracker) AnsweredWithin(peer string, now time.Time, d time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.peers[peer]
	return ok && now.Sub(r.AnsweredAt) <= d
}

func (t *Tracker) snapshot() (time.Time, []PeerReport) {
	t.mu.Lock()
	defer t.mu.Unlock()
	peers := make([]PeerReport, 0, len(t.peers))
	for _, r := range t.peers {
		peers = append(peers, r)
	}
	return t.lastPut, peers
}
