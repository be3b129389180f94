package quorum

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// listNode is one node's contact with the users stream leader: a proof
// check every tick at its phase, succeeding when proves says so.
type listNode struct {
	name    string
	phase   time.Duration
	proves  cond
	answers cond // peers only
}

// proofs returns the send times of n's successful proofs until end.
func (n listNode) proofs(end time.Duration) []time.Duration {
	var out []time.Duration
	for at := n.phase; at < end; at += tick {
		if n.proves(at) {
			out = append(out, at)
		}
	}
	return out
}

// replayList simulates self's view: own proofs promote at once, peers
// answer our pings with their proof age and streak (a streak restarts after
// a gap of ListFresh, as the daemon computes it). It returns the verdict
// sampled every step.
func replayList(t *testing.T, p Params, self listNode, peers []listNode, end time.Duration) []struct {
	at time.Duration
	v  ListVerdict
} {
	t.Helper()
	return replayListLed(t, p, self, peers, end, nil)
}

// replayListLed is replayList where self's own users replica follows
// leader(at) ("" for none; nil: it holds no replica), sampled every tick
// like the daemon's proof loop; noQuorum says whether that leader's ping
// then reached self saying its gate has no quorum.
func replayListLed(t *testing.T, p Params, self listNode, peers []listNode, end time.Duration, leader func(time.Duration) (name string, noQuorum bool)) []struct {
	at time.Duration
	v  ListVerdict
} {
	t.Helper()
	tr := NewTracker(p)
	own := self.proofs(end)
	type ans struct {
		at   time.Duration
		peer string
		age  time.Duration
		strk time.Duration
	}
	var answers []ans
	for _, pn := range peers {
		ps := pn.proofs(end)
		for at := self.phase; at < end; at += tick {
			if !pn.answers(at) {
				continue
			}
			a := at + pingLatency
			age, strk := time.Duration(-1), time.Duration(-1)
			last := -1
			for i, x := range ps {
				if x <= a {
					last = i
				}
			}
			if last >= 0 {
				start := last
				for start > 0 && ps[start]-ps[start-1] < p.ListFresh {
					start--
				}
				age, strk = a-ps[last], a-ps[start]
			}
			answers = append(answers, ans{a, pn.name, age, strk})
		}
	}
	var out []struct {
		at time.Duration
		v  ListVerdict
	}
	oi := 0
	var (
		proven      time.Time
		named       string
		namedSince  time.Time
		stuck       time.Time
		nextLeading time.Duration
	)
	for at := time.Duration(0); at <= end; at += step {
		if leader != nil && at >= nextLeading {
			l, noQuorum := leader(at)
			if l != named {
				named, namedSince = l, t0.Add(at)
			}
			stuck = time.Time{}
			if noQuorum {
				stuck = t0.Add(at)
			}
			nextLeading += tick
		}
		for ; oi < len(own) && own[oi]+putLatency <= at; oi++ {
			proven = t0.Add(own[oi])
		}
		for _, a := range answers {
			if a.at <= at && a.at > at-step {
				tr.PeerReported(PeerReport{Node: a.peer, AnsweredAt: t0.Add(a.at), PutAge: 0, ListAge: a.age, ListStreak: a.strk})
			}
		}
		v := tr.Allowlist(t0.Add(at), ListProof{Loaded: true, ProvenAt: proven, Leader: named, LeaderSince: namedSince, LeaderNoQuorum: stuck})
		out = append(out, struct {
			at time.Duration
			v  ListVerdict
		}{at, v})
	}
	return out
}

// The revoke-under-partition case: a loses only its route to the users
// leader; b still reaches it. a must call its allowlist stale within 2 s of
// the cut (a revocation committed right after the cut is then refused in
// time) and stay stale.
func TestAllowlistCutFromLeaderStale(t *testing.T) {
	const (
		cut = 10 * time.Second
		end = cut + 20*time.Second
	)
	p := DefaultParams(3)
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			self := listNode{name: "a", proves: before(cut)}
			peers := []listNode{
				{name: "b", phase: ph, proves: always, answers: always},
				{name: "c", phase: tick - 1 - ph, proves: always, answers: before(cut)},
			}
			s := replayList(t, p, self, peers, end)
			var first time.Duration = -1
			for _, x := range s {
				if x.at >= time.Second && x.at < cut && !x.v.Fresh {
					t.Fatalf("stale at %v before the cut: %s", x.at, x.v.Reason)
				}
				if x.at >= cut && !x.v.Fresh && first < 0 {
					first = x.at
				}
				if first >= 0 && x.v.Fresh {
					t.Fatalf("fresh again at %v after going stale at %v: %s", x.at, first, x.v.Reason)
				}
			}
			if first < 0 || first-cut > 2*time.Second {
				t.Fatalf("stale %v after the cut, want <= 2s", first-cut)
			}
			if v := s[len(s)-1].v; !strings.Contains(v.Reason, "nodes [b] reached the users stream leader") {
				t.Fatalf("reason = %q", v.Reason)
			}
			t.Logf("stale %v after the cut", first-cut)
		})
	}
}

