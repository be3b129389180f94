package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// DefaultMaxConsumers is a room stream's consumer limit when the node is
// given none (--room-max-consumers): one consumer per member, so it is
// also how many members can read a room.
const DefaultMaxConsumers = 256

// Limits of a member's room consumer. The member's ACL lets it fetch from
// and ack only this consumer, but nats-server does not check the reply
// subject of a fetch, so a member could have its consumer deliver to a
// foreign subject; these bound how much per AckWait (see authn.ACL).
const (
	consumerAckWait       = 5 * time.Second
	consumerMaxAckPending = 256
	consumerMaxWaiting    = 16
	consumerMaxBatch      = 256
	consumerMaxExpires    = 30 * time.Second
	// minResetInterval rate-limits resets of one consumer on one node: a
	// reset starts a new MaxAckPending window. A client resets once per
	// reconnect or stall.
	minResetInterval = 200 * time.Millisecond
)

// RoomConsumerConfig is a member's consumer on a room stream: a durable
// pull consumer (never push: a push consumer's deliver subject is where
// the server sends messages, whatever the member's ACL says), explicit
// acks, starting at stream sequence from. It has the stream's replicas
// (R3), so it survives the loss of any one node: a client whose node dies
// reconnects and keeps fetching from the same consumer, with no
// re-creation. Its state is kept in memory on each replica: under
// SyncAlways a file-backed consumer fsyncs every ack and doubles publish
// latency, and a client re-syncs a lost state with a reset anyway.
func RoomConsumerConfig(name string, from uint64) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:           name,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       max(from, 1),
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           consumerAckWait,
		MaxAckPending:     consumerMaxAckPending,
		MaxWaiting:        consumerMaxWaiting,
		MaxRequestBatch:   consumerMaxBatch,
		MaxRequestExpires: consumerMaxExpires,
		MemoryStorage:     true,
	}
}

// roomConsumer creates the caller's pull consumer on the room stream, or
// finds it. With deliver_from_seq it (re)starts delivery at that stream
// sequence: a reset in place when the consumer allows it, else the
// consumer is replaced. Idempotent: the name is fixed per user and room.
func (s *Server) roomConsumer(ctx context.Context, caller store.User, r *http.Request, body []byte) (code int, v any) {
	var req ConsumerRequest
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return http.StatusBadRequest, Error{Error: "body: " + err.Error()}
		}
	}
	if t, _ := ctx.Value(traceKey{}).(*trace); t != nil && req.DeliverFromSeq != 0 && s.d.Log != nil {
		// A reset is rare (a client's failover) and its time is the
		// client's receive gap: say where it went.
		defer func() {
			s.d.Log.Info("consumer reset", append([]any{"room", r.PathValue("room"), "from_seq", req.DeliverFromSeq, "code", code}, t.attrs()...)...)
		}()
	}
	client := req.ClientNode
	if client == "" {
		client = s.d.Node
	}
	ctx = context.WithValue(ctx, clientNodeKey{}, client)
	room, code, v := s.consumerRoom(ctx, caller, r.PathValue("room"))
	if code != 0 {
		return code, v
	}
	traceStep(ctx, "membership")
	name := authn.RoomConsumer(caller.SignPub)
	out := RoomConsumer{Room: room.ID, Stream: room.Stream, Consumer: name}
	c, replace, silent, err := s.consumerOrLeader(ctx, room.Stream, name, req.DeliverFromSeq != 0)
	traceStep(ctx, "consumer info")
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		if code, v := nonceChecked(ctx); code != 0 {
			return code, v
		}
		if code, v := s.createConsumer(ctx, room.Stream, name, req.DeliverFromSeq); code != 0 {
			return code, v
		}
		s.pinConsumer(ctx, room.Stream, name, "")
		out.DeliverFromSeq = max(req.DeliverFromSeq, 1)
		return http.StatusCreated, out
	case err != nil && replace:
		// The consumer answers nothing while the stream has a leader, or
		// while its leader's daemon is dead: its leader died with its
		// node, and its followers wait out a raft election timeout (4-9 s)
		// before one takes over. A new consumer elects its preferred
		// leader at once, so replacing it (the client passes where to
		// restart) ends the stall with the stream's own election, or
		// before it.
		if code, v := nonceChecked(ctx); code != 0 {
			return code, v
		}
		if !s.allowReset(room.Stream + "." + name) {
			return http.StatusTooManyRequests, Error{Error: "consumer reset too soon after the last one; retry in a moment"}
		}
		if code, v := s.replaceConsumer(ctx, room.Stream, name, req.DeliverFromSeq); code != 0 {
			return code, v
		}
		out.DeliverFromSeq = req.DeliverFromSeq
		return http.StatusOK, out
	case err != nil:
		return unavailable("consumer info", err)
	}
	info := c.CachedInfo()
	out.DeliverFromSeq = info.Config.OptStartSeq
	if info.Config.Metadata[ClientNodeMetadata] != client {
		// The client now reads through another node: the placement
		// keeper moves the consumer off it (see noteClientNode).
		s.queueClientNote(room.Stream, name, client)
	}
	if req.DeliverFromSeq == 0 {
		return http.StatusOK, out
	}
	if code, v := nonceChecked(ctx); code != 0 {
		return code, v
	}
	if !s.allowReset(room.Stream + "." + name) {
		return http.StatusTooManyRequests, Error{Error: "consumer reset too soon after the last one; retry in a moment"}
	}
	out.DeliverFromSeq = req.DeliverFromSeq
	if req.DeliverFromSeq >= info.Config.OptStartSeq {
		if _, err := s.d.JS.ResetConsumerToSequence(ctx, room.Stream, name, req.DeliverFromSeq); err == nil {
			traceStep(ctx, "reset in place")
			switch {
			case info.Cluster == nil:
			case silent:
				// A failover: the consumer's own group has just elected.
				s.pinLater(ctx, room.Stream, name)
			default:
				// A consumer that answered at once (a client's start or
				// resync): answer once its leader is where it should be,
				// so that the loss of the client's node costs no election.
				s.pinConsumer(ctx, room.Stream, name, info.Cluster.Leader)
				traceStep(ctx, "pin")
			}
			return http.StatusOK, out
		} else if !isAPIError(err) {
			return unavailable("reset consumer", err)
		}
	}
	// Below the consumer's start (its policy forbids the reset): replace it.
	if code, v := s.replaceConsumer(ctx, room.Stream, name, req.DeliverFromSeq); code != 0 {
		return code, v
	}
	return http.StatusOK, out
}

