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
// no peer reported an unbroken run of proofs spanning ListFresh after our
// last proof AND (all nodes but one answer OR our last proof < Grace old))).
//
// The grace exists for users-stream leader elections: while no node reaches
// a leader, nobody can commit a revocation either, so the allowlist is as
// current as the last commit. A reachable peer that proves while we cannot
// means a leader exists that we do not reach (an asymmetric cut): that
// denies once the peer's run of proofs after ours spans ListFresh, so a
// revocation committed at time R is enforced (or the node fails closed)
// by about R + ListFresh + a check and a ping, and a leader changeover
// (every node regains contact within a tick or two) does not flap the
// healthy nodes.
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
	// A peer that proved continuously for ListFresh after our last proof
	// shows a leader existed that we did not reach: revocations may have
	// been committed since our proof. Absolute times, so the evidence
	// outlives the peer's own contact (after a heal every leader steps
	// down, and nobody proving then must not excuse what we missed).
	var ahead []string
	for _, r := range latestPerPeer(peers) {
		if r.ListAge < 0 || r.ListStreak < 0 {
			continue
		}
		proved := r.AnsweredAt.Add(-r.ListAge)
		from := r.AnsweredAt.Add(-r.ListStreak)
		if lp.ProvenAt.After(from) {
			from = lp.ProvenAt
		}
		if proved.Sub(from) >= p.ListFresh {
			ahead = append(ahead, r.Node)
		}
	}
	slices.Sort(ahead)
	reachable := 0
	for _, r := range latestPerPeer(peers) {
		if max(now.Sub(r.AnsweredAt), 0) < p.PeerFresh {
			reachable++
		}
	}
	// All nodes but one answer and none reaches a users leader: nobody who
	// could commit a revocation exists. A serving writer reaches the
	// leader, so it would be seen proving itself, or (the unseen node) it
	// reaches a majority, which includes a seen node that then reaches it
	// or the leader. E.g. --kv-replicas 1 with the users host isolated: the
	// majority keeps serving the allowlist it has.
	allButOne := 1+reachable >= p.ClusterSize-1
	switch {
	case len(ahead) > 0:
		v.Reason = fmt.Sprintf("allowlist stale: peers %v reached the users stream leader while this node has not for %s", ahead, fmtDur(own))
	case allButOne:
		v.Fresh = true
		v.Reason = fmt.Sprintf("allowlist current (grace, %d of %d nodes answer): last users stream leader contact %s ago",
			1+reachable, p.ClusterSize, fmtDur(own))
	case own >= p.Grace:
		v.Reason = fmt.Sprintf("allowlist stale: no contact with the users stream leader for %s (exceeds the %v election grace)", fmtDur(own), p.Grace)
	default:
		v.Fresh = true
		v.Reason = fmt.Sprintf("allowlist current (election grace): no reachable node has reached the users stream leader for %s", fmtDur(own))
	}
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
