package validate

import (
	"fmt"
	"testing"
	"time"

	"github.com/unibus/clusterkit/chaos/history"
)

// BenchmarkLinearizabilityUnknownHeavy: one key under a long outage, where
// every write times out (maybe applied, open forever) while reads go on:
// the worst case for porcupine's search.
func BenchmarkLinearizabilityUnknownHeavy(b *testing.B) {
	h := &hist{}
	h.add(uop(history.UserAdd, keyA, "", 0, 10, history.OK, ""))
	t := int64(100)
	for i := 0; i < 40; i++ {
		k := history.UserRevoke
		if i%2 == 1 {
			k = history.UserAdd
		}
		o := uop(k, keyA, "", t, t+2000, history.Unknown, "timeout")
		o.Process = fmt.Sprintf("w%d", i%4)
		h.add(o)
		// Each write took effect before the next read.
		g := uop(history.UserGet, keyA, []string{"revoked", "active"}[i%2], t+2100, t+2150, history.OK, "")
		g.Process = "reader"
		h.add(g)
		t += 2200
	}
	b.ResetTimer()
	for b.Loop() {
		r := Linearizability(h.ops, nil, time.Minute)
		if !r.OK {
			b.Fatalf("%s", r.Result)
		}
	}
}
