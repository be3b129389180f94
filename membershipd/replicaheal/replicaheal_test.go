package replicaheal

import (
	"errors"
	"log/slog"
	"testing"
	"time"
)

// fakeSource is a leader whose followers the test moves by hand.
type fakeSource struct {
	groups    []Group
	snapshots []string
	fail      error
}

func (f *fakeSource) LedGroups([]string) ([]Group, error) { return f.groups, nil }
func (f *fakeSource) Snapshot(stream string) error {
	if f.fail != nil {
		return f.fail
	}
	f.snapshots = append(f.snapshots, stream)
	return nil
}

const hb = "KV_UNIBUS_heartbeats"

func leading(committed uint64, fs ...Follower) []Group {
	return []Group{{Stream: hb, Committed: committed, Followers: fs}}
}

func newHealer(src Source) *Healer {
	return New(src, []string{hb}, slog.New(slog.DiscardHandler))
}

// step runs one check at start+at.
func step(t *testing.T, h *Healer, start time.Time, at time.Duration) {
	t.Helper()
	if _, err := h.Check(start.Add(at)); err != nil {
		t.Fatal(err)
	}
}

func TestStuckFollowerGetsOneSnapshot(t *testing.T) {
	src := &fakeSource{}
	h := newHealer(src)
	start := time.Now()
	// n3 asks for a catchup every ~2 s (so it is seen) but stays at 80
	// while the leader commits on.
	for s := 0; s <= 40; s++ {
		committed := uint64(200 + 12*s)
		src.groups = leading(committed,
			Follower{Name: "n1", Index: committed - 3, Seen: 100 * time.Millisecond},
			Follower{Name: "n3", Index: 80, Seen: time.Duration(s%2) * time.Second})
		step(t, h, start, time.Duration(s)*time.Second)
		if s < 10 && len(src.snapshots) > 0 {
			t.Fatalf("snapshot after %ds, before the follower was behind for %s", s, DefaultStuckFor)
		}
	}
	// At 10 s, and once more after the cooldown (30 s later): it never
	// caught up in this script.
	if len(src.snapshots) != 2 {
		t.Fatalf("snapshots %v, want two (at 10 s and after the 30 s cooldown)", src.snapshots)
	}
}

func TestHealthyLaggingFollowerIsLeftAlone(t *testing.T) {
	src := &fakeSource{}
	h := newHealer(src)
	start := time.Now()
	// Every sample catches the follower a few entries behind (in flight),
	// but it always reaches what the leader had committed a second ago.
	for s := 0; s <= 60; s++ {
		committed := uint64(100 + 12*s)
		src.groups = leading(committed, Follower{Name: "n2", Index: committed - 5, Seen: 200 * time.Millisecond})
		step(t, h, start, time.Duration(s)*time.Second)
	}
	if len(src.snapshots) != 0 {
		t.Fatalf("snapshots %v for a follower that keeps up", src.snapshots)
	}
}

func TestDownFollowerIsLeftAlone(t *testing.T) {
	src := &fakeSource{}
	h := newHealer(src)
	start := time.Now()
	for s := 0; s <= 60; s++ {
		src.groups = leading(uint64(100+12*s), Follower{Name: "n2", Index: 90, Seen: time.Duration(s) * time.Second})
		step(t, h, start, time.Duration(s)*time.Second)
	}
	src.groups = leading(900, Follower{Name: "n3", Index: 90, Seen: -1}) // never heard from
	step(t, h, start, 61*time.Second)
	step(t, h, start, 90*time.Second)
	if len(src.snapshots) != 0 {
		t.Fatalf("snapshots %v for a follower that is down", src.snapshots)
	}
}

func TestNotLeaderDoesNothing(t *testing.T) {
	src := &fakeSource{}
	h := newHealer(src)
	start := time.Now()
	src.groups = leading(500, Follower{Name: "n3", Index: 80, Seen: time.Second})
	step(t, h, start, 0)
	src.groups = nil // leadership moved away: the window is dropped
	step(t, h, start, 5*time.Second)
	src.groups = leading(700, Follower{Name: "n3", Index: 80, Seen: time.Second})
	step(t, h, start, 12*time.Second)
	if len(src.snapshots) != 0 {
		t.Fatalf("snapshot %v counted a window from before leadership moved", src.snapshots)
	}
	step(t, h, start, 22*time.Second)
	if len(src.snapshots) != 1 {
		t.Fatalf("snapshots %v, want one 10 s after leading again", src.snapshots)
	}
}

func TestFailedSnapshotIsRetried(t *testing.T) {
	src := &fakeSource{fail: errors.New("catchups running")}
	h := newHealer(src)
	start := time.Now()
	src.groups = leading(500, Follower{Name: "n3", Index: 80, Seen: time.Second})
	step(t, h, start, 0)
	heals, err := h.Check(start.Add(10 * time.Second))
	if err != nil || len(heals) != 1 || heals[0].Err == nil {
		t.Fatalf("heals %+v, err %v: want one failed attempt reported", heals, err)
	}
	src.fail = nil
	step(t, h, start, 11*time.Second) // no cooldown after a failure
	if len(src.snapshots) != 1 {
		t.Fatalf("snapshots %v, want the retry one second later", src.snapshots)
	}
}
