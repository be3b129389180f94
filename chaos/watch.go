package chaos

import (
	"context"
	"sync"
	"time"
)

// Timeline is every /healthz probe of one node during an observation.
type Timeline struct {
	Node   string  `json:"node"`
	Probes []Probe `json:"probes"`
}

// Watcher probes nodes' /healthz on a fixed interval in the background, so
// a spec can inject a fault and later check what the nodes said throughout.
type Watcher struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	lines  map[string]*Timeline
	order  []string
}

// Watch starts probing every node every interval until Stop.
func (c *HealthClient) Watch(ctx context.Context, every time.Duration, nodes ...Node) *Watcher {
	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher{cancel: cancel, lines: map[string]*Timeline{}}
	for _, n := range nodes {
		tl := &Timeline{Node: n.Name()}
		w.lines[n.Name()] = tl
		w.order = append(w.order, n.Name())
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				p := c.Get(ctx, n.HealthzURL())
				if ctx.Err() != nil {
					return
				}
				w.mu.Lock()
				tl.Probes = append(tl.Probes, p)
				w.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	return w
}

// Stop ends the observation and returns one timeline per node, in the
// order the nodes were given.
func (w *Watcher) Stop() []Timeline {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Timeline, 0, len(w.order))
	for _, name := range w.order {
		out = append(out, *w.lines[name])
	}
	return out
}

// Of returns the timeline of one node from a Stop result.
func Of(tls []Timeline, node string) Timeline {
	for _, t := range tls {
		if t.Node == node {
			return t
		}
	}
	return Timeline{Node: node}
}
