package quorum

import (
	"cmp"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---- replay harness -------------------------------------------------------
//
// A scenario describes, per node, when its puts succeed and (for peers)
// when it answers our pings. simulate turns that into the event timeline the
// daemon loop would feed a Tracker (250 ms ticks, each node on its own tick
// phase, puts/pings completing after a small latency); replay feeds it in
// order and samples the verdict every 5 ms.

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

const (
	tick        = 250 * time.Millisecond
	putLatency  = 4 * time.Millisecond
	pingLatency = 2 * time.Millisecond
	step        = 5 * time.Millisecond
	// maxFlip is the asserted bound for a node that lost quorum: 1 s
	// freshness plus one 250 ms tick (the requirement is ≤ 2 s).
	maxFlip = 1250 * time.Millisecond
)

// cond says whether something (a put, a ping answer) works when started at
// an offset from t0.
type cond func(time.Duration) bool

func always(time.Duration) bool { return true }
func never(time.Duration) bool  { return false }

// before: works until d (the node then stops / is cut off).
func before(d time.Duration) cond { return func(t time.Duration) bool { return t < d } }

// from: works from d on.
func from(d time.Duration) cond { return func(t time.Duration) bool { return t >= d } }

// outside: works except during the outage [a, b).
func outside(a, b time.Duration) cond { return func(t time.Duration) bool { return t < a || t >= b } }

type simNode struct {
	name    string
	phase   time.Duration // tick offset in [0, tick): daemons are not phase-locked
	writes  cond          // this node's own heartbeat puts succeed
	answers cond          // peers only: answers our ping sent at that offset
}

type event struct {
	at     time.Duration
	peer   string // "" = our own put succeeded
	putAge time.Duration
	// putStreak is the peer's reported write streak; -1 = an older peer
	// that does not report one.
	putStreak time.Duration
	// sent: our own put is stamped sentAt (its send time), not at.
	sent   bool
	sentAt time.Duration
}

func sortEvents(evs []event) {
	slices.SortStableFunc(evs, func(a, b event) int { return cmp.Compare(a.at, b.at) })
}

func (e event) String() string {
	if e.peer == "" {
		return fmt.Sprintf("%v put ok", e.at)
	}
	return fmt.Sprintf("%v %s answered putAge=%v", e.at, e.peer, e.putAge)
}

// simulate generates the timeline self's daemon observes until end.
func simulate(self simNode, peers []simNode, end time.Duration) []event {
	var evs []event
	for at := self.phase; at < end; at += tick {
		if self.writes(at) {
			evs = append(evs, event{at: at + putLatency})
		}
	}
	for _, p := range peers {
		var puts []time.Duration // the peer's own successes, ascending
		for at := p.phase; at < end; at += tick {
			if p.writes(at) {
				puts = append(puts, at+putLatency)
			}
		}
		for at := self.phase; at < end; at += tick { // we ping on our ticks
			if !p.answers(at) {
				continue
			}
			ans := at + pingLatency
			age, streak := time.Duration(-1), time.Duration(-1)
			// Latest peer put completed by the time it answers, and the
			// first of its run without a WriteFresh gap (the Tracker's
			// streak, with the put's completion for its send time).
			if i, _ := slices.BinarySearch(puts, ans+1); i > 0 {
				age = ans - puts[i-1]
				j := i - 1
				for j > 0 && puts[j]-puts[j-1] < time.Second {
					j--
				}
				streak = ans - puts[j]
			}
			evs = append(evs, event{at: ans, peer: p.name, putAge: age, putStreak: streak})
		}
	}
	slices.SortStableFunc(evs, func(a, b event) int { return cmp.Compare(a.at, b.at) })
	return evs
}

type sample struct {
	at time.Duration
	v  Verdict
}

type run struct {
	t       *testing.T
	samples []sample
}

// replay feeds evs into a fresh Tracker, sampling every step up to end.
func replay(t *testing.T, p Params, evs []event, end time.Duration) run {
	t.Helper()
	tr := NewTracker(p)
	var out []sample
	i := 0
	for at := time.Duration(0); at <= end; at += step {
		for ; i < len(evs) && evs[i].at <= at; i++ {
			e := evs[i]
			if e.peer == "" && e.sent {
				tr.PutSucceeded(t0.Add(e.sentAt))
			} else if e.peer == "" {
				tr.PutSucceeded(t0.Add(e.at))
			} else {
				tr.PeerReported(PeerReport{Node: e.peer, AnsweredAt: t0.Add(e.at), PutAge: e.putAge, PutStreak: e.putStreak,
					ListAge: -1, ListStreak: -1, HopAge: -1, HopStreak: -1})
			}
		}
		out = append(out, sample{at, tr.Verdict(t0.Add(at))})
	}
	return run{t, out}
}

func scenario(t *testing.T, p Params, self simNode, peers []simNode, end time.Duration) run {
	t.Helper()
	return replay(t, p, simulate(self, peers, end), end)
}

// oldPeers is scenario with peers that report no write streak (a version
// before the cut-off rule weighed it, during a rolling upgrade).
func oldPeers(t *testing.T, p Params, self simNode, peers []simNode, end time.Duration) run {
	t.Helper()
	evs := simulate(self, peers, end)
	for i := range evs {
		evs[i].putStreak = -1
	}
	return replay(t, p, evs, end)
}

// neverDenied asserts InQuorum for every sample in [a, b).
func (r run) neverDenied(a, b time.Duration) {
	r.t.Helper()
	for _, s := range r.samples {
		if s.at >= a && s.at < b && !s.v.InQuorum {
			r.t.Fatalf("denied at %v (want in quorum over [%v,%v)): %s", s.at, a, b, s.v.Reason)
		}
	}
}

// deniedThroughout asserts !InQuorum for every sample in [a, b).
func (r run) deniedThroughout(a, b time.Duration) {
	r.t.Helper()
	for _, s := range r.samples {
		if s.at >= a && s.at < b && s.v.InQuorum {
			r.t.Fatalf("in quorum at %v (want denied over [%v,%v)): %s", s.at, a, b, s.v.Reason)
		}
	}
}

// firstDenial returns the first denied sample at or after a.
func (r run) firstDenial(a time.Duration) sample {
	r.t.Helper()
	for _, s := range r.samples {
		if s.at >= a && !s.v.InQuorum {
			return s
		}
	}
	r.t.Fatalf("never denied after %v", a)
	return sample{}
}

// at returns the verdict of the last sample at or before d.
func (r run) at(d time.Duration) Verdict {
	r.t.Helper()
	i, _ := slices.BinarySearchFunc(r.samples, d+1, func(s sample, d time.Duration) int { return cmp.Compare(s.at, d) })
	if i == 0 {
		r.t.Fatalf("no sample at or before %v", d)
	}
	return r.samples[i-1].v
}

// flipsAfterLoss asserts the node stays up until loss (plus a little: its
// last put is still fresh), flips within maxFlip of loss and stays denied
// until end; it returns the denial sample.
func (r run) flipsAfterLoss(loss, end time.Duration) sample {
	r.t.Helper()
	return r.flipsWithin(loss, end, maxFlip)
}

// flipsWithin is flipsAfterLoss with an explicit deadline.
func (r run) flipsWithin(loss, end, deadline time.Duration) sample {
	r.t.Helper()
	r.neverDenied(time.Second, loss+500*time.Millisecond)
	d := r.firstDenial(loss)
	if d.at-loss > deadline {
		r.t.Fatalf("denied %v after quorum loss, want <= %v", d.at-loss, deadline)
	}
	r.deniedThroughout(d.at, end)
	return d
}

// phases the peers run at relative to us; covers lockstep and a peer whose
// last pre-outage put trails ours by most of a tick.
var phases = []time.Duration{0, 60 * time.Millisecond, 130 * time.Millisecond, 200 * time.Millisecond, 245 * time.Millisecond}

// ---- scenarios --------------------------------------------------------------

func TestBootDeniedUntilFirstPut(t *testing.T) {
	const firstPut = 3 * time.Second
	p := DefaultParams(3)
	self := simNode{name: "a", writes: from(firstPut)}
	// The rest of the cluster is up and writing; that alone must not admit us.
	peers := []simNode{
		{name: "b", phase: 90 * time.Millisecond, writes: always, answers: always},
		{name: "c", phase: 170 * time.Millisecond, writes: always, answers: always},
	}
	r := scenario(t, p, self, peers, 20*time.Second)
	r.deniedThroughout(0, firstPut+putLatency)
	r.neverDenied(firstPut+putLatency, 20*time.Second)
	v := r.at(2 * time.Second)
	if v.LastPutAge != -1 || !strings.Contains(v.Reason, "no replicated write has succeeded yet") {
		t.Fatalf("boot verdict = %+v", v)
	}
	if len(v.ReachablePeers) != 2 {
		t.Fatalf("peers should be reported reachable at boot: %+v", v)
	}
}

func TestHealthyThreeNodesNeverDenied(t *testing.T) {
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			self := simNode{name: "a", writes: always}
			peers := []simNode{
				{name: "b", phase: ph, writes: always, answers: always},
				{name: "c", phase: tick - 1 - ph, writes: always, answers: always},
			}
			r := scenario(t, DefaultParams(3), self, peers, 60*time.Second)
			r.neverDenied(putLatency, 60*time.Second)
			v := r.at(30 * time.Second)
			if !slices.Equal(v.ReachablePeers, []string{"b", "c"}) || !slices.Equal(v.WritablePeers, []string{"b", "c"}) {
				t.Fatalf("healthy verdict = %+v", v)
			}
		})
	}
}

