package quorum

import (
	"testing"
	"time"
)

// Decide's properties over arbitrary observations:
//   - never in quorum without any successful put;
//   - never in quorum with fewer reachable peers than a majority of the
//     cluster needs, however fresh our own put (a put proves a majority of
//     one stream's replicas, not of the cluster);
//   - never in quorum past the grace;
//   - and the other side: a fresh own put with a majority answering is
//     quorum.
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
		enough := len(v.ReachablePeers) >= p.Majority()-1
		if v.InQuorum && !enough {
			t.Fatalf("put %s old with %d reachable peers (need %d) in quorum: %s", own, len(v.ReachablePeers), p.Majority()-1, v.Reason)
		}
		if v.InQuorum && own >= p.Grace {
			t.Fatalf("put %s old, past the grace %s, in quorum: %s", own, p.Grace, v.Reason)
		}
		if own >= 0 && own < p.WriteFresh && enough && !v.InQuorum {
			t.Fatalf("fresh own put (%s) with %d of %d peers answering denied: %s", own, len(v.ReachablePeers), p.Majority()-1, v.Reason)
		}
	})
}
