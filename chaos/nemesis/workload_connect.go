package nemesis

import (
	"context"
	"sync"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/history"
	"github.com/unibus/clusterkit/membershipd/identity"
)

// Connect roles (history Op.Value of a connect op).
const (
	RoleRegistered   = "registered"   // added before the run, never revoked
	RoleUnregistered = "unregistered" // never added
	RoleRevoked      = "revoked"      // added, then revoked before the run
	RoleChurn        = "churn"        // a key of the users workload: its status changes during the run
)

// connectWorkload makes NATS connection attempts to random nodes as
// identities of every role (connect ops: ok = admitted).
type connectWorkload struct {
	e     *env
	roles map[string][]*identity.Identity
}

func (w *connectWorkload) start(ctx context.Context, wg *sync.WaitGroup) {
	order := []string{RoleRegistered, RoleUnregistered, RoleRevoked, RoleChurn}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := w.e.rng(400)
		for jitter(ctx, rng, 100*time.Millisecond, 250*time.Millisecond) {
			role := order[rng.IntN(len(order))]
			ids := w.roles[role]
			if len(ids) == 0 {
				continue
			}
			id := ids[rng.IntN(len(ids))]
			n := w.e.nodes[rng.IntN(len(w.e.nodes))]
			t0 := time.Now()
			nc, err := chaos.DialAs(w.e.c, n, id)
			end := time.Now()
			if ctx.Err() != nil {
				return
			}
			op := history.Op{Process: "connect", Node: n.Name(), Kind: history.Connect, Key: id.SignPub(), Signer: id.SignPub(), Value: role, Outcome: history.OK}
			if err != nil {
				op.Outcome, op.Error = history.Failed, errText(err)
			} else {
				nc.Close()
			}
			w.e.record(op, t0, end)
		}
	}()
}