func TestTwoPeersStoppedGracefully(t *testing.T) {
	const (
		cStops = 10 * time.Second
		loss   = 20 * time.Second // b stops: quorum gone
		end    = loss + 25*time.Second
	)
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			self := simNode{name: "a", writes: before(loss)}
			peers := []simNode{
				{name: "b", phase: ph, writes: before(loss), answers: before(loss)},
				{name: "c", phase: ph / 2, writes: before(cStops), answers: before(cStops)},
			}
			r := scenario(t, DefaultParams(3), self, peers, end)
			// With one peer gone the other two still write: no blip.
			r.neverDenied(time.Second, loss)
			d := r.flipsAfterLoss(loss, end)
			for _, want := range []string{"no quorum", "0 of 2 peers reachable (need 1)"} {
				if v := r.at(loss + 5*time.Second); !strings.Contains(v.Reason, want) {
					t.Fatalf("reason %q lacks %q", v.Reason, want)
				}
			}
			t.Logf("denied %v after loss: %s", d.at-loss, d.v.Reason)
		})
	}
}

func TestIsolatedExLeader(t *testing.T) {
	const (
		cut = 10 * time.Second
		end = cut + 25*time.Second
	)
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			// Our puts stop and nobody answers; the other two carry on
			// writing on their side, which we cannot see.
			self := simNode{name: "a", writes: before(cut)}
			peers := []simNode{
				{name: "b", phase: ph, writes: always, answers: before(cut)},
				{name: "c", phase: tick - 1 - ph, writes: always, answers: before(cut)},
			}
			r := scenario(t, DefaultParams(3), self, peers, end)
			r.flipsAfterLoss(cut, end)
		})
	}
}