// Failover timings of the consumer endpoint: a live consumer or stream
// leader answers info in milliseconds, so a longer wait means it is gone.
const (
	consumerInfoTimeout = 500 * time.Millisecond
	// A reset (sent by a client that saw its deliveries stall) asks the
	// consumer's info within resetInfoTimeout; if the consumer does not
	// answer, it waits up to resetWait for the consumer's or the stream's
	// leader, asking both every resetPoll, each consumer info after the
	// first bounded by leaderlessInfoTimeout (the consumer has shown it has
	// no leader; a live one answers in milliseconds). resetWait, with the nonce and
	// a replacement after it, stays below the client's time per node
	// (clientcheck's resetTry, 2.5 s).
	resetWait             = 1500 * time.Millisecond
	resetInfoTimeout      = 200 * time.Millisecond
	resetPoll             = 50 * time.Millisecond
	leaderlessInfoTimeout = 200 * time.Millisecond
	// createWait bounds a replacement's first create (see replaceNow),
	// doubled for each next one up to maxCreateWait: a new consumer whose
	// preferred leader is alive answers in 60-90 ms here.
	createWait    = 150 * time.Millisecond
	maxCreateWait = 1200 * time.Millisecond
	// deleteWait bounds a consumer delete's answer (see deleteConsumer).
	deleteWait = 50 * time.Millisecond
	// replaceTimeout bounds a replacement (delete, create, pin) that
	// outlives its request; the meta layer's election is 4-9 s.
	replaceTimeout = 10 * time.Second
	// pinDelay: a reset's pin waits until delivery has resumed.
	pinDelay = 2 * time.Second
	// pinTimeout bounds moving the consumer's leader (best effort).
	pinTimeout = time.Second
)

