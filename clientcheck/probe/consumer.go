package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/e2e"
)

// reader reads the room's stream with a jetstream ordered consumer and
// supervises it. nats.go resets an ordered consumer itself after a
// reconnect or missed heartbeats, but a reset whose consumer-create request
// is swallowed by a node going down waits 10 s for that request, then backs
// off for seconds more — longer than the drain (seen about once in 20
// failovers in-process: 198 acked messages never delivered). So the reader
// replaces the consumer itself, with a new one starting right after the
// last stream sequence it delivered and a 2 s create timeout: at once after
// every reconnect, and whenever acked messages stop arriving for
// stallAfter. Deliveries are tagged with a generation and a superseded
// consumer's are dropped, so a replacement never produces a duplicate by
// itself.
type reader struct {
	r     *runner
	js    jetstream.JetStream
	first uint64 // the first stream sequence this run reads
	// kick asks the supervisor for a replacement now (after a reconnect).
	kick chan struct{}

	mu       sync.Mutex
	gen      int
	cc       jetstream.ConsumeContext
	oc       jetstream.Consumer
	lastSeq  uint64    // last stream sequence delivered (any generation, in order)
	lastRecv time.Time // last delivery, or the start of the current generation
	restarts int
}

// Supervision timings.
const (
	stallAfter     = time.Second
	superviseEvery = 250 * time.Millisecond
	createTimeout  = 2 * time.Second
)

// start creates the current generation's consumer, starting after the
// last delivered sequence (or at first).
func (rd *reader) start(ctx context.Context) error {
	rd.mu.Lock()
	rd.gen++
	gen := rd.gen
	startSeq := max(rd.lastSeq+1, rd.first)
	old, oldCons := rd.cc, rd.oc
	rd.cc, rd.oc = nil, nil
	rd.lastRecv = time.Now()
	rd.mu.Unlock()
	if old != nil {
		// In the background: Stop takes the ordered consumer's lock, which
		// nats.go holds for as long as its own stuck reset lasts (the very
		// stall being repaired). Its deliveries are dropped from now on.
		go func() {
			old.Stop()
			rd.deleteConsumer(oldCons)
		}()
	}
	cctx, cancel := context.WithTimeout(ctx, createTimeout)
	defer cancel()
	oc, err := rd.js.OrderedConsumer(cctx, rd.r.stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: startSeq,
	})
	if err != nil {
		return fmt.Errorf("ordered consumer on %s from sequence %d: %w%s", rd.r.stream, startSeq, err, rd.r.violationHint())
	}
	cc, err := oc.Consume(func(m jetstream.Msg) { rd.onMsg(gen, m) },
		jetstream.PullHeartbeat(heartbeat),
		jetstream.PullExpiry(pullExpiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			rd.r.log.Debug("consumer", "gen", gen, "err", err)
		}))
	if err != nil {
		go rd.deleteConsumer(oc)
		return fmt.Errorf("consume %s: %w", rd.r.stream, err)
	}
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.gen != gen { // superseded meanwhile (only stop does that)
		go cc.Stop()
		return nil
	}
	rd.cc, rd.oc = cc, oc
	rd.r.log.Debug("consumer started", "gen", gen, "from_seq", startSeq)
	return nil
}

// deleteConsumer removes a replaced consumer's server-side state (its
// inactivity threshold would, in minutes). Best effort.
func (rd *reader) deleteConsumer(oc jetstream.Consumer) {
	if oc == nil {
		return
	}
	info := oc.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	_ = rd.js.DeleteConsumer(ctx, rd.r.stream, info.Name)
}

func newReader(r *runner) *reader {
	return &reader{r: r, first: 1, kick: make(chan struct{}, 1)}
}

// reconnected asks for a fresh consumer; it never blocks (it runs on
// nats.go's callback goroutine).
func (rd *reader) reconnected() {
	select {
	case rd.kick <- struct{}{}:
	default:
	}
}

// supervise replaces the consumer after a reconnect, after a failed
// replacement and when it stalls, until ctx ends.
func (rd *reader) supervise(ctx context.Context) {
	t := time.NewTicker(superviseEvery)
	defer t.Stop()
	for {
		kicked := false
		select {
		case <-ctx.Done():
			return
		case <-rd.kick:
			kicked = true
		case <-t.C:
		}
		oldest := rd.r.led.oldestWaiting()
		rd.mu.Lock()
		running, last := rd.cc != nil, rd.lastRecv
		rd.mu.Unlock()
		stalled := !oldest.IsZero() && time.Since(oldest) > stallAfter && time.Since(last) > stallAfter
		switch {
		case kicked:
			rd.r.log.Debug("reconnected: replacing the consumer", "after_seq", rd.seq())
		case !running || stalled:
			rd.mu.Lock()
			rd.restarts++
			rd.mu.Unlock()
			rd.r.log.Info("replacing the consumer", "running", running, "quiet_for", time.Since(last).Round(time.Millisecond),
				"waiting_for", rd.r.led.waiting(), "after_seq", rd.seq())
		default:
			continue
		}
		if err := rd.start(ctx); err != nil && ctx.Err() == nil {
			rd.r.log.Warn("consumer not replaced yet", "err", err)
		}
	}
}

func (rd *reader) seq() uint64 {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return rd.lastSeq
}

// stop ends the current consumer; later deliveries are dropped.
func (rd *reader) stop() {
	rd.mu.Lock()
	rd.gen++
	cc := rd.cc
	rd.cc, rd.oc = nil, nil
	rd.mu.Unlock()
	if cc != nil {
		go cc.Stop() // may wait for a stuck nats.go reset; see start
	}
}

// replaced is how many times the consumer was replaced.
func (rd *reader) replaced() int {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return rd.restarts
}

// onMsg handles one delivery of generation gen.
func (rd *reader) onMsg(gen int, m jetstream.Msg) {
	at := time.Now()
	r := rd.r
	var seq uint64
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	plain, sender, openErr := e2e.Open(r.key, r.room.ID, m.Data())
	// Checked and recorded under the lock: a delivery of a superseded
	// consumer is either recorded before the replacement computes its
	// start, or dropped.
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if gen != rd.gen {
		return
	}
	if seq > rd.lastSeq {
		rd.lastSeq = seq
	}
	rd.lastRecv = at
	if openErr != nil {
		r.bad("open", openErr)
		return
	}
	if sender != r.self {
		return // another member's message
	}
	var p payload
	if err := json.Unmarshal(plain, &p); err != nil {
		r.bad("payload", err)
		return
	}
	if p.Run != r.runID {
		return // an earlier run in the same room
	}
	if !r.led.received(p.N, time.Unix(0, p.Sent), at) {
		r.bad("payload", fmt.Errorf("message number %d out of range", p.N))
	}
}