func TestLeaderCrashMajorityNotDenied(t *testing.T) {
	const (
		outage = 6500 * time.Millisecond // measured worst-case election
		end    = 40 * time.Second
	)
	for _, ph := range phases {
		// Crash just before our tick at 10.25 s, so a peer with phase ph
		// gets its last put in up to ph after ours.
		for _, crash := range []time.Duration{10*time.Second + 1, 10*time.Second + 249*time.Millisecond} {
			t.Run(fmt.Sprintf("phase=%v/crash=%v", ph, crash), func(t *testing.T) {
				noWrites := outside(crash, crash+outage)
				self := simNode{name: "a", writes: noWrites}
				peers := []simNode{
					// The other survivor answers throughout; its put age grows.
					{name: "b", phase: ph, writes: noWrites, answers: always},
					// The crashed leader: silent from the crash on, back later.
					{name: "c", phase: tick - 1 - ph, writes: noWrites, answers: outside(crash, crash+20*time.Second)},
				}
				r := scenario(t, DefaultParams(3), self, peers, end)
				r.neverDenied(putLatency, end)
				v := r.at(crash + 3*time.Second)
				if !strings.HasPrefix(v.Reason, "quorum (election grace)") || !slices.Equal(v.ReachablePeers, []string{"b"}) {
					t.Fatalf("mid-election verdict = %+v", v)
				}
			})
		}
	}
}

func TestStepDownStormAfterHealNotDenied(t *testing.T) {
	const (
		partStart = 5 * time.Second
		heal      = 20 * time.Second
		storm     = 8 * time.Second // no writes anywhere after c rejoins with an inflated term
		end       = 45 * time.Second
	)
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			majority := outside(heal, heal+storm)
			self := simNode{name: "a", writes: majority}
			peers := []simNode{
				{name: "b", phase: ph, writes: majority, answers: always},
				// c was partitioned away: no writes, no answers; after the
				// heal it answers with a put age of ~15 s and more.
				{name: "c", phase: tick - 1 - ph,
					writes:  func(t time.Duration) bool { return t < partStart || t >= heal+storm },
					answers: outside(partStart, heal)},
			}
			r := scenario(t, DefaultParams(3), self, peers, end)
			r.neverDenied(putLatency, end)
			v := r.at(heal + 4*time.Second)
			if !strings.HasPrefix(v.Reason, "quorum (election grace)") || len(v.ReachablePeers) != 2 {
				t.Fatalf("mid-storm verdict = %+v", v)
			}
		})
	}
}