// A users-stream leader election: nobody reaches a leader for 6.5 s, then
// every node regains contact, ours up to two ticks after a peer's. Nobody
// can commit a revocation meanwhile, so the allowlist stays current.
func TestAllowlistLeaderElectionNotStale(t *testing.T) {
	const (
		crash  = 10 * time.Second
		outage = 6500 * time.Millisecond
		end    = 30 * time.Second
	)
	p := DefaultParams(3)
	for _, ph := range phases {
		for _, lag := range []time.Duration{0, tick, 2 * tick} {
			t.Run(fmt.Sprintf("phase=%v/lag=%v", ph, lag), func(t *testing.T) {
				self := listNode{name: "a", proves: outside(crash, crash+outage+lag)}
				peers := []listNode{
					{name: "b", phase: ph, proves: outside(crash, crash+outage), answers: always},
					{name: "c", phase: tick - 1 - ph, proves: before(crash), answers: before(crash)},
				}
				for _, x := range replayList(t, p, self, peers, end) {
					if x.at >= time.Second && !x.v.Fresh {
						t.Fatalf("stale at %v: %s", x.at, x.v.Reason)
					}
				}
			})
		}
	}
}

// The one-way cut towards the users leader (claim one-way-partition, the
// others' packets to the leader lost): the leader's appends still reach
// self's replica, which keeps naming it, but neither self nor any peer
// proves, so "nobody can commit a revocation" holds and the old rule kept
// the allowlist current, while no user write through self could commit
// (measured: the leader steps down on lost quorum at +19 s, no new leader
// before the 22 s cut ends). Self must deny within LeaderSilence of its
// last proof, stay denied while the silent leader is named, and serve
// again once its side's new leader answers.
func TestAllowlistOneWayToLeaderStale(t *testing.T) {
	const (
		cut      = 10 * time.Second
		stepDown = cut + 19*time.Second // the old leader's lost-quorum step-down
		elected  = stepDown + 5*time.Second
		end      = elected + 5*time.Second
	)
	p := DefaultParams(3)
	for _, c := range []struct {
		name    string
		pinging bool // the leader's pings still reach self, saying no quorum
		within  time.Duration
	}{{"leader's pings say no quorum", true, p.CutOff}, {"no pings from the leader", false, p.LeaderSilence}} {
		leader := func(at time.Duration) (string, bool) {
			switch {
			case at < stepDown+4*time.Second: // named until self's election timer fires
				// The leader's gate denies ~1 s after the cut (no peer answers).
				return "n2", c.pinging && at >= cut+time.Second
			case at < elected:
				return "", false
			default:
				return "n3", false
			}
		}
		for _, ph := range phases {
			t.Run(fmt.Sprintf("%s/phase=%v", c.name, ph), func(t *testing.T) {
				self := listNode{name: "n1", phase: ph, proves: outside(cut, elected)}
				peers := []listNode{
					{name: "n2", phase: tick / 2, proves: before(cut), answers: before(cut)},
					{name: "n3", phase: tick - 1 - ph, proves: outside(cut, elected), answers: always},
				}
				var first, last time.Duration = -1, -1
				for _, x := range replayListLed(t, p, self, peers, end, leader) {
					switch {
					case x.at >= time.Second && x.at < cut && !x.v.Fresh:
						t.Fatalf("stale at %v before the cut: %s", x.at, x.v.Reason)
					case x.at >= cut && x.at < stepDown && !x.v.Fresh && first < 0:
						first = x.at
						if !strings.Contains(x.v.Reason, "follows leader n2, which has not answered") {
							t.Fatalf("reason = %q", x.v.Reason)
						}
					case first >= 0 && x.at < stepDown && x.v.Fresh:
						t.Fatalf("fresh again at %v while the silent leader is named: %s", x.at, x.v.Reason)
					case x.at >= elected && !x.v.Fresh:
						last = x.at
					}
				}
				if first < 0 || first-cut > c.within+time.Second {
					t.Fatalf("stale %v after the cut, want within %v", first-cut, c.within+time.Second)
				}
				if last > elected+time.Second {
					t.Fatalf("still stale at %v, %v after the new leader answered", last, last-elected)
				}
			})
		}
	}
}

