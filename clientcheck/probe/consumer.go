package probe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/e2e"
)

// reader reads the room's stream through the caller's own pull consumer,
// which the control plane creates (POST /v1/rooms/{id}/consumer): the
// member's ACL allows fetching from, acking and inspecting that one
// consumer and nothing else (no consumer create or delete).
//
// The consumer is durable and R3 (api.RoomConsumerConfig). The control
// plane keeps its raft leader off the client's node (the reader names that
// node in every consumer request), and off the stream's leader where a
// follower that does not lead the meta layer can take it (api pinTarget).
// So it survives the loss of the client's node: after a reconnect the
// client keeps fetching from the same consumer (nats.go re-issues its pull
// requests) and nothing is re-created. What a dead connection may lose is
// deliveries in flight: the consumer counts them as delivered and would
// redeliver them only after its AckWait (5 s). They are still pending at
// the consumer's leader, which survived, so the reader NAKs them itself
// (see nakMissing): a delivery that arrives past a missing sequence and a
// reconnect each NAK the sequences not yet received, and the leader
// redelivers them at once. That needs no control plane: a reset is
// a signed request, which writes a nonce and reads the room, so it waits
// out those buckets' elections when the dead node led them (and the
// AckWait redelivered first: a 5 s gap). Only when NAKs do not fill the
// gap within nakWait, when the consumer's heartbeats stop, and whenever
// acked messages stop arriving for stallAfter, the reader asks the control
// plane to reset the consumer to the first stream sequence it has not yet
// received, and then pulls afresh at once (pulls waiting at a dead
// consumer leader are otherwise re-sent only after two missed
// heartbeats). The reset runs beside the supervisor, one attempt at a
// time, each starting at the next node (see supervise, launch). When the
// stream's leader dies and the consumer's leader was elsewhere, delivery
// resumes with the stream's election and nothing is reset. When the
// consumer's leader dies (with the stream's, or alone), the control plane
// replaces the consumer as soon as the stream has a leader, instead of
// waiting for the consumer's own raft election (4-9 s, independent of the
// stream's).
//
// Delivery is at least once; the reader hands messages on in stream order
// and exactly once per stream sequence: a sequence seen before (a
// redelivery) is dropped, one that arrives early is held until the gap
// before it is filled. So the ledger's duplicate count still means "stored
// twice" (distinct stream sequences, same message number).
type reader struct {
	r     *runner
	js    jetstream.JetStream
	first uint64 // the first stream sequence this run reads
	// kick asks the supervisor for a reset now (the consumer's leader
	// went silent); gap tells it a delivery skipped a sequence; nak asks
	// it to NAK what may have died with the old connection.
	kick, gap, nak chan struct{}

	mu       sync.Mutex
	name     string // the consumer's name (from the control plane)
	cons     jetstream.Consumer
	cc       jetstream.ConsumeContext
	next     uint64             // the next stream sequence to hand on
	held     map[uint64]heldMsg // early arrivals, by stream sequence
	lastRecv time.Time          // last new delivery, or the last reset
	// ackTmpl is the ack subject of the latest delivery: the template of
	// a NAK for a sequence that never arrived (see nakMissing).
	ackTmpl  string
	restarts int // resets and restarts

	// Control-plane resets run beside the supervisor, never in it (see
	// supervise): inflight counts the attempts running (at most one),
	// tries rotates the node each one asks first.
	results  chan error
	inflight int
	tries    int
	failed   int // attempts failed in a row: each gives a node longer
	// seen are the envelope ids handed on: an envelope stored again (a
	// replay, whoever published it) is counted and dropped.
	seen e2e.Replays
}

type heldMsg struct {
	data []byte
	at   time.Time
	seq  uint64
}