func TestAsymmetricPartitionDenied(t *testing.T) {
	const (
		cut = 10 * time.Second
		end = cut + 25*time.Second
	)
	for _, ph := range phases {
		for _, c := range []struct{ leaderAnswers, old bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
			leaderAnswers := c.leaderAnswers
			t.Run(fmt.Sprintf("phase=%v/leaderAnswers=%v/oldPeers=%v", ph, leaderAnswers, c.old), func(t *testing.T) {
				// We lost the link to leader c (our puts fail) but still
				// reach b, which keeps writing through c. The grace must
				// not keep us alive.
				self := simNode{name: "a", writes: before(cut)}
				cAnswers := before(cut)
				if leaderAnswers { // the client link may survive while the route is cut
					cAnswers = always
				}
				peers := []simNode{
					{name: "b", phase: ph, writes: always, answers: always},
					{name: "c", phase: tick - 1 - ph, writes: always, answers: cAnswers},
				}
				p := DefaultParams(3)
				play := scenario
				if c.old {
					play = oldPeers
				}
				r := play(t, p, self, peers, end)
				d := r.flipsWithin(cut, end, p.CutOff+maxFlip)
				v := r.at(cut + 5*time.Second)
				if !strings.Contains(v.Reason, "can write but this node cannot") || !slices.Contains(v.WritablePeers, "b") {
					t.Fatalf("reason = %q (%+v)", v.Reason, v)
				}
				t.Logf("denied %v after cut: %s", d.at-cut, d.v.Reason)
			})
		}
	}
}

func TestElectionOutlastingGraceDenied(t *testing.T) {
	const (
		stop   = 10 * time.Second
		resume = stop + 15*time.Second
		end    = resume + 10*time.Second
	)
	p := DefaultParams(3)
	noWrites := outside(stop, resume)
	self := simNode{name: "a", writes: noWrites}
	peers := []simNode{
		{name: "b", phase: 100 * time.Millisecond, writes: noWrites, answers: always},
		{name: "c", phase: 200 * time.Millisecond, writes: noWrites, answers: always},
	}
	r := scenario(t, p, self, peers, end)
	// Last put at 9.754 s: grace runs out at 21.754 s.
	last := stop - tick + putLatency
	r.neverDenied(putLatency, last+p.Grace)
	r.deniedThroughout(last+p.Grace, resume+putLatency)
	r.neverDenied(resume+putLatency, end)
	if v := r.at(resume - time.Second); !strings.Contains(v.Reason, "exceeds the 12s election grace") {
		t.Fatalf("reason = %q", v.Reason)
	}
}

func TestFiveNodeMinorityOfTwoDenied(t *testing.T) {
	const (
		cut = 10 * time.Second
		end = cut + 25*time.Second
	)
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			// {a,b} | {c,d,e}: b answers but cannot write either; the
			// majority side keeps writing unseen.
			self := simNode{name: "a", writes: before(cut)}
			peers := []simNode{
				{name: "b", phase: ph, writes: before(cut), answers: always},
				{name: "c", phase: 50 * time.Millisecond, writes: always, answers: before(cut)},
				{name: "d", phase: 150 * time.Millisecond, writes: always, answers: before(cut)},
				{name: "e", phase: 240 * time.Millisecond, writes: always, answers: before(cut)},
			}
			r := scenario(t, DefaultParams(5), self, peers, end)
			r.flipsAfterLoss(cut, end)
			if v := r.at(cut + 5*time.Second); !strings.Contains(v.Reason, "1 of 4 peers reachable (need 2)") {
				t.Fatalf("reason = %q", v.Reason)
			}
		})
	}
}

func TestFiveNodeMajorityDuringElectionNotDenied(t *testing.T) {
	const (
		crash  = 10*time.Second + 200*time.Millisecond
		outage = 7 * time.Second
		end    = 30 * time.Second
	)
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			// Leader e crashes while d is already down: {a,b,c} elect.
			noWrites := outside(crash, crash+outage)
			self := simNode{name: "a", writes: noWrites}
			peers := []simNode{
				{name: "b", phase: ph, writes: noWrites, answers: always},
				{name: "c", phase: tick - 1 - ph, writes: noWrites, answers: always},
				{name: "d", phase: 10 * time.Millisecond, writes: never, answers: never},
				{name: "e", phase: 20 * time.Millisecond, writes: before(crash), answers: before(crash)},
			}
			r := scenario(t, DefaultParams(5), self, peers, end)
			r.neverDenied(putLatency, end)
		})
	}
}

// ---- direct rule checks -----------------------------------------------------

// staleOwn is a put old enough that only the grace path can admit us.
const staleOwn = 3 * time.Second