// replaceConsumer deletes the consumer and creates it again starting at
// from, with its leader where pinTarget puts it. The replacement runs to
// its end (within replaceTimeout) even when the request ends first: a
// client that gives up and asks the next node would otherwise leave no
// consumer when cut between the delete and the create. One at a time per
// consumer on this node: a request meanwhile is answered 503 at once.
func (s *Server) replaceConsumer(ctx context.Context, stream, name string, from uint64) (int, any) {
	key := stream + "." + name
	if !s.resets.startReplace(key) {
		return http.StatusServiceUnavailable, Error{Error: "the consumer is being replaced; retry in a moment"}
	}
	type answer struct {
		code int
		v    any
	}
	done := make(chan answer, 1)
	go func() {
		defer s.resets.endReplace(key)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), replaceTimeout)
		defer cancel()
		code, v := s.replaceNow(rctx, stream, name, from)
		done <- answer{code, v}
	}()
	select {
	case a := <-done:
		return a.code, a.v
	case <-ctx.Done():
		return unavailable("replace consumer", fmt.Errorf("%w (the replacement goes on)", ctx.Err()))
	}
}

func (s *Server) replaceNow(ctx context.Context, stream, name string, from uint64) (int, any) {
	for attempt := 0; ; attempt++ {
		err := s.deleteConsumer(ctx, stream, name)
		if errors.Is(err, errConsumerBack) {
			// Its own raft group elected a leader meanwhile (a delete sent
			// while the meta layer has no leader is lost): reset it in
			// place rather than delete a consumer that serves.
			if _, rerr := s.d.JS.ResetConsumerToSequence(ctx, stream, name, from); rerr == nil {
				traceStep(ctx, "reset in place")
				s.pinLater(ctx, stream, name)
				return 0, nil
			}
			err = s.deleteConsumer(ctx, stream, name) // below its start: replace it after all
			if errors.Is(err, errConsumerBack) {
				err = s.deleteGone(ctx, stream, name)
			}
		}
		if err != nil {
			return unavailable("replace consumer", err)
		}
		traceStep(ctx, "delete")
		// The create is answered by the new consumer's leader. Its raft
		// group has the stream's peers, the dead node among them (nats-
		// server marks a killed node offline only after its orphan
		// timeout), and its preferred leader is picked at random: on the
		// dead node, the group waits out an election timeout (4-9 s). So
		// a create unanswered after createWait is done again (another
		// random pick), as long as ctx allows; each attempt waits twice
		// as long as the one before (a loaded cluster answers slower).
		cctx, cancel := context.WithTimeout(ctx, min(createWait<<min(attempt, 4), maxCreateWait))
		code, v := s.createConsumer(cctx, stream, name, from)
		cancel()
		if code == http.StatusServiceUnavailable && ctx.Err() == nil {
			// Delete and create again; deleteConsumer finds it if it has
			// a leader by now (errConsumerBack: reset in place).
			traceStep(ctx, "create unanswered")
			continue
		}
		if code != 0 {
			return code, v
		}
		traceStep(ctx, "create")
		// "Already exists" can come from the deleted one while its removal
		// is still being applied: make sure the new one is there.
		ictx, cancel := context.WithTimeout(ctx, consumerInfoTimeout)
		_, err = s.d.JS.Consumer(ictx, stream, name)
		cancel()
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			if code, v := s.createConsumer(ctx, stream, name, from); code != 0 {
				return code, v
			}
		}
		s.pinLater(ctx, stream, name)
		return 0, nil
	}
}

// errConsumerBack: the consumer being deleted answered its info.
var errConsumerBack = errors.New("the consumer has a leader again")

// deleteGone deletes the consumer whatever it answers meanwhile.
func (s *Server) deleteGone(ctx context.Context, stream, name string) error {
	for {
		dctx, cancel := context.WithTimeout(ctx, consumerInfoTimeout)
		err := s.d.JS.DeleteConsumer(dctx, stream, name)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil
		}
		if ctx.Err() != nil || isAPIError(err) {
			return err
		}
	}
}

// pinLater pins the consumer (pinConsumer) pinDelay after a reset,
// without holding the answer: a reset is a client's failover, and a pin
// at once (its wait up to pinTimeout, seen often after a kill) adds to the
// receive gap: the client's fresh pull reaches the consumer's leader just
// as it moves, and dies with it (two missed heartbeats, 1 s, and a reset
// in place). Later, the move costs at most that second, after delivery
// has resumed, and only when the leaders differ.
func (s *Server) pinLater(ctx context.Context, stream, name string) {
	ctx = context.WithoutCancel(ctx)
	time.AfterFunc(pinDelay, func() { s.pinConsumer(ctx, stream, name, "") })
}