// A crashed users leader: self's replica keeps naming it until self's
// election timer fires (up to 9 s on 2.15.2), nobody proves meanwhile,
// and the new leader answers 9.5 s after the crash. That is an election,
// not a cut: the allowlist stays current throughout (a paused leader is
// the same: its daemon pings no more either).
func TestAllowlistCrashedLeaderNamedNotStale(t *testing.T) {
	const (
		crash   = 10 * time.Second
		timer   = 9 * time.Second
		elected = crash + timer + 500*time.Millisecond
		end     = elected + 10*time.Second
	)
	p := DefaultParams(3)
	leader := func(at time.Duration) (string, bool) {
		switch {
		case at < crash+timer:
			return "n2", false // in quorum until the crash, then silent
		case at < elected:
			return "", false
		default:
			return "n3", false
		}
	}
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			self := listNode{name: "n1", phase: ph, proves: outside(crash, elected)}
			peers := []listNode{
				{name: "n2", phase: tick / 2, proves: before(crash), answers: before(crash)},
				{name: "n3", phase: tick - 1 - ph, proves: outside(crash, elected), answers: always},
			}
			for _, x := range replayListLed(t, p, self, peers, end, leader) {
				if x.at >= time.Second && !x.v.Fresh {
					t.Fatalf("stale at %v: %s", x.at, x.v.Reason)
				}
			}
		})
	}
}

// After a heal the meta group's election delays stream info (the proof)
// for seconds while the users leader stays in quorum, named and pinging
// (measured: 4-5 s, KV writes committing meanwhile). Silent but not
// saying "no quorum", it is left to the 12 s rule: no blink.
func TestAllowlistSlowLeaderInQuorumNotStale(t *testing.T) {
	const (
		heal  = 10 * time.Second
		storm = 8 * time.Second
		end   = heal + storm + 10*time.Second
	)
	p := DefaultParams(3)
	leader := func(time.Duration) (string, bool) { return "n3", false }
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			self := listNode{name: "n2", phase: ph, proves: outside(heal, heal+storm)}
			peers := []listNode{
				{name: "n1", phase: tick / 2, proves: outside(heal, heal+storm), answers: always},
				{name: "n3", phase: tick - 1 - ph, proves: outside(heal, heal+storm), answers: always},
			}
			for _, x := range replayListLed(t, p, self, peers, end, leader) {
				if x.at >= time.Second && !x.v.Fresh {
					t.Fatalf("stale at %v: %s", x.at, x.v.Reason)
				}
			}
		})
	}
}

// --kv-replicas 1 with the users host isolated, or N=5 with the users
// stream's majority on the minority side: nobody can prove, and nobody can
// commit a revocation either. The majority keeps serving for good.
func TestAllowlistNoLeaderReachable(t *testing.T) {
	const (
		gone = 5 * time.Second
		end  = gone + 30*time.Second
	)
	self := listNode{name: "a", proves: before(gone)}
	answering := func(names ...string) []listNode {
		var out []listNode
		for i, n := range names {
			out = append(out, listNode{name: n, phase: time.Duration(i+1) * 40 * time.Millisecond, proves: before(gone), answers: always})
		}
		return out
	}
	for _, c := range []struct {
		p     Params
		peers []listNode
	}{{DefaultParams(3), answering("b")}, {DefaultParams(5), answering("b", "c")}} {
		for _, x := range replayList(t, c.p, self, c.peers, end) {
			if x.at >= time.Second && !x.v.Fresh {
				t.Fatalf("N=%d: stale at %v: %s", c.p.ClusterSize, x.at, x.v.Reason)
			}
		}
	}
}