func TestPeerFreshBoundary(t *testing.T) {
	p := DefaultParams(3)
	now := t0.Add(time.Minute)
	last := now.Add(-staleOwn)
	cases := []struct {
		since time.Duration
		want  bool
	}{
		{p.PeerFresh - time.Nanosecond, true},
		{p.PeerFresh, false}, // exactly PeerFresh old: no longer evidence
		{p.PeerFresh + time.Nanosecond, false},
		{-time.Second, true}, // answer stamped after now (caller skew): treated as just now
	}
	for _, c := range cases {
		peers := []PeerReport{{Node: "b", AnsweredAt: now.Add(-c.since), PutAge: 5 * time.Second}}
		v := Decide(now, last, peers, p)
		if v.InQuorum != c.want || (len(v.ReachablePeers) == 1) != c.want {
			t.Errorf("answer %v old: InQuorum=%v reachable=%v, want %v (%s)", c.since, v.InQuorum, v.ReachablePeers, c.want, v.Reason)
		}
	}
}

func TestWriteFreshAndGraceBoundaries(t *testing.T) {
	p := DefaultParams(3)
	now := t0.Add(time.Minute)
	// A one-node cluster is its own majority; its put ages out at Grace.
	for _, c := range []struct {
		age  time.Duration
		want bool
	}{{p.WriteFresh - time.Nanosecond, true}, {p.Grace, false}, {-time.Second, true}} {
		v := Decide(now, now.Add(-c.age), nil, DefaultParams(1))
		if v.InQuorum != c.want {
			t.Errorf("N=1, own put %v old: InQuorum=%v want %v (%s)", c.age, v.InQuorum, c.want, v.Reason)
		}
	}
	// In a cluster, no fresh put admits a node that reaches no majority.
	if v := Decide(now, now, nil, p); v.InQuorum {
		t.Errorf("N=3, fresh put, no peers: admitted (%s)", v.Reason)
	}
	// With a reachable, silent majority the grace bounds it.
	peers := []PeerReport{{Node: "b", AnsweredAt: now, PutAge: -1}}
	for _, c := range []struct {
		age  time.Duration
		want bool
	}{{p.Grace - time.Nanosecond, true}, {p.Grace, false}} {
		v := Decide(now, now.Add(-c.age), peers, p)
		if v.InQuorum != c.want {
			t.Errorf("own put %v old, peer reachable: InQuorum=%v want %v (%s)", c.age, v.InQuorum, c.want, v.Reason)
		}
	}
}

func TestWritablePeerRule(t *testing.T) {
	p := DefaultParams(3)
	now := t0.Add(time.Minute)
	p.CutOff = time.Second                    // isolate the lead rule from the cut-off delay
	last := now.Add(-1100 * time.Millisecond) // stale, well within grace
	cases := []struct {
		name       string
		since, age time.Duration
		writable   bool // listed in WritablePeers
		denied     bool
	}{
		// Reported age + time since answer is the peer's write age now.
		{"fresh and well ahead of us", 200 * time.Millisecond, 100 * time.Millisecond, true, true},
		{"exactly WriteFresh old", 400 * time.Millisecond, 600 * time.Millisecond, false, false},
		{"just under WriteFresh, lead 100ms", 400 * time.Millisecond, 600*time.Millisecond - time.Nanosecond, true, false},
		// Tick skew: its last put trails ours by < WriteLead — same outage.
		{"trails ours by 200ms", 100 * time.Millisecond, 800 * time.Millisecond, true, false},
		{"lead exactly WriteLead", 100 * time.Millisecond, 500 * time.Millisecond, true, true},
		{"never put", 0, -1, false, false},
		{"absurd age cannot overflow into fresh", 500 * time.Millisecond, math.MaxInt64, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// b has been writing for long: the lead rule alone decides.
			peers := []PeerReport{{Node: "b", AnsweredAt: now.Add(-c.since), PutAge: c.age, PutStreak: time.Hour}}
			v := Decide(now, last, peers, p)
			if got := slices.Contains(v.WritablePeers, "b"); got != c.writable {
				t.Errorf("writable=%v want %v (%+v)", got, c.writable, v)
			}
			if v.InQuorum == c.denied {
				t.Errorf("InQuorum=%v want denied=%v: %s", v.InQuorum, c.denied, v.Reason)
			}
		})
	}
}