// Supervision timings.
const (
	stallAfter     = time.Second
	superviseEvery = 250 * time.Millisecond
	// retryAfterFail: a failed reset attempt is followed by the next one
	// this soon (a floor, so that answers that come at once cannot spin).
	retryAfterFail = 50 * time.Millisecond
	createTimeout  = 2 * time.Second
	// nakWait: a gap that NAKs have not filled by then is left to a reset
	// through the control plane. A live consumer leader redelivers a
	// NAKed message in a round trip.
	nakWait = 250 * time.Millisecond
	// nakAfterReconnect: deliveries to the old connection die while the
	// cluster notices it is gone; NAK after they have.
	nakAfterReconnect = 100 * time.Millisecond
	// skipAfter: a gap that resets cannot fill (a message deleted from
	// the stream) is skipped after this long.
	skipAfter = 15 * time.Second
	pullBatch = 128
	// infoTimeout bounds the consumer info a restart asks first.
	infoTimeout = time.Second
	// resetTry bounds a reset's request to one node (the attempt asks the
	// next one after it, within apiTimeout in all). The server answers a
	// reset in about a second, or 503 after ~1 s while the stream has no
	// leader; it waits longer only for the elections of groups it needs
	// (the nonces and rooms buckets, the meta layer), and those go on while
	// the next node is asked. One node answered nothing for 10 s twice in
	// a row while the stream had a leader: that outlasted the drain. Each
	// attempt that fails gives the next one resetTry more per node (see
	// launch), up to apiTimeout.
	resetTry = 2500 * time.Millisecond
)

func newReader(r *runner) *reader {
	return &reader{r: r, first: 1, kick: make(chan struct{}, 1), gap: make(chan struct{}, 1), nak: make(chan struct{}, 1),
		results: make(chan error, 1), held: map[uint64]heldMsg{}}
}

// start asks the control plane for the consumer (starting at first) and
// starts fetching from it.
func (rd *reader) start(ctx context.Context) error {
	rd.mu.Lock()
	if rd.next == 0 {
		rd.next = rd.first
	}
	from := rd.next
	rd.mu.Unlock()
	rc, err := rd.r.api.Consumer(ctx, rd.r.room.ID, rd.request(from))
	if err != nil {
		return fmt.Errorf("room consumer from sequence %d: %w", from, err)
	}
	return rd.consume(ctx, rc)
}

// request asks for delivery from stream sequence from, naming the node
// this client's connection is on (see api.ConsumerRequest).
func (rd *reader) request(from uint64) api.ConsumerRequest {
	return api.ConsumerRequest{DeliverFromSeq: from, ClientNode: rd.js.Conn().ConnectedServerName()}
}

// consume starts fetching from the named consumer (replacing a stopped
// consume loop).
func (rd *reader) consume(ctx context.Context, rc api.RoomConsumer) error {
	cctx, cancel := context.WithTimeout(ctx, createTimeout)
	defer cancel()
	cons, err := rd.js.Consumer(cctx, rd.r.stream, rc.Consumer)
	if err != nil {
		return fmt.Errorf("consumer %s on %s: %w%s", rc.Consumer, rd.r.stream, err, rd.r.violationHint())
	}
	return rd.consumeFrom(cons, rc.Consumer)
}

// consumeFrom starts a consume loop on cons (fresh pull requests),
// replacing the running one.
func (rd *reader) consumeFrom(cons jetstream.Consumer, name string) error {
	cc, err := cons.Consume(rd.onMsg,
		jetstream.PullMaxMessages(pullBatch), // within the consumer's MaxRequestBatch
		jetstream.PullHeartbeat(heartbeat),
		jetstream.PullExpiry(pullExpiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			rd.r.log.Debug("consumer", "err", err)
			// The consumer's leader is silent or gone: ask for a reset now
			// (the control plane replaces a leaderless consumer once the
			// stream has a leader). Waiting for acked messages to go
			// missing would wait for the stream's election and then 1 s.
			if errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, nats.ErrNoResponders) {
				rd.leaderLost()
			}
		}))
	if err != nil {
		return fmt.Errorf("consume %s/%s: %w", rd.r.stream, name, err)
	}
	rd.mu.Lock()
	old := rd.cc
	rd.cc, rd.name, rd.cons = cc, name, cons
	rd.lastRecv = time.Now()
	rd.mu.Unlock()
	if old != nil {
		go old.Stop()
	}
	rd.r.log.Debug("consuming", "consumer", name)
	return nil
}