// deleteConsumer deletes the consumer and returns once it is gone.
// nats-server answers a consumer's delete only from the consumer's leader,
// yet applies it through the meta layer: the delete of a consumer whose
// leader died is done in milliseconds and never answered. So each delete
// waits deleteWait, then the consumer's info tells whether it is gone
// (the meta leader answers "not found"), and the delete is sent again
// until then (one sent while the meta layer had no leader is lost).
func (s *Server) deleteConsumer(ctx context.Context, stream, name string) error {
	for {
		dctx, cancel := context.WithTimeout(ctx, deleteWait)
		err := s.d.JS.DeleteConsumer(dctx, stream, name)
		cancel()
		switch {
		case err == nil, errors.Is(err, jetstream.ErrConsumerNotFound):
			return nil
		case ctx.Err() != nil:
			return err
		case isAPIError(err):
			return err
		}
		ictx, cancel := context.WithTimeout(ctx, leaderlessInfoTimeout)
		_, ierr := s.d.JS.Consumer(ictx, stream, name)
		cancel()
		switch {
		case errors.Is(ierr, jetstream.ErrConsumerNotFound):
			return nil
		case ierr == nil:
			return errConsumerBack
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (after %v)", ctx.Err(), err)
		}
	}
}

// consumerOrLeader asks for the consumer's info; for a reset it asks the
// stream's info at the same time, and again every resetPoll until the
// consumer answers (its raft group has a leader: a reset in place), or it
// does not while the stream has a leader or while the leader this node's
// replica follows is dead (replace: the consumer's leader died, and it is
// replaced), or resetWait has passed. So a reset sent during the stream's
// election is answered as soon as the stream has a leader, not at the
// client's next attempt; and a consumer that died with the stream's leader
// is replaced during the stream's election, not after it (the
// replacement's leader is picked at random among nodes nats-server still
// counts as online, the dead one included: each wrong pick cost ~0.25 s
// when the replacement waited for the stream's election).
//
// silent says the consumer did not answer at once (a failover).
func (s *Server) consumerOrLeader(ctx context.Context, stream, name string, reset bool) (c jetstream.Consumer, replace, silent bool, err error) {
	if !reset {
		ictx, cancel := context.WithTimeout(ctx, consumerInfoTimeout)
		defer cancel()
		c, err = s.d.JS.Consumer(ictx, stream, name)
		return c, false, false, err
	}
	deadline := time.Now().Add(resetWait)
	timeout := resetInfoTimeout
	for {
		round := time.Now()
		c, replace, err = s.consumerAndStream(ctx, stream, name, timeout, silent)
		if err == nil || errors.Is(err, jetstream.ErrConsumerNotFound) || replace {
			return c, replace, silent || replace, err
		}
		if s.consumerLeaderDead(stream, name) {
			return nil, true, true, errNoConsumerLeader
		}
		timeout, silent = leaderlessInfoTimeout, true
		wait := time.Until(round.Add(resetPoll))
		if time.Now().Add(wait).After(deadline) {
			return nil, false, true, err
		}
		select {
		case <-ctx.Done():
			return nil, false, true, err
		case <-time.After(wait):
		}
	}
}

// consumerLeaderDead reports whether the leader that this node's replica
// of the consumer follows is another node whose daemon does not answer
// (PeerAlive): a follower keeps naming a crashed leader until its own
// election timeout (4-9 s). Unknown (no replica here, no leader named)
// is not dead: the reset then waits for the stream as before.
func (s *Server) consumerLeaderDead(stream, name string) bool {
	if s.d.ConsumerLeader == nil || s.d.PeerAlive == nil {
		return false
	}
	l, replica := s.d.ConsumerLeader(stream, name)
	return replica && l != "" && l != s.d.Node && !s.d.PeerAlive(l)
}

// errNoConsumerLeader: the consumer did not answer its info.
var errNoConsumerLeader = errors.New("the consumer did not answer its info (no leader)")