func TestDecideDedupesSortsAndDoesNotMutate(t *testing.T) {
	p := DefaultParams(5)
	now := t0.Add(time.Minute)
	peers := []PeerReport{
		{Node: "d", AnsweredAt: now.Add(-100 * time.Millisecond), PutAge: 2 * time.Second},
		{Node: "b", AnsweredAt: now.Add(-5 * time.Second), PutAge: 0}, // superseded below
		{Node: "c", AnsweredAt: now.Add(-200 * time.Millisecond), PutAge: 3 * time.Second},
		{Node: "b", AnsweredAt: now.Add(-300 * time.Millisecond), PutAge: 4 * time.Second},
		{Node: "", AnsweredAt: now, PutAge: 0},                        // ignored
		{Node: "e", PutAge: 0},                                        // never answered: ignored
		{Node: "b", AnsweredAt: now.Add(-9 * time.Second), PutAge: 0}, // older: ignored
	}
	orig := slices.Clone(peers)
	v := Decide(now, now.Add(-2*time.Second), peers, p)
	if !reflect.DeepEqual(peers, orig) {
		t.Fatal("Decide modified its input")
	}
	if !slices.Equal(v.ReachablePeers, []string{"b", "c", "d"}) || len(v.WritablePeers) != 0 {
		t.Fatalf("verdict = %+v", v)
	}
	if !v.InQuorum || v.Reason != "quorum (election grace): no node has written for 2s; 3 of 4 peers reachable" {
		t.Fatalf("verdict = %+v", v)
	}
}

func TestReasonsReadable(t *testing.T) {
	p := DefaultParams(3)
	now := t0.Add(time.Minute)
	b := func(since, age time.Duration) []PeerReport {
		return []PeerReport{{Node: "b", AnsweredAt: now.Add(-since), PutAge: age, PutStreak: time.Hour}}
	}
	cases := []struct {
		last  time.Duration // own put age; <0 = never
		peers []PeerReport
		want  string
	}{
		{-1, nil, "no quorum: no replicated write has succeeded yet (waiting for a JetStream quorum)"},
		{180 * time.Millisecond, b(0, -1), "quorum: replicated write 180ms ago; 1 of 2 peers reachable"},
		{180 * time.Millisecond, nil, "no quorum: last replicated write 180ms ago; 0 of 2 peers reachable (need 1)"},
		{1234 * time.Millisecond, nil, "no quorum: last replicated write 1.2s ago; 0 of 2 peers reachable (need 1)"},
		{12340 * time.Millisecond, b(0, -1), "no quorum: last replicated write 12.3s ago exceeds the 12s election grace"},
		{4500 * time.Millisecond, b(100*time.Millisecond, 50*time.Millisecond), "no quorum: peers [b] can write but this node cannot (cut off from the stream leader); last replicated write 4.5s ago"},
		{1500 * time.Millisecond, b(100*time.Millisecond, 50*time.Millisecond), "quorum (election grace): no node has written for 150ms; 1 of 2 peers reachable"},
		{3100 * time.Millisecond, append(b(0, 4*time.Second), PeerReport{Node: "c", AnsweredAt: now, PutAge: 3200 * time.Millisecond}),
			"quorum (election grace): no node has written for 3.1s; 2 of 2 peers reachable"},
	}
	for _, c := range cases {
		var last time.Time
		if c.last >= 0 {
			last = now.Add(-c.last)
		}
		if got := Decide(now, last, c.peers, p).Reason; got != c.want {
			t.Errorf("reason\n got %q\nwant %q", got, c.want)
		}
	}
}

// Every denial, whatever produced it, must say "quorum" (operators and the
// healthz body grep for it); every admission must start with "quorum".
func TestEveryDenialReasonMentionsQuorum(t *testing.T) {
	now := t0.Add(time.Minute)
	ages := []time.Duration{-1, 0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 5 * time.Second, 12 * time.Second, time.Hour}
	peerAges := []time.Duration{-1, 0, 300 * time.Millisecond, 900 * time.Millisecond, 2 * time.Second, math.MaxInt64}
	sinces := []time.Duration{0, 400 * time.Millisecond, time.Second, time.Minute}
	params := []Params{DefaultParams(1), DefaultParams(3), DefaultParams(5), {}, {ClusterSize: 3}, {ClusterSize: -1, WriteFresh: -1}}
	seen := map[string]bool{}
	for _, p := range params {
		for _, own := range ages {
			var last time.Time
			if own >= 0 {
				last = now.Add(-own)
			}
			for _, pa := range peerAges {
				for _, s := range sinces {
					for n := 0; n <= 2; n++ {
						var peers []PeerReport
						for i := range n {
							peers = append(peers, PeerReport{Node: string(rune('b' + i)), AnsweredAt: now.Add(-s), PutAge: pa, PutStreak: -1})
						}
						v := Decide(now, last, peers, p)
						if !v.InQuorum && !strings.Contains(v.Reason, "no quorum") {
							t.Fatalf("denial reason lacks \"quorum\": %q", v.Reason)
						}
						if v.InQuorum && !strings.HasPrefix(v.Reason, "quorum") {
							t.Fatalf("admission reason = %q", v.Reason)
						}
						if strings.Contains(v.Reason, "\n") {
							t.Fatalf("reason is not one line: %q", v.Reason)
						}
						seen[strings.SplitN(v.Reason, ":", 2)[0]+":"+kind(v.Reason)] = true
					}
				}
			}
		}
	}
	for _, k := range []string{"no quorum:boot", "no quorum:reach", "no quorum:cutoff", "no quorum:grace", "no quorum:params", "quorum:fresh", "quorum (election grace):grace"} {
		if !seen[k] {
			t.Errorf("sweep never produced a %q verdict (seen %v)", k, seen)
		}
	}
}