func TestAllowlistDirectRules(t *testing.T) {
	p := DefaultParams(3)
	now := t0.Add(time.Minute)
	fresh := func(r PeerReport) []PeerReport { return []PeerReport{r} }
	cases := []struct {
		name  string
		lp    ListProof
		peers []PeerReport
		ok    bool
		want  string
	}{
		{"not loaded", ListProof{ProvenAt: now}, nil, false, "allowlist not loaded yet"},
		{"never proven", ListProof{Loaded: true}, nil, false, "no answer from the users stream leader yet"},
		{"fresh proof", ListProof{Loaded: true, ProvenAt: now.Add(-999 * time.Millisecond)}, nil, true, "confirmed 999ms ago"},
		{"fresh proof while a little behind", ListProof{Loaded: true, ProvenAt: now.Add(-10 * time.Millisecond), Behind: "applied 7 < 8"}, nil, true, "current"},
		{"behind the leader", ListProof{Loaded: true, ProvenAt: now.Add(-time.Second), Behind: "applied 7 < 9"}, nil, false, "behind the users stream leader (applied 7 < 9)"},
		{"behind, never proven", ListProof{Loaded: true, Behind: "applied 0 < 3"}, nil, false, "behind"},
		{"peer proving for a while", ListProof{Loaded: true, ProvenAt: now.Add(-1200 * time.Millisecond)},
			fresh(PeerReport{Node: "b", AnsweredAt: now, ListAge: 100 * time.Millisecond, ListStreak: 5 * time.Second}), false, "nodes [b] reached"},
		{"peer just regained contact", ListProof{Loaded: true, ProvenAt: now.Add(-5 * time.Second)},
			fresh(PeerReport{Node: "b", AnsweredAt: now, ListAge: 100 * time.Millisecond, ListStreak: 300 * time.Millisecond}), true, "current"},
		{"peer's proof stale", ListProof{Loaded: true, ProvenAt: now.Add(-2 * time.Second)},
			fresh(PeerReport{Node: "b", AnsweredAt: now, ListAge: 1500 * time.Millisecond, ListStreak: 5 * time.Second}), true, "current"},
		{"peer unreachable", ListProof{Loaded: true, ProvenAt: now.Add(-2 * time.Second)},
			fresh(PeerReport{Node: "b", AnsweredAt: now.Add(-2 * time.Second), ListAge: 0, ListStreak: 5 * time.Second}), true, "current"},
		{"peer reports nothing", ListProof{Loaded: true, ProvenAt: now.Add(-2 * time.Second)},
			fresh(PeerReport{Node: "b", AnsweredAt: now, ListAge: -1, ListStreak: -1}), true, "current"},
		{"peer proved for long after us, then lost contact too (heal storm)", ListProof{Loaded: true, ProvenAt: now.Add(-8 * time.Second)},
			fresh(PeerReport{Node: "b", AnsweredAt: now, ListAge: 5 * time.Second, ListStreak: 10 * time.Second}), false, "nodes [b] reached"},
		{"no contact anywhere for long", ListProof{Loaded: true, ProvenAt: now.Add(-time.Hour)}, nil, true, "no node within two hops"},
		{"two hops away a node proves", ListProof{Loaded: true, ProvenAt: now.Add(-3 * time.Second)},
			fresh(PeerReport{Node: "b", AnsweredAt: now, ListAge: 3 * time.Second, ListStreak: 9 * time.Second, HopAge: 300 * time.Millisecond, HopStreak: 20 * time.Second}), false, "nodes [via b] reached"},
		{"two hops away, proving only since just now", ListProof{Loaded: true, ProvenAt: now.Add(-3 * time.Second)},
			fresh(PeerReport{Node: "b", AnsweredAt: now, ListAge: -1, ListStreak: -1, HopAge: 0, HopStreak: 500 * time.Millisecond}), true, "current"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := DecideAllowlist(now, c.lp, c.peers, p)
			if v.Fresh != c.ok || !strings.Contains(v.Reason, c.want) {
				t.Fatalf("got fresh=%v %q, want fresh=%v containing %q", v.Fresh, v.Reason, c.ok, c.want)
			}
			if !v.Fresh && !strings.HasPrefix(v.Reason, "allowlist") {
				t.Fatalf("denial reason %q", v.Reason)
			}
		})
	}
	if v := DecideAllowlist(now, ListProof{Loaded: true, ProvenAt: now}, nil, Params{}); v.Fresh {
		t.Fatal("invalid params admitted")
	}
}

