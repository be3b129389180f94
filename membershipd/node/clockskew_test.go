package node

import (
	"strings"
	"testing"
	"time"
)

func TestSkewTracker(t *testing.T) {
	var tr skewTracker
	now := time.Now()
	limit := 2 * time.Minute
	if why := tr.problem(now, limit); why != "" {
		t.Fatalf("no samples: %q", why)
	}
	// A peer 1 s ahead over a 10 ms round trip: within the limit.
	tr.observe("n2", now, now.Add(10*time.Millisecond), now.Add(5*time.Millisecond+time.Second).UnixMilli())
	if why := tr.problem(now, limit); why != "" {
		t.Fatalf("1 s skew refused: %q", why)
	}
	// A peer 3 min behind: refused, naming it.
	tr.observe("n3", now, now.Add(10*time.Millisecond), now.Add(-3*time.Minute).UnixMilli())
	why := tr.problem(now, limit)
	if !strings.Contains(why, "n3") || !strings.Contains(why, "NTP") {
		t.Fatalf("3 min skew: %q", why)
	}
	// A stale measurement no longer counts.
	if why := tr.problem(now.Add(skewKeep+time.Second), limit); why != "" {
		t.Fatalf("stale sample still counts: %q", why)
	}
	// Back in range: accepted again.
	tr.observe("n3", now, now.Add(10*time.Millisecond), now.UnixMilli())
	if why := tr.problem(now, limit); why != "" {
		t.Fatalf("after the clock was fixed: %q", why)
	}
}
