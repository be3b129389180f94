package nemesis

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/history"
)

// healthWorkload probes every node's /healthz every 100-250 ms (health
// ops: Value is the status code, outcome failed when nothing answered).
func healthWorkload(ctx context.Context, e *env, wg *sync.WaitGroup) error {
	hc, err := chaos.NewHealthClient(e.tls.ClientCA)
	if err != nil {
		return err
	}
	for i, n := range e.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := e.rng(100 + uint64(i))
			for jitter(ctx, rng, 100*time.Millisecond, 250*time.Millisecond) {
				t0 := time.Now()
				p := hc.Get(ctx, n.HealthzURL())
				if ctx.Err() != nil {
					return
				}
				op := history.Op{Process: "health-" + n.Name(), Node: n.Name(), Kind: history.Health, Outcome: history.OK}
				if p.Code == 0 {
					op.Outcome, op.Error = history.Failed, errText(p.Err)
				} else {
					op.Value = strconv.Itoa(p.Code)
					if p.Health.Reason != "" && p.Code != 200 {
						op.Error = p.Health.Reason
					}
				}
				e.record(op, t0, time.Now())
			}
		}()
	}
	return nil
}