func kind(reason string) string {
	switch {
	case strings.Contains(reason, "invalid"):
		return "params"
	case strings.Contains(reason, "yet"):
		return "boot"
	case strings.Contains(reason, "reachable (need"):
		return "reach"
	case strings.Contains(reason, "cannot"):
		return "cutoff"
	case strings.Contains(reason, "grace"):
		return "grace"
	default:
		return "fresh"
	}
}

func TestParams(t *testing.T) {
	for n, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 7: 4} {
		if got := DefaultParams(n).Majority(); got != want {
			t.Errorf("Majority(%d) = %d, want %d", n, got, want)
		}
	}
	p := DefaultParams(3)
	if p.WriteFresh != time.Second || p.PeerFresh != time.Second || p.Grace != 12*time.Second || p.CutOff != 4*time.Second || p.Validate() != nil {
		t.Fatalf("DefaultParams = %+v", p)
	}
	if (Params{}).Validate() == nil {
		t.Fatal("zero Params validated")
	}
	// Zero-value or invalid params fail closed even with a fresh put.
	if v := Decide(t0, t0, nil, Params{}); v.InQuorum || !strings.Contains(v.Reason, "invalid parameters") {
		t.Fatalf("zero params verdict = %+v", v)
	}
}

func TestTrackerKeepsNewestEvidence(t *testing.T) {
	tr := NewTracker(DefaultParams(3))
	if _, ok := tr.LastPut(); ok {
		t.Fatal("LastPut reported a put before any")
	}
	tr.PutSucceeded(t0.Add(2 * time.Second))
	tr.PutSucceeded(t0.Add(time.Second)) // late result of an older attempt
	if got, ok := tr.LastPut(); !ok || !got.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("LastPut = %v %v", got, ok)
	}
	tr.PeerAnswered("b", t0.Add(5*time.Second), 4*time.Second)
	tr.PeerAnswered("b", t0.Add(3*time.Second), 0) // stale reply arriving late
	tr.PeerAnswered("", t0.Add(5*time.Second), 0)  // nameless: ignored
	v := tr.Verdict(t0.Add(5500 * time.Millisecond))
	if !v.InQuorum || len(v.WritablePeers) != 0 || !slices.Equal(v.ReachablePeers, []string{"b"}) {
		t.Fatalf("verdict = %+v", v)
	}
	if v.LastPutAge != 3500*time.Millisecond {
		t.Fatalf("LastPutAge = %v", v.LastPutAge)
	}
	if tr.Params() != DefaultParams(3) {
		t.Fatal("Params not kept")
	}
}

func TestTrackerConcurrentUse(t *testing.T) {
	tr := NewTracker(DefaultParams(3))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				at := t0.Add(time.Duration(i) * time.Millisecond)
				switch g % 4 {
				case 0:
					tr.PutSucceeded(at)
				case 1:
					tr.PeerAnswered(fmt.Sprintf("p%d", i%3), at, time.Duration(i%7)*time.Millisecond)
				case 2:
					_ = tr.Verdict(at)
				default:
					_, _ = tr.LastPut()
				}
			}
		})
	}
	wg.Wait()
	if got, _ := tr.LastPut(); !got.Equal(t0.Add(499 * time.Millisecond)) {
		t.Fatalf("LastPut = %v", got)
	}
	if v := tr.Verdict(t0.Add(500 * time.Millisecond)); !v.InQuorum || len(v.ReachablePeers) != 3 {
		t.Fatalf("verdict = %+v", v)
	}
}

// Recorded in the route-cut spec (KV leader's routes cut, 2 cores): the
// surviving follower b became able to write about 0.5 s before this node's
// puts reached the new leader. A healthy majority node must not be denied
// for that changeover.
func TestLeaderChangeoverPeerWritesFirstNotDenied(t *testing.T) {
	p := DefaultParams(3)
	now := t0.Add(time.Minute)
	for _, own := range []time.Duration{1100 * time.Millisecond, 2 * time.Second, 3 * time.Second, p.CutOff - time.Millisecond} {
		peers := []PeerReport{{Node: "b", AnsweredAt: now.Add(-50 * time.Millisecond), PutAge: 100 * time.Millisecond}}
		v := Decide(now, now.Add(-own), peers, p)
		if !v.InQuorum {
			t.Errorf("own writes failing for %v while b writes: denied (%s)", own, v.Reason)
		}
	}
}

