package bench

import (
	"strings"
	"testing"
	"time"
)

// The chart draws both CDFs and every gap bar from a Result alone.
func TestSVGDrawsBothClusters(t *testing.T) {
	res := Result{
		Latency: map[string][]time.Duration{
			"membershipd": {time.Millisecond, 2 * time.Millisecond, 300 * time.Millisecond},
			"plain":       {500 * time.Microsecond, time.Millisecond},
		},
		Gaps: map[fault]map[string]time.Duration{
			faultStop: {"membershipd": 120 * time.Millisecond, "plain": 5 * time.Second},
			faultKill: {"membershipd": 5 * time.Second},
		},
	}
	svg := string(res.SVG())
	if n := strings.Count(svg, "<polyline"); n != 2 {
		t.Errorf("%d CDF lines, want 2", n)
	}
	for _, want := range []string{"stop", "kill", "leader-kill", ">120<", ">5000<", "p50 2.00"} {
		if !strings.Contains(svg, want) {
			t.Errorf("svg lacks %q", want)
		}
	}
}
