package quorum

import (
	"fmt"
	"slices"
	"time"
)

// ListProof is what a node knows about its own allowlist's freshness.
//
// A proof is a request answered by the users stream's leader (never a direct
// get: any replica answers those, stale ones included) whose last sequence
// the allowlist had applied. ProvenAt is when that request was SENT: the
// allowlist then holds every revision committed before ProvenAt.
type ListProof struct {
	// Loaded: the initial load of the users bucket finished.
	Loaded bool
	// ProvenAt is the send time of the newest proof; zero = never.
	ProvenAt time.Time
	// Behind is non-empty while the leader has answered with a last
	// sequence the allowlist has not applied yet (e.g. "applied 7 < 9").
	// A node in contact with the leader but behind it has no excuse: its
	// watch is stalled.
	Behind string
	// Leader is the users stream leader this node's own replica follows
	// (its raft view), "" when the node holds no replica or the replica
	// knows no leader (an election). LeaderSince is when the replica
	// started naming that leader.
	Leader      string
	LeaderSince time.Time
	// LeaderNoQuorum is when that leader's daemon last told this node, in
	// a ping, that its own gate has no quorum (zero: its last ping did
	// not say so, or none came): its packets reach us, and as a leader it
	// commits nothing.
	LeaderNoQuorum time.Time
}

// ListVerdict is the allowlist decision plus its reason.
type ListVerdict struct {
	Fresh bool
	// Reason is one line; denials start with "allowlist stale" (or say the
	// allowlist is not loaded).
	Reason string
	// ProofAge is the age of our newest proof, -1 if none.
	ProofAge time.Duration
}

