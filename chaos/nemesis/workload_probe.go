package nemesis

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/unibus/clusterkit/chaos/history"
	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/identity"
)

// probeWorkload runs n clientcheck probes (the library), each in its own
// E2E room, publishing numbered messages with ids at rate per second until
// stop closes; every publish and every receipt is a history op. A probe
// that ends early (a stall it cannot retry) starts again in a new room.
// It returns the room streams used.
type probeWorkload struct {
	e     *env
	ids   []*identity.Identity
	rate  float64
	count int
	stop  chan struct{}

	mu      sync.Mutex
	streams map[string]bool
}

func (w *probeWorkload) start(ctx context.Context, wg *sync.WaitGroup) {
	for i, id := range w.ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("probe-%d", i+1)
			for run := 1; ctx.Err() == nil; run++ {
				rep, err := probe.Run(ctx, w.config(i, name, id))
				w.e.log.Info("probe ended", "probe", name, "run", run, "room", rep.Room, "sent", rep.Sent, "acked", rep.Acked, "received", rep.Received, "err", err)
				select {
				case <-w.stop:
					return
				default:
				}
				if !jitter(ctx, w.e.rng(200+uint64(i)), time.Second, time.Second) {
					return
				}
			}
		}()
	}
}

func (w *probeWorkload) config(i int, name string, id *identity.Identity) probe.Config {
	e := w.e
	cfg := probe.Config{
		CA: e.tls.ClientCA, Cert: e.tls.OperatorCert, Key: e.tls.OperatorKey,
		Identity: id, Count: w.count, Rate: w.rate, Stop: w.stop, Drain: 20 * time.Second,
		Log: e.log.With("probe", name),
	}
	// Each probe lists the nodes from a different first one.
	for k := range e.nodes {
		n := e.nodes[(i+k)%len(e.nodes)]
		cfg.Servers = append(cfg.Servers, n.ClientURL())
		cfg.APIURLs = append(cfg.APIURLs, apiBase(n))
	}
	cfg.OnPublish = func(stream, msgID string, _ int, first, end time.Time, server string, err error) {
		w.addStream(stream)
		op := history.Op{Process: name, Node: server, Kind: history.Publish, Key: stream, Value: msgID, Outcome: history.OK}
		if err != nil {
			// Retried until acked or the context ended: any attempt may
			// have been stored.
			op.Outcome, op.Error = history.Unknown, errText(err)
		}
		e.record(op, first, end)
	}
	cfg.OnReceive = func(stream, msgID string, _ int, seq uint64, at time.Time, server string) {
		e.record(history.Op{Process: name, Node: server, Kind: history.Receive, Key: stream, Value: msgID, Seq: seq, Outcome: history.OK}, at, at)
	}
	return cfg
}

func (w *probeWorkload) addStream(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.streams == nil {
		w.streams = map[string]bool{}
	}
	w.streams[s] = true
}

// roomStreams are the room streams the probes published to.
func (w *probeWorkload) roomStreams() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.streams))
	for s := range w.streams {
		out = append(out, s)
	}
	return out
}