// consumerAndStream asks for the consumer's info (within timeout) and
// whether the stream has a leader, at once. silent says the consumer
// answered nothing before: then a stream with a leader decides at once,
// without waiting out the consumer's timeout.
func (s *Server) consumerAndStream(ctx context.Context, stream, name string, timeout time.Duration, silent bool) (jetstream.Consumer, bool, error) {
	type answer struct {
		c   jetstream.Consumer
		err error
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	ledc := make(chan bool, 1)
	go func() { ledc <- s.streamLedWithin(actx, stream, max(timeout, leaderlessInfoTimeout)) }()
	ic := make(chan answer, 1)
	go func() {
		ictx, cancel := context.WithTimeout(actx, timeout)
		defer cancel()
		c, err := s.d.JS.Consumer(ictx, stream, name)
		ic <- answer{c, err}
	}()
	var led, gotLed bool
	for {
		select {
		case a := <-ic:
			if a.err == nil || errors.Is(a.err, jetstream.ErrConsumerNotFound) {
				return a.c, false, a.err
			}
			if !gotLed {
				led = <-ledc
			}
			return nil, led, a.err
		case led = <-ledc:
			gotLed = true
			if led && silent {
				// A consumer that has a leader again answers within
				// silentGrace of the stream.
				select {
				case a := <-ic:
					if a.err == nil || errors.Is(a.err, jetstream.ErrConsumerNotFound) {
						return a.c, false, a.err
					}
				case <-time.After(silentGrace):
				}
				return nil, true, errNoConsumerLeader
			}
			ledc = nil // wait for the consumer's answer
		}
	}
}

// streamLedWithin reports whether the stream answers info with a leader
// within timeout.
func (s *Server) streamLedWithin(ctx context.Context, stream string, timeout time.Duration) bool {
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := s.d.JS.Stream(sctx, stream)
	return err == nil && st.CachedInfo().Cluster != nil && st.CachedInfo().Cluster.Leader != ""
}

// ClientNodeMetadata is the consumer's metadata key naming the node the
// member last read through (ConsumerRequest.ClientNode, or the answering
// node): the placement keeper, which runs where no request names it, keeps
// the consumer's leader off that node.
const ClientNodeMetadata = "unibus_client_node"

// clientNote asks to record that a member reads through node.
type clientNote struct {
	stream, name, node string
	at                 time.Time // when it was asked
}

// maxPendingNotes bounds the queue of client nodes to record; a note that
// does not fit is dropped (the member's next consumer request repeats it).
const maxPendingNotes = 1024

// queueClientNote hands a client node to record to the placement keeper,
// which records them one at a time, each noteDelay after it was asked: a
// node's crash sends every client on it to the others at once, and each
// record is a config update through the meta layer, which the same
// failover may be electing and the clients' consumer replacements need.
func (s *Server) queueClientNote(stream, name, node string) {
	select {
	case s.notes <- clientNote{stream, name, node, time.Now()}:
	default:
	}
}

// noteTimeout bounds one record (a consumer info and an update).
const noteTimeout = 2 * time.Second

// noteDelay: a client node is recorded this long after it was asked, once
// the failover that moved the client has settled.
const noteDelay = 2 * time.Second

// recordClientNotes records queued client nodes (noteClientNode) until
// ctx ends.
func (s *Server) recordClientNotes(ctx context.Context) {
	for {
		var n clientNote
		select {
		case <-ctx.Done():
			return
		case n = <-s.notes:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(n.at.Add(noteDelay))):
		}
		s.noteClientNode(ctx, n.stream, n.name, n.node)
	}
}

// noteClientNode records in the consumer's metadata that the member now
// reads through node (best effort). Only the metadata changes; delivery
// state is untouched.
func (s *Server) noteClientNode(ctx context.Context, stream, name, node string) {
	ctx, cancel := context.WithTimeout(ctx, noteTimeout)
	defer cancel()
	c, err := s.d.JS.Consumer(ctx, stream, name)
	if err != nil {
		return
	}
	cfg := c.CachedInfo().Config
	if cfg.Metadata[ClientNodeMetadata] == node {
		return
	}
	md := make(map[string]string, len(cfg.Metadata)+1)
	for k, v := range cfg.Metadata {
		md[k] = v
	}
	md[ClientNodeMetadata] = node
	cfg.Metadata = md
	_, err = s.d.JS.UpdateConsumer(ctx, stream, cfg)
	if s.d.Log != nil {
		s.d.Log.Info("consumer's client node noted", "stream", stream, "consumer", name, "client_node", node, "err", err)
	}
}

