package quorum

import (
	"testing"
	"time"
)

// Decide's safety properties over arbitrary observations:
//   - never in quorum without any successful put;
//   - once our own put is stale (≥ WriteFresh), never in quorum with fewer
//     reachable peers than a majority needs, nor past the grace.
func FuzzDecide(f *testing.F) {
	f.Add(uint8(3), int64(500), int64(200), int64(100), int64(3000), int64(50), int64(-1), int64(5000), int64(0))
	f.Add(uint8(3), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0))
	f.Add(uint8(5), int64(13000), int64(100), int64(200), int64(300), int64(400), int64(500), int64(600), int64(700))
	f.Add(uint8(1), int64(-5), int64(1), int64(1), int64(1), int64(1), int64(1), int64(1), int64(1))
	f.Fuzz(func(t *testing.T, size uint8, ownAgeMS, a1, p1, a2, p2, a3, p3, never int64) {
		p := DefaultParams(int(size%7) + 1)
		now := time.Unix(1_700_000_000, 0)
		var lastPut time.Time
		if never%2 == 0 {
			lastPut = now.Add(-time.Duration(ownAgeMS) * time.Millisecond)
		}
		var peers []PeerReport
		for i, ap := range [][2]int64{{a1, p1}, {a2, p2}, {a3, p3}} {
			if i+1 >= p.ClusterSize {
				break
			}
			peers = append(peers, PeerReport{Node: string(rune('b' + i)),
				AnsweredAt: now.Add(-time.Duration(ap[0]) * time.Millisecond), PutAge: time.Duration(ap[1]) * time.Millisecond})
		}
		v := Decide(now, lastPut, peers, p)
		if lastPut.IsZero() && v.InQuorum {
			t.Fatalf("in quorum without any put: %+v", v)
		}
		if lastPut.IsZero() {
			return
		}
		own := now.Sub(lastPut)
		if own < p.WriteFresh {
			if !v.InQuorum {
				t.Fatalf("fresh own put (%s) denied: %s", own, v.Reason)
			}
			return
		}
		if v.InQuorum && len(v.ReachablePeers) < p.Majority()-1 {
			t.Fatalf("stale put (%s) with %d reachable peers (need %d) in quorum: %s", own, len(v.ReachablePeers), p.Majority()-1, v.Reason)
		}
		if v.InQuorum && own >= p.Grace {
			t.Fatalf("put %s old, past the grace %s, in quorum: %s", own, p.Grace, v.Reason)
		}
	})
}