// DecideAllowlist is the pure freshness rule for the cached allowlist.
//
// Fresh ⇔ loaded AND (proof < ListFresh old, OR (not behind the leader AND
// no node within two hops (a peer, or the freshest of that peer's peers)
// reported an unbroken run of proofs spanning ListFresh after our last
// proof)).
//
// While no node reaches a users leader (an election, or the stream's
// majority cut away), nobody can commit a revocation either, so the
// allowlist is as current as the last commit. A node that proves while we
// cannot means a leader exists that we do not reach (an asymmetric cut):
// that denies once its run of proofs after ours spans ListFresh, so a
// revocation committed at time R is enforced (or the node fails closed) by
// about R + ListFresh + a check and a ping or two, and a leader changeover
// (every node regains contact within a tick or two) does not flap the
// healthy nodes. The verdict assumes the caller is in quorum (the gate
// checks that first).
//
// One exception to "nobody proves, so nobody can commit": this node's own
// replica follows a leader that has not answered it for LeaderSilence
// (counted from the later of the last proof and the replica naming that
// leader). The leader's packets reach us but ours do not reach it (a
// one-way cut): the leader cannot commit, and the replica hears it, so no
// election starts on this side until the leader steps down on lost quorum
// and an election timeout passes (14-29 s on 2.15.2; in the spec's runs
// no new leader before the 22 s cut ended). A user write through this node
// times out all that while, so the node must not answer 200: it denies
// until its side elects a leader that answers. LeaderSilence is longer
// than an election, as the replica names a crashed leader until its
// election timer fires. When the leader's own pings still reach this node
// saying its gate has no quorum (alive, its packets arriving, and
// committing nothing: not a crash, a pause, a symmetric cut or an election
// elsewhere) CutOff is enough, as for the heartbeat leader. A leader that
// is in quorum but slow to answer (the meta group's election after a heal
// delays stream info for seconds while KV writes commit) is left to the
// 12 s rule: measured, a healthy majority node blinked 503 for 0.5 s after
// each heal when any pinging leader silent for 4 s counted.
func DecideAllowlist(now time.Time, lp ListProof, peers []PeerReport, p Params) ListVerdict {
	v := ListVerdict{ProofAge: -1}
	if err := p.Validate(); err != nil || p.ListFresh <= 0 {
		v.Reason = "allowlist stale: invalid parameters"
		return v
	}
	if !lp.Loaded {
		v.Reason = "allowlist not loaded yet"
		return v
	}
	if lp.ProvenAt.IsZero() {
		if lp.Behind != "" {
			v.Reason = "allowlist stale: behind the users stream leader (" + lp.Behind + ")"
		} else {
			v.Reason = "allowlist stale: no answer from the users stream leader yet"
		}
		return v
	}
	own := max(now.Sub(lp.ProvenAt), 0)
	v.ProofAge = own
	if own < p.ListFresh {
		v.Fresh = true
		v.Reason = fmt.Sprintf("allowlist current: users stream leader confirmed %s ago", fmtDur(own))
		return v
	}
	if lp.Behind != "" {
		v.Reason = fmt.Sprintf("allowlist stale: behind the users stream leader (%s); last proof %s ago", lp.Behind, fmtDur(own))
		return v
	}
	// A node that proved continuously for ListFresh after our last proof
	// shows a leader existed that we did not reach: revocations may have
	// been committed since our proof. Absolute times, so the evidence
	// outlives that node's own contact (after a heal every leader steps
	// down, and nobody proving then must not excuse what we missed).
	// A run that has since ended counts as well: the users leader's
	// election (a cut node's own campaigns start one) restarts every
	// streak, and forgetting the run before it let a cut node serve its
	// stale allowlist for 0.8 s in one chaos run.
	var ahead []string
	for _, r := range latestPerPeer(peers) {
		if spannedAfter(runsOf(r.EarlierList, r.AnsweredAt, r.ListAge, r.ListStreak), lp.ProvenAt, p.ListFresh) {
			ahead = append(ahead, r.Node)
		} else if spannedAfter(runsOf(r.EarlierHop, r.AnsweredAt, r.HopAge, r.HopStreak), lp.ProvenAt, p.ListFresh) {
			ahead = append(ahead, "via "+r.Node)
		}
	}
	slices.Sort(ahead)
	if len(ahead) > 0 {
		v.Reason = fmt.Sprintf("allowlist stale: nodes %v reached the users stream leader while this node has not for %s", ahead, fmtDur(own))
		return v
	}
	if lp.Leader != "" && p.LeaderSilence > 0 {
		from := lp.ProvenAt
		if lp.LeaderSince.After(from) {
			from = lp.LeaderSince
		}
		silent := max(now.Sub(from), 0)
		stuck := !lp.LeaderNoQuorum.IsZero() && now.Sub(lp.LeaderNoQuorum) < p.PeerFresh
		if silent >= p.LeaderSilence || stuck && silent >= p.CutOff {
			how := ""
			if stuck {
				how = " and its pings say it has no quorum"
			}
			v.Reason = fmt.Sprintf("allowlist stale: this node's users replica follows leader %s, which has not answered this node for %s%s (cut off from it one way: a user write through this node cannot commit)",
				lp.Leader, fmtDur(silent), how)
			return v
		}
	}
	// Nobody within two hops reaches a users leader: nobody can commit a
	// revocation. Only a serving node can (the control plane and the CLI
	// are behind this gate); it reaches a majority of N, which shares a
	// node with ours, and that node relays its proofs. E.g. --kv-replicas 1
	// with the users host isolated, or N=5 with the users stream's
	// majority on the minority side: the majority keeps serving the
	// allowlist it has.
	v.Fresh = true
	v.Reason = fmt.Sprintf("allowlist current: last users stream leader contact %s ago, and no node within two hops has been in contact since", fmtDur(own))
	return v
}

// latestPerPeer keeps the newest answer per named peer.
func latestPerPeer(peers []PeerReport) map[string]PeerReport {
	latest := make(map[string]PeerReport, len(peers))
	for _, r := range peers {
		if r.Node == "" || r.AnsweredAt.IsZero() {
			continue
		}
		if old, ok := latest[r.Node]; !ok || r.AnsweredAt.After(old.AnsweredAt) {
			latest[r.Node] = r
		}
	}
	return latest
}

// spannedAfter: one of runs spans at least fresh after since.
func spannedAfter(runs []Span, since time.Time, fresh time.Duration) bool {
	for _, r := range runs {
		from := r.From
		if since.After(from) {
			from = since
		}
		if r.To.Sub(from) >= fresh {
			return true
		}
	}
	return false
}

// runsOf is a report's earlier runs plus the one it shows now (answered
// at, proof age, streak), if any.
func runsOf(earlier []Span, answered time.Time, age, streak time.Duration) []Span {
	if cur, ok := spanOf(answered, age, streak); ok {
		return append(earlier[:len(earlier):len(earlier)], cur)
	}
	return earlier
}