// clientNodeKey carries the request's ConsumerRequest.ClientNode (or this
// node, if the client did not say) to pins that run after the answer.
type clientNodeKey struct{}

func clientNodeOf(ctx context.Context) string {
	n, _ := ctx.Value(clientNodeKey{}).(string)
	return n
}

// pinTarget names the node that should lead the member's consumer, from
// the stream's cluster info ("": leave it where it is): a current follower
// of the stream that is neither the client's node nor the meta layer's
// leader, else the stream's leader.
//
// Not the stream's leader, where it can be helped: a crash of the stream's
// leader then leaves the consumer led, and delivery resumes with the
// stream's own election. A consumer led by the crashed node has to be
// replaced through the meta layer, and nats-server picks a new consumer's
// leader at random among peers it still counts as online, the crashed node
// included: that left the receive gap up to 0.5 s over the election with
// the meta layer alive, and up to 1.9 s when the crashed node also led the
// meta layer (its election too). The cost: a follower delivers a message
// once it has learnt of the commit, one route hop after the leader.
//
// Not the client's node: its crash then costs only a reconnect. Not the
// meta leader: a crash of the consumer's leader needs a replacement, which
// needs the meta layer; with the consumer alone on that node the
// replacement runs at once (a second after the client misses the
// consumer's heartbeats). With no such follower (the third node leads the
// meta layer, or lags) the consumer stays with the stream's leader, as a
// crash of the meta leader then costs nothing. A follower whose daemon does
// not answer this node's pings (PeerAlive) is never picked.
func (s *Server) pinTarget(ci *jetstream.ClusterInfo, clientNode string) string {
	if ci == nil || ci.Leader == "" {
		return ""
	}
	if clientNode == "" {
		clientNode = s.d.Node
	}
	meta := ""
	if s.d.MetaLeader != nil {
		meta = s.d.MetaLeader()
	}
	want := ""
	for _, r := range ci.Replicas {
		// Sorted by name: the same pick on every node.
		alive := s.d.PeerAlive == nil || s.d.PeerAlive(r.Name)
		if r.Current && !r.Offline && alive && r.Name != clientNode && r.Name != meta && (want == "" || r.Name < want) {
			want = r.Name
		}
	}
	if want == "" {
		return ci.Leader
	}
	return want
}

