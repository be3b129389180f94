package api

import (
	"context"
	"sync"
	"time"
)

// trace records how long each step of one request took. The consumer
// endpoint logs it for resets: a failover's receive gap is mostly the
// time its reset waits, and the steps say for what (a bucket's or the
// meta layer's election, the stream's).
type trace struct {
	mu    sync.Mutex
	start time.Time
	last  time.Time
	steps []any // name, duration pairs (slog attributes)
}

type traceKey struct{}

func withTrace(ctx context.Context) (context.Context, *trace) {
	now := time.Now()
	t := &trace{start: now, last: now}
	return context.WithValue(ctx, traceKey{}, t), t
}

// traceStep ends the step name in ctx's trace (if any).
func traceStep(ctx context.Context, name string) {
	t, _ := ctx.Value(traceKey{}).(*trace)
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.steps = append(t.steps, name, now.Sub(t.last).Round(time.Millisecond).String())
	t.last = now
}

// traceDur records a step that ran beside the others (its own duration;
// the next step's is still counted from the previous one).
func traceDur(ctx context.Context, name string, d time.Duration) {
	t, _ := ctx.Value(traceKey{}).(*trace)
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.steps = append(t.steps, name, d.Round(time.Millisecond).String())
}

// attrs are the steps so far and the total, for a log line.
func (t *trace) attrs() []any {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append(append([]any{}, t.steps...), "total", time.Since(t.start).Round(time.Millisecond).String())
}