// After a cut from the users leader heals, every leader steps down and
// nobody proves for seconds. What a missed meanwhile is still missing: it
// stays stale until its own proof, not "fresh by grace".
func TestAllowlistStaysStaleThroughHealStorm(t *testing.T) {
	const (
		cut   = 10 * time.Second
		heal  = 18 * time.Second
		storm = 6 * time.Second
		end   = heal + storm + 5*time.Second
	)
	p := DefaultParams(3)
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			self := listNode{name: "a", proves: outside(cut, heal+storm)}
			peers := []listNode{
				{name: "b", phase: ph, proves: outside(heal, heal+storm), answers: always},
				{name: "c", phase: tick - 1 - ph, proves: outside(heal, heal+storm), answers: outside(cut, heal)},
			}
			var first time.Duration = -1
			for _, x := range replayList(t, p, self, peers, end) {
				if first < 0 && x.at >= cut && !x.v.Fresh {
					first = x.at
				}
				if first >= 0 && x.at < heal+storm && x.v.Fresh {
					t.Fatalf("fresh at %v (stale since %v, own contact back at %v): %s", x.at, first, heal+storm, x.v.Reason)
				}
				if x.at >= heal+storm+tick+putLatency+step && !x.v.Fresh {
					t.Fatalf("still stale at %v after its own proof: %s", x.at, x.v.Reason)
				}
			}
			if first < 0 || first-cut > 2*time.Second {
				t.Fatalf("stale %v after the cut", first-cut)
			}
		})
	}
}

// The revoke-under-partition chaos failure: a is cut from the users
// leader c; b still reaches it and proves on, until a's own campaigns
// (its election timer fires, with a higher term) start a users leader
// election: b's proofs stop for 1.5 s, then resume as a new, short run. a
// must stay stale throughout: b's first run proved a leader served while a
// did not reach it. It went fresh for 0.8 s when only b's latest run
// counted.
func TestAllowlistStaysStaleThroughPeerLeaderChange(t *testing.T) {
	const (
		cut      = 10 * time.Second
		election = cut + 6*time.Second
		end      = cut + 20*time.Second
	)
	p := DefaultParams(3)
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			self := listNode{name: "a", proves: before(cut)}
			peers := []listNode{
				{name: "b", phase: ph, proves: outside(election, election+1500*time.Millisecond), answers: always},
				{name: "c", phase: tick - 1 - ph, proves: outside(election, election+1500*time.Millisecond), answers: before(cut)},
			}
			var first time.Duration = -1
			for _, x := range replayList(t, p, self, peers, end) {
				if first < 0 && x.at >= cut && !x.v.Fresh {
					first = x.at
				}
				if first >= 0 && x.v.Fresh {
					t.Fatalf("fresh at %v (stale since %v; b's proofs broke at %v): %s", x.at, first, election, x.v.Reason)
				}
			}
			if first < 0 || first-cut > 2*time.Second {
				t.Fatalf("stale %v after the cut", first-cut)
			}
		})
	}
}

func TestFreshestPeerProof(t *testing.T) {
	tr := NewTracker(DefaultParams(5))
	now := t0.Add(time.Minute)
	if _, _, ok := tr.FreshestPeerProof(now, ""); ok {
		t.Fatal("proof reported with no peers")
	}
	tr.PeerReported(PeerReport{Node: "b", AnsweredAt: now.Add(-100 * time.Millisecond), ListAge: 2 * time.Second, ListStreak: 10 * time.Second, HopAge: -1, HopStreak: -1})
	tr.PeerReported(PeerReport{Node: "c", AnsweredAt: now.Add(-200 * time.Millisecond), ListAge: 50 * time.Millisecond, ListStreak: 3 * time.Second, HopAge: -1, HopStreak: -1})
	tr.PeerReported(PeerReport{Node: "d", AnsweredAt: now, ListAge: -1, ListStreak: -1, HopAge: 0, HopStreak: 0})
	age, streak, ok := tr.FreshestPeerProof(now, "")
	if !ok || age != 250*time.Millisecond || streak != 3200*time.Millisecond {
		t.Fatalf("freshest = %v %v %v, want c's 250ms / 3.2s", age, streak, ok)
	}
	// The pinger's own proof is never relayed back to it.
	if age, _, ok := tr.FreshestPeerProof(now, "c"); !ok || age != 2100*time.Millisecond {
		t.Fatalf("excluding c = %v %v, want b's 2.1s", age, ok)
	}
}