// pinConsumer moves the consumer's raft leader to pinTarget's node (best
// effort); consumerLeader is the consumer's leader if known ("" asks).
func (s *Server) pinConsumer(ctx context.Context, stream, name, consumerLeader string) {
	pctx, cancel := context.WithTimeout(ctx, pinTimeout)
	defer cancel()
	st, err := s.d.JS.Stream(pctx, stream)
	if err != nil {
		return
	}
	if !s.whole(st.CachedInfo().Cluster) {
		// A replica is down: a move could leave the consumer without a
		// leader (see whole), and the next crash would end the quorum
		// anyway. The next reset with every node up places it.
		return
	}
	want := s.pinTarget(st.CachedInfo().Cluster, clientNodeOf(ctx))
	if want == "" {
		return
	}
	if consumerLeader == "" {
		// A new consumer's leader is elected a moment after the create.
		for i := 0; i < 10 && pctx.Err() == nil; i++ {
			c, err := s.d.JS.Consumer(pctx, stream, name)
			if err == nil && c.CachedInfo().Cluster != nil && c.CachedInfo().Cluster.Leader != "" {
				consumerLeader = c.CachedInfo().Cluster.Leader
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if consumerLeader == "" || consumerLeader == want {
		return
	}
	body, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": want}})
	_, err = s.d.JS.Conn().RequestWithContext(pctx, "$JS.API.CONSUMER.LEADER.STEPDOWN."+stream+"."+name, body)
	// Answer once the new leader serves: a client's first request during
	// the change would go unanswered until its timeout.
	for err == nil && pctx.Err() == nil {
		c, ierr := s.d.JS.Consumer(pctx, stream, name)
		if ierr == nil && c.CachedInfo().Cluster != nil && c.CachedInfo().Cluster.Leader == want {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.d.Log != nil {
		s.d.Log.Debug("consumer leader moved", "stream", stream, "consumer", name, "from", consumerLeader, "to", want, "stream_leader", st.CachedInfo().Cluster.Leader, "err", err)
	}
}

func (s *Server) createConsumer(ctx context.Context, stream, name string, from uint64) (int, any) {
	cfg := RoomConsumerConfig(name, from)
	if n := clientNodeOf(ctx); n != "" {
		cfg.Metadata = map[string]string{ClientNodeMetadata: n}
	}
	_, err := s.d.JS.CreateConsumer(ctx, stream, cfg)
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMaximumConsumersLimit:
		return http.StatusConflict, Error{Error: "the room's consumer limit is reached (one per member; --room-max-consumers)"}
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeConsumerExists:
		return 0, nil // a concurrent request made it with another start: a reset repairs that
	}
	return unavailable("create consumer", err)
}

func isAPIError(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr)
}

// resets remembers the last reset of each consumer on this node, and the
// replacements running.
type resets struct {
	mu        sync.Mutex
	last      map[string]time.Time
	replacing map[string]bool
}

// silentGrace: how much longer than the stream a silent consumer is given
// to answer its info before it is replaced.
const silentGrace = 50 * time.Millisecond

// startReplace reports whether no replacement of key runs here, and marks
// one running.
func (r *resets) startReplace(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.replacing[key] {
		return false
	}
	if r.replacing == nil {
		r.replacing = map[string]bool{}
	}
	r.replacing[key] = true
	return true
}

func (r *resets) endReplace(key string) {
	r.mu.Lock()
	delete(r.replacing, key)
	r.mu.Unlock()
}

func (s *Server) allowReset(key string) bool {
	s.resets.mu.Lock()
	defer s.resets.mu.Unlock()
	now := s.d.Now()
	if s.resets.last == nil {
		s.resets.last = map[string]time.Time{}
	}
	if t, ok := s.resets.last[key]; ok && now.Sub(t) < minResetInterval {
		return false
	}
	for k, t := range s.resets.last { // keep the map small
		if now.Sub(t) > time.Minute {
			delete(s.resets.last, k)
		}
	}
	s.resets.last[key] = now
	return true
}

// Reap deletes the room consumers of revoked users, on every node (a
// delete is idempotent), until ctx ends: at start for users revoked
// earlier, then at each revoke. There is no "leave a room" operation, so a
// revoke is the only way a member stops being one.
func (s *Server) Reap(ctx context.Context) {
	for ctx.Err() == nil {
		err := kv.NewUsers(s.d.JS).Watch(ctx, func(u store.User) {
			if u.Status == store.StatusRevoked {
				go s.deleteConsumersOf(ctx, u.SignPub)
			}
		}, func() {})
		if ctx.Err() != nil {
			return
		}
		if s.d.Log != nil {
			s.d.Log.Debug("consumer reaper: users watch ended; restarting", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// deleteConsumersOf deletes member's consumer in every room it belongs to,
// retrying while the cluster has no quorum.
func (s *Server) deleteConsumersOf(ctx context.Context, member string) {
	if len(member) < 16 {
		return
	}
	name := authn.RoomConsumer(member)
	for attempt := 0; attempt < 30 && ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		if ok, _ := s.d.Gate(); !ok {
			continue
		}
		rooms, err := s.roomIDsOf(ctx, member)
		if err != nil {
			continue
		}
		failed := false
		for _, id := range rooms {
			// deleteGone, not one DeleteConsumer: nats-server never answers
			// the delete of a consumer whose leader is gone, yet applies
			// it; the next delete then says "not found".
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := s.deleteGone(dctx, RoomStream(id), name)
			cancel()
			switch {
			case err == nil:
				if s.d.Log != nil {
					s.d.Log.Info("deleted a revoked member's room consumer (or it was gone)", "member", member, "room", id, "consumer", name)
				}
			case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
			default:
				failed = true
			}
		}
		if !failed {
			return
		}
	}
}

// roomIDsOf lists the rooms member belongs to (rooms_by_member keys
// "<member>.<room>").
func (s *Server) roomIDsOf(ctx context.Context, member string) ([]string, error) {
	b, err := s.d.JS.KeyValue(ctx, kv.RoomsByMemberBucket)
	if err != nil {
		return nil, err
	}
	keys, err := b.ListKeysFiltered(ctx, member+".*")
	if err != nil {
		return nil, err
	}
	var out []string
	for k := range keys.Keys() {
		out = append(out, strings.TrimPrefix(k, member+"."))
	}
	return out, nil
}