// Recorded in the pause spec (process target): the heartbeat stream's
// leader c was SIGSTOPped for 10 s and its successor came ~8.5 s later,
// longer than CutOff. Peer b's first put reached the new leader a few
// hundred ms before ours. With the old rule (our last write ≥ CutOff old
// and b ahead) we were denied until our own next put landed; b's write
// streak is what says it had not been writing without us for long.
func TestLongElectionFirstWriterDoesNotCutOffPeers(t *testing.T) {
	const (
		pause    = 10 * time.Second
		election = 8500 * time.Millisecond
		end      = 40 * time.Second
	)
	for _, ph := range phases {
		for _, lag := range []time.Duration{0, 300 * time.Millisecond, 700 * time.Millisecond, 1500 * time.Millisecond} {
			t.Run(fmt.Sprintf("phase=%v/ourLag=%v", ph, lag), func(t *testing.T) {
				self := simNode{name: "a", writes: outside(pause, pause+election+lag)}
				peers := []simNode{
					{name: "b", phase: ph, writes: outside(pause, pause+election), answers: always},
					// The paused leader: silent for the pause, then a follower.
					{name: "c", phase: tick - 1 - ph, writes: outside(pause, pause+10*time.Second+election), answers: outside(pause, pause+10*time.Second)},
				}
				r := scenario(t, DefaultParams(3), self, peers, end)
				r.neverDenied(putLatency, end)
			})
		}
	}
	// The same timeline judged with the old rule (peers without streaks)
	// does deny: the test above is about the fix, not a gentler timeline.
	self := simNode{name: "a", writes: outside(pause, pause+election+700*time.Millisecond)}
	peers := []simNode{
		{name: "b", phase: 60 * time.Millisecond, writes: outside(pause, pause+election), answers: always},
		{name: "c", phase: 189 * time.Millisecond, writes: outside(pause, pause+10*time.Second+election), answers: outside(pause, pause+10*time.Second)},
	}
	r := oldPeers(t, DefaultParams(3), self, peers, end)
	d := r.firstDenial(pause)
	if !strings.Contains(d.v.Reason, "can write but this node cannot") {
		t.Fatalf("old rule: first denial %v: %s", d.at, d.v.Reason)
	}
}

// A peer that resumed writing after a long election and keeps writing
// while we still cannot is the asymmetric case again: denied once it has
// written without us for CutOff.
func TestCutOffAfterElectionCountsFromPeerStreak(t *testing.T) {
	const (
		stop     = 10 * time.Second
		election = 6 * time.Second
		end      = 40 * time.Second
	)
	p := DefaultParams(3)
	self := simNode{name: "a", writes: before(stop)} // never gets back
	peers := []simNode{
		{name: "b", phase: 100 * time.Millisecond, writes: outside(stop, stop+election), answers: always},
		{name: "c", phase: 200 * time.Millisecond, writes: outside(stop, stop+election), answers: always},
	}
	r := scenario(t, p, self, peers, end)
	r.neverDenied(putLatency, stop+election+p.CutOff-tick)
	d := r.firstDenial(stop + election)
	if late := d.at - (stop + election); late > p.CutOff+maxFlip || !strings.Contains(d.v.Reason, "cannot") {
		t.Fatalf("denied %v after the peers resumed (want ≤ %v, cut-off): %s", late, p.CutOff+maxFlip, d.v.Reason)
	}
	r.deniedThroughout(d.at, end)
}

func TestTrackerPutStreak(t *testing.T) {
	tr := NewTracker(DefaultParams(3))
	if _, ok := tr.PutStreak(t0); ok {
		t.Fatal("streak before any put")
	}
	for i := range 8 { // puts every 250 ms from t0
		tr.PutSucceeded(t0.Add(time.Duration(i) * tick))
	}
	if st, _ := tr.PutStreak(t0.Add(2 * time.Second)); st != 2*time.Second {
		t.Fatalf("streak = %v, want 2s", st)
	}
	tr.PutSucceeded(t0.Add(time.Second)) // a late, older result changes nothing
	gap := t0.Add(7*tick + time.Second)  // a gap of exactly WriteFresh starts a new streak
	tr.PutSucceeded(gap)
	if st, _ := tr.PutStreak(gap.Add(300 * time.Millisecond)); st != 300*time.Millisecond {
		t.Fatalf("streak after a gap = %v, want 300ms", st)
	}
}