// resetOnce asks the control plane, starting at the skip-th node after
// the preferred one, to restart delivery at the first sequence not yet
// handed on, and pulls afresh: pull requests sent before the reset may
// wait at a leader that is gone (or was replaced). It also restarts a
// consume loop that ended (ended): when the consumer answers its info (a
// replacement deleted the one the loop read and made it anew), a fresh
// Consume is all it takes, and the control plane is not asked. It runs
// beside the supervisor (see launch).
func (rd *reader) resetOnce(ctx context.Context, skip int, ended bool, try time.Duration) error {
	rd.mu.Lock()
	from, cons := rd.next, rd.cons
	rd.mu.Unlock()
	if ended && cons != nil {
		ictx, cancel := context.WithTimeout(ctx, infoTimeout)
		_, err := cons.Info(ictx)
		cancel()
		if err == nil {
			rd.r.log.Debug("consume loop restarted", "from_seq", from)
			return rd.consumeFrom(cons, cons.CachedInfo().Name)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	rc, err := rd.r.api.ConsumerVia(rctx, rd.r.room.ID, rd.request(from), skip, try)
	if err != nil {
		return fmt.Errorf("reset the room consumer to sequence %d: %w", from, err)
	}
	rd.r.log.Debug("consumer reset", "from_seq", from)
	if cons == nil {
		return rd.consume(ctx, rc)
	}
	return rd.consumeFrom(cons, rc.Consumer)
}

// launch starts a reset attempt beside the supervisor unless one is
// running. Never more than one, and never cancelled: concurrent resets
// answered by different nodes each replace the consumer (seen once with a
// second attempt sent at the stream's election: the consumer then had no
// leader for 27 s), and a request cut between the delete and the create
// of a replacement leaves no consumer (the server's handler ends with the
// request). counted makes it count in the report; ended restarts a
// consume loop that ended. Its result arrives on rd.results.
func (rd *reader) launch(ctx context.Context, counted, ended bool) {
	if rd.inflight > 0 {
		return
	}
	rd.mu.Lock()
	if counted {
		rd.restarts++
	}
	// Quiet from now: a stall is judged from the reset on.
	rd.lastRecv = time.Now()
	rd.mu.Unlock()
	rd.inflight++
	skip := rd.tries
	rd.tries++
	// Each failed attempt in a row gives a node resetTry longer: a server
	// that needs more than resetTry for every request is served too.
	try := min(resetTry*time.Duration(1+rd.failed), apiTimeout)
	go func() { rd.results <- rd.resetOnce(ctx, skip, ended, try) }()
}

// reconnected is called after a reconnect. It asks the control plane for
// nothing: nats.go pulls again on the new connection at once, and a reset
// after every reconnect would add a control-plane round trip (a TLS
// handshake to a new node, a replicated nonce) to every failover. It only
// has the supervisor NAK the sequences not yet received: a delivery lost
// with the old connection that nothing follows (a quiet room) would
// otherwise wait for the AckWait or a stall; one that something follows
// shows as a gap (see onMsg). The server ignores a NAK of a sequence the
// consumer has not delivered.
func (rd *reader) reconnected() {
	select {
	case rd.nak <- struct{}{}:
	default:
	}
}

// leaderLost asks for a reset now; it never blocks (it runs on nats.go's
// goroutines).
func (rd *reader) leaderLost() {
	select {
	case rd.kick <- struct{}{}:
	default:
	}
}

// gapGrace: a gap that lasts this long is a lost delivery, not a reorder
// between two consume loops.
const gapGrace = 20 * time.Millisecond

// hasGap reports a held message past a missing sequence.
func (rd *reader) hasGap() bool {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return len(rd.held) > 0
}

// supervise resets the consumer on a gap, a silent leader or a stall, and
// restarts a consume loop that ended, until ctx ends. It never waits for
// the control plane itself: a reset is launched beside it, one at a time (see
// launch), so one slow request cannot hold up the next attempt, NAKs or
// the stall check (a reset blocked for its whole 10 s budget twice in a
// row outlasted the drain: the kill9 room-leader stall).
func (rd *reader) supervise(ctx context.Context) {
	t := time.NewTicker(superviseEvery)
	defer t.Stop()
	defer func() {
		for ; rd.inflight > 0; rd.inflight-- {
			<-rd.results
		}
	}()
	want := false // a reset is wanted and none succeeded yet
	for {
		kicked := false
		select {
		case <-ctx.Done():
			return
		case err := <-rd.results:
			rd.inflight--
			if err == nil {
				rd.failed = 0
			} else {
				rd.failed++
			}
			switch {
			case err == nil:
				want = false
			case ctx.Err() == nil:
				rd.r.log.Warn("consumer not reset yet", "err", err, "in_flight", rd.inflight)
				// The next attempt goes out retryAfterFail from now, not at
				// the next tick: the server holds a reset until the stream
				// has a leader (up to 1.5 s), so a 503 often comes just
				// before the election, and the tick would add up to 250 ms.
				time.AfterFunc(retryAfterFail, rd.leaderLost)
			}
			continue
		case <-rd.kick:
			kicked = true
		case <-rd.gap:
			// A lost delivery (its connection died): NAK it, so that the
			// consumer's leader redelivers it now rather than after its
			// AckWait, and reset only if that does not fill the gap.
			time.Sleep(gapGrace)
			kicked = rd.hasGap() && !rd.nakMissing(ctx)
		case <-rd.nak:
			time.Sleep(nakAfterReconnect)
			rd.nakMissing(ctx)
			continue
		case <-t.C:
		}
		rd.skipStuckGap()
		oldest := rd.r.led.oldestWaiting()
		rd.mu.Lock()
		cc, last, next := rd.cc, rd.lastRecv, rd.next
		rd.mu.Unlock()
		stalled := !oldest.IsZero() && time.Since(oldest) > stallAfter && time.Since(last) > stallAfter
		ended := cc == nil || isClosed(cc)
		switch {
		case ended && !want:
			rd.r.log.Info("restarting the consume loop", "after_seq", next-1)
		case kicked && !want:
			rd.r.log.Debug("resetting the consumer", "from_seq", next)
		case stalled && !want:
			rd.r.log.Info("resetting the consumer", "quiet_for", time.Since(last).Round(time.Millisecond),
				"waiting_for", rd.r.led.waiting(), "from_seq", next)
		case want:
			// Still unanswered or failed: retry below once it ended.
		default:
			continue
		}
		rd.launch(ctx, !want && (ended || (stalled && !kicked)), ended)
		want = true
	}
}

// nakMissing NAKs the stream sequences from the next one not yet handed
// on up to the first held one (with none held: a batch's worth) on the
// consumer's ack subject, and waits up to nakWait for deliveries to move
// past the first. It reports whether they did. The member's ACL allows
// acks to its own consumer; the leader redelivers a NAKed sequence at
// once if it is still pending (delivered, unacked) and ignores the rest,
// so a sequence never delivered costs nothing and one already on its way
// at most a duplicate (dropped in onMsg).
func (rd *reader) nakMissing(ctx context.Context) bool {
	rd.mu.Lock()
	from, to := rd.next, rd.next+pullBatch-1
	for s := range rd.held {
		to = min(to, s-1)
	}
	tmpl := rd.ackTmpl
	rd.mu.Unlock()
	if tmpl == "" || to < from {
		return false
	}
	nc := rd.js.Conn()
	for seq := from; seq <= to; seq++ {
		subj, ok := nakSubject(tmpl, seq)
		if !ok {
			return false
		}
		if err := nc.Publish(subj, []byte("-NAK")); err != nil {
			rd.r.log.Debug("nak", "seq", seq, "err", err)
			return false
		}
	}
	rd.r.log.Debug("nak sent", "from_seq", from, "to_seq", to)
	deadline := time.Now().Add(nakWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		rd.mu.Lock()
		moved := rd.next > from
		rd.mu.Unlock()
		if moved {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// nakSubject turns the ack subject of a delivery into that of stream
// sequence seq. nats-server's ack subjects are
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
// or, in the v2 form, with domain and account hash after ACK (and a token
// more). The server honours a NAK when seq is pending and dseq lies above
// the consumer's ack floor and at most its next delivery sequence: the
// template's own dseq + 1 does (the ack floor lies below any unacked
// delivery, and the template was delivered).
func nakSubject(tmpl string, seq uint64) (string, bool) {
	t := strings.Split(tmpl, ".")
	off := 2
	switch {
	case len(t) == 9:
	case len(t) >= 11:
		off = 4
	default:
		return "", false
	}
	if t[0] != "$JS" || t[1] != "ACK" {
		return "", false
	}
	dseq, err := strconv.ParseUint(t[off+4], 10, 64)
	if err != nil {
		return "", false
	}
	t[off+2] = "1"
	t[off+3] = strconv.FormatUint(seq, 10)
	t[off+4] = strconv.FormatUint(dseq+1, 10)
	return strings.Join(t, "."), true
}

func isClosed(cc jetstream.ConsumeContext) bool {
	select {
	case <-cc.Closed():
		return true
	default:
		return false
	}
}

// skipStuckGap hands on held messages past a gap that no reset filled for
// skipAfter (the missing sequence is gone from the stream).
func (rd *reader) skipStuckGap() {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if len(rd.held) == 0 {
		return
	}
	low := uint64(0)
	for s := range rd.held {
		if low == 0 || s < low {
			low = s
		}
	}
	if time.Since(rd.held[low].at) < skipAfter {
		return
	}
	rd.r.log.Warn("skipping stream sequences that never arrived", "from", rd.next, "to", low-1)
	rd.next = low
	rd.flushLocked()
}

// stop ends the consume loop; later deliveries are dropped.
func (rd *reader) stop() {
	rd.mu.Lock()
	cc := rd.cc
	rd.cc = nil
	rd.mu.Unlock()
	if cc != nil {
		go cc.Stop()
	}
}

// replaced is how many times the consumer was reset or restarted.
func (rd *reader) replaced() int {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return rd.restarts
}

// onMsg handles one delivery: ack it (a redelivery too), then hand it on
// in stream order, once per stream sequence.
func (rd *reader) onMsg(m jetstream.Msg) {
	at := time.Now()
	md, err := m.Metadata()
	_ = m.Ack()
	if err != nil {
		rd.r.bad("metadata", err)
		return
	}
	seq := md.Sequence.Stream
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if reply := m.Reply(); reply != "" {
		rd.ackTmpl = reply
	}
	switch {
	case seq < rd.next:
		return // a redelivery of a message handed on already
	case seq > rd.next:
		if _, ok := rd.held[seq]; !ok {
			rd.held[seq] = heldMsg{data: m.Data(), at: at, seq: seq}
		}
		select {
		case rd.gap <- struct{}{}:
		default:
		}
		return
	}
	rd.lastRecv = at
	rd.handle(m.Data(), at, seq)
	rd.next++
	rd.flushLocked()
}

// flushLocked hands on held messages that are next in order.
func (rd *reader) flushLocked() {
	for {
		h, ok := rd.held[rd.next]
		if !ok {
			return
		}
		delete(rd.held, rd.next)
		rd.handle(h.data, h.at, h.seq)
		rd.next++
	}
}

// handle opens and records one message (called in stream order, under mu).
func (rd *reader) handle(data []byte, at time.Time, seq uint64) {
	r := rd.r
	m, err := e2e.OpenMessage(r.key, r.room.ID, data)
	if err != nil {
		r.bad("open", err)
		return
	}
	// Before the payload: a replay is flagged whatever it carries.
	if err := rd.seen.Check(m); err != nil {
		r.replay(err)
		return
	}
	plain, sender := m.Plaintext, m.Sender
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
	if r.cfg.OnReceive != nil {
		r.cfg.OnReceive(r.stream, fmt.Sprintf("%s-%d", r.runID, p.N), p.N, seq, at, r.cs.current())
	}
}
