package quorum

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The 5-node case: the heartbeat stream's replicas sit on {a,b,c}
// with the leader on a; partition {a,b} | {c,d,e}. a and b can still commit
// (they hold that stream's majority), so only the count of answering nodes
// against N tells them they are a cluster minority.
func TestFiveNodeMinorityHoldingStreamMajorityDenied(t *testing.T) {
	const (
		cut = 10 * time.Second
		end = cut + 25*time.Second
	)
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			self := simNode{name: "a", writes: always}
			peers := []simNode{
				{name: "b", phase: ph, writes: always, answers: always},
				{name: "c", phase: 50 * time.Millisecond, writes: always, answers: before(cut)},
				{name: "d", phase: 150 * time.Millisecond, writes: always, answers: before(cut)},
				{name: "e", phase: 240 * time.Millisecond, writes: always, answers: before(cut)},
			}
			r := scenario(t, DefaultParams(5), self, peers, end)
			d := r.flipsWithin(cut, end, 2*time.Second)
			if v := r.at(cut + 5*time.Second); !strings.Contains(v.Reason, "1 of 4 peers reachable (need 2)") {
				t.Fatalf("reason = %q", v.Reason)
			}
			t.Logf("denied %v after the partition: %s", d.at-cut, d.v.Reason)
		})
	}
}

// The majority side of the same partition: the heartbeat leader was on the
// minority side, so {c,d,e} elect (no writes for up to 6.5 s) and must keep
// serving through it.
func TestFiveNodeMajoritySideServes(t *testing.T) {
	const (
		cut    = 10 * time.Second
		outage = 6500 * time.Millisecond
		end    = cut + 25*time.Second
	)
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			noWrites := outside(cut, cut+outage)
			self := simNode{name: "c", writes: noWrites}
			peers := []simNode{
				{name: "a", phase: ph, writes: always, answers: before(cut)},
				{name: "b", phase: tick - 1 - ph, writes: always, answers: before(cut)},
				{name: "d", phase: 150 * time.Millisecond, writes: noWrites, answers: always},
				{name: "e", phase: 240 * time.Millisecond, writes: noWrites, answers: always},
			}
			r := scenario(t, DefaultParams(5), self, peers, end)
			r.neverDenied(putLatency, end)
		})
	}
}

// --kv-replicas 1: the isolated node hosts the R1 streams and its writes
// keep committing locally. It must still deny within 2 s.
func TestR1IsolatedNodeDenied(t *testing.T) {
	const (
		cut = 10 * time.Second
		end = cut + 25*time.Second
	)
	for _, ph := range phases {
		t.Run(fmt.Sprint("phase=", ph), func(t *testing.T) {
			self := simNode{name: "a", writes: always}
			peers := []simNode{
				{name: "b", phase: ph, writes: always, answers: before(cut)},
				{name: "c", phase: tick - 1 - ph, writes: always, answers: before(cut)},
			}
			r := scenario(t, DefaultParams(3), self, peers, end)
			d := r.flipsWithin(cut, end, 2*time.Second)
			t.Logf("denied %v after isolation: %s", d.at-cut, d.v.Reason)
		})
	}
}

// Slow fsync: every put takes 700 ms to be acked, and the gate stamps the
// put with its send time. With puts overlapping (one started every tick)
// a healthy cluster is never denied.
func TestSlowAcksHealthyNotDenied(t *testing.T) {
	const (
		lat = 700 * time.Millisecond
		end = 30 * time.Second
	)
	p := DefaultParams(3)
	var evs []event
	for at := time.Duration(0); at < end; at += tick {
		evs = append(evs, event{at: at + lat, sentAt: at, sent: true})
	}
	for _, peer := range []string{"b", "c"} {
		for at := time.Duration(0); at < end; at += tick {
			evs = append(evs, event{at: at + 2*time.Millisecond, peer: peer, putAge: lat})
		}
	}
	sortEvents(evs)
	r := replay(t, p, evs, end)
	r.neverDenied(lat, end)
}
