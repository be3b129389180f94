// Package probe is the data-plane client check: a real authenticated
// client (identity key, client certificate, CA, all seed URLs) creates or
// joins an end-to-end encrypted room through the control plane, publishes
// numbered messages with JetStream acks while its own control-plane-made
// pull consumer reads them back, and reports sent / acked / received / lost / duplicated /
// out-of-order, the reconnects with their failover gaps, the longest gap
// between receipts and publish-to-receive latency.
//
// Failover: a publish in flight when the connection drops is cancelled at
// once (nats.go would otherwise wait for its timeout) and retried on the
// new connection with the same Nats-Msg-Id, so JetStream stores it once;
// a message is retried until it is acked or the context ends, never
// skipped. The reading side resets its consumer when a delivery went
// missing (a gap after a reconnect), its leader went silent,
// and whenever acked messages stop arriving (see reader).
package probe

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// Config is one probe run.
type Config struct {
	Servers       []string // NATS seed URLs, tls://HOST:PORT (all nodes)
	APIURLs       []string // control-plane base URLs https://HOST:PORT, same order as Servers
	CA, Cert, Key string   // client CA, client certificate and key (TLS is always verified)
	Identity      *identity.Identity
	Count         int     // messages to publish (default 1000)
	Rate          float64 // messages per second; 0 = as fast as acks allow
	// Room is the room name: "" makes a fresh "clientcheck-<8 hex>" room; a
	// room of the caller's with this name is joined, else it is created.
	Room           string
	PublishTimeout time.Duration // per publish attempt, default 500ms
	Drain          time.Duration // wait for stragglers after the last ack, default 10s
	// OnAcked is called after message n (1-based) is acked, with the name
	// of the server the client is connected to now. Specs inject faults
	// from here; it runs on the publishing goroutine, so it must not block
	// long.
	OnAcked func(n int, server string)
	// OnPublish is called once per message when its publishing ends: acked
	// (err nil), or given up with err (the context ended: the message may
	// or may not be stored). first is the first attempt's start; stream and
	// msgID are the room stream and the message's Nats-Msg-Id; server is
	// where the client is connected now. A nemesis records it as history.
	OnPublish func(stream, msgID string, n int, first, end time.Time, server string, err error)
	// OnReceive is called for every message of this run handed on by the
	// reader (in stream order, once per stream sequence), with its stream
	// sequence. It runs under the reader's lock: it must not block.
	OnReceive func(stream, msgID string, n int, seq uint64, at time.Time, server string)
	// Stop, when closed, ends publishing after the message in flight (a
	// run of unknown length: Count is then an upper bound); the drain
	// still waits for every acked message.
	Stop <-chan struct{}
	Log  *slog.Logger
}

// Defaults.
const (
	DefaultCount          = 1000
	DefaultPublishTimeout = 500 * time.Millisecond
	DefaultDrain          = 10 * time.Second
)

// Timings of the NATS connection and the consumer.
const (
	reconnectWait = 50 * time.Millisecond
	connTimeout   = 2 * time.Second
	pingInterval  = 2 * time.Second        // with 2 outstanding: a silent server is noticed in ~4-6 s
	heartbeat     = 500 * time.Millisecond // nats.go resets the consumer after 2 missed heartbeats
	pullExpiry    = 5 * time.Second
	// setupBudget bounds connecting and creating the consumer.
	setupBudget = 20 * time.Second
	// stallLimit: a publish that made no progress this long while the
	// server reports permission violations, or refuses it for good (see
	// permanent), ends the run. Not shorter: after a failover the client
	// can land on a node whose membership watch still lags behind a room
	// made just before (its ACL lacks the room until the watch catches up
	// and kicks the connection; the watch itself waits out the lost
	// leader's election): seen at 5 s on the simulated hosts under load.
	stallLimit  = 15 * time.Second
	maxBackoff  = 250 * time.Millisecond
	minBackoff  = 10 * time.Millisecond
	maxViolated = 20
)

func (c *Config) setDefaults() error {
	if len(c.Servers) == 0 {
		return errors.New("no NATS server URL")
	}
	if len(c.APIURLs) == 0 {
		return errors.New("no control-plane URL")
	}
	if c.Identity == nil {
		return errors.New("no identity")
	}
	if c.Count == 0 {
		c.Count = DefaultCount
	}
	if c.Count < 1 {
		return fmt.Errorf("count %d: want at least 1", c.Count)
	}
	if c.Rate < 0 {
		return fmt.Errorf("rate %g: want 0 (as fast as acks allow) or more", c.Rate)
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.Drain <= 0 {
		c.Drain = DefaultDrain
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// payload is a message's plaintext.
type payload struct {
	Run  string `json:"run"`
	N    int    `json:"n"`
	Sent int64  `json:"sent"` // unix ns of the first publish attempt
}

// runner is one Run's state.
type runner struct {
	cfg   Config
	log   *slog.Logger
	id    *identity.Identity
	self  string
	runID string
	led   *ledger
	cs    *connState

	api     *API
	room    api.Room
	subject string
	stream  string
	key     []byte

	mu         sync.Mutex
	violations []string
	replays    int
	replayMsgs []string
	badMsgs    int
	errSeen    map[string]*throttled
}

// throttled counts one repeated async error between log lines.
type throttled struct {
	logged time.Time
	count  int
}

// errLogEvery is how often a repeated async error is logged.
const errLogEvery = 3 * time.Second

// throttle counts an async error and reports whether to log it now, with
// the number of times it occurred since it was last logged.
func (r *runner) throttle(msg string) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.errSeen == nil {
		r.errSeen = map[string]*throttled{}
	}
	t := r.errSeen[msg]
	if t == nil {
		t = &throttled{}
		r.errSeen[msg] = t
	}
	t.count++
	if !t.logged.IsZero() && time.Since(t.logged) < errLogEvery {
		return 0, false
	}
	n := t.count
	t.logged, t.count = time.Now(), 0
	return n, true
}

// Run performs one probe. The Report is filled as far as the run got, also
// when an error is returned (e.g. the context ended mid-publish). Loss and
// duplication are reported, not returned as errors: see Report.OK.
func Run(ctx context.Context, cfg Config) (Report, error) {
	start := time.Now()
	if err := cfg.setDefaults(); err != nil {
		return Report{}, err
	}
	runID, err := randomHex(8)
	if err != nil {
		return Report{}, err
	}
	r := &runner{
		cfg: cfg, log: cfg.Log, id: cfg.Identity, self: cfg.Identity.SignPub(),
		runID: runID, led: newLedger(cfg.Count),
	}
	rep, err := r.run(ctx)
	rep.Room, rep.RoomID, rep.RunID = r.room.Name, r.room.ID, r.runID
	r.mu.Lock()
	rep.Violations = append([]string(nil), r.violations...)
	rep.Replays = r.replays
	rep.ReplayViolations = append([]string(nil), r.replayMsgs...)
	r.mu.Unlock()
	rep.Elapsed = time.Since(start)
	return rep, err
}

func (r *runner) run(ctx context.Context) (Report, error) {
	a, err := NewAPI(r.cfg.APIURLs, r.cfg.CA, r.id)
	if err != nil {
		return Report{Count: r.cfg.Count}, err
	}
	defer a.CloseIdle()
	r.api = a
	fresh, err := r.setupRoom(ctx, a)
	if err != nil {
		return Report{Count: r.cfg.Count}, err
	}
	r.log.Info("room ready", "room", r.room.Name, "id", r.room.ID, "stream", r.stream, "fresh", fresh, "run", r.runID)

	nc, js, rd, err := r.connect(ctx, fresh)
	if err != nil {
		return r.led.report(), err
	}
	defer nc.Close()
	sctx, stopSupervisor := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); rd.supervise(sctx) }()
	defer func() {
		stopSupervisor()
		wg.Wait()
		rd.stop()
	}()

	if err := r.publishAll(ctx, js); err != nil {
		rep := r.led.report()
		rep.ConsumerRestarts = rd.replaced()
		return rep, err
	}
	r.drain(ctx)
	rep := r.led.report()
	rep.ConsumerRestarts = rd.replaced()
	r.mu.Lock()
	bad := r.badMsgs
	r.mu.Unlock()
	if bad > 0 {
		r.log.Warn("messages that failed to decrypt or parse", "count", bad)
	}
	return rep, nil
}

// setupRoom creates the room (or joins an existing one of the caller's)
// and learns its key. fresh reports a room created by this run.
func (r *runner) setupRoom(ctx context.Context, a *API) (fresh bool, err error) {
	name := r.cfg.Room
	if name != "" {
		room, ok, err := findRoom(ctx, a, name, r.self)
		if err != nil {
			return false, err
		}
		if ok {
			return false, r.join(ctx, a, room)
		}
	} else {
		suffix, err := randomHex(4)
		if err != nil {
			return false, err
		}
		name = "clientcheck-" + suffix
	}
	// The room id follows from this client and the idempotency key, so
	// the key is wrapped and its fingerprint signed for the id up front.
	idem, req, key, err := NewRoomRequest(r.id, name)
	if err != nil {
		return false, err
	}
	room, err := a.CreateRoom(ctx, idem, req)
	var he *HTTPError
	if errors.As(err, &he) && he.Code == 409 {
		// A create that failed over after the first node committed it, or
		// a race with another probe: join what is there.
		if room, ok, ferr := findRoom(ctx, a, name, r.self); ferr == nil && ok {
			return false, r.join(ctx, a, room)
		}
	}
	if err != nil {
		return false, fmt.Errorf("create room %q: %w", name, err)
	}
	if err := r.setRoom(room); err != nil {
		return false, err
	}
	// Read the key back as a joining member would: proves the server
	// stored the creator's copy and commitment intact.
	got, _, err := a.OpenRoomKey(ctx, room.ID, nil)
	if err != nil {
		return false, fmt.Errorf("room %s: read back my key: %w", room.ID, err)
	}
	if string(got) != string(key) {
		return false, fmt.Errorf("room %s: the key read back is not the key this client created", room.ID)
	}
	r.key = key
	return true, nil
}

// findRoom finds the caller's room called name, preferring one it created.
func findRoom(ctx context.Context, a *API, name, self string) (api.Room, bool, error) {
	rooms, err := a.Rooms(ctx)
	if err != nil {
		return api.Room{}, false, fmt.Errorf("list rooms: %w", err)
	}
	var found api.Room
	ok := false
	for _, rm := range rooms {
		if rm.Name != name {
			continue
		}
		if !ok || (rm.Creator == self && found.Creator != self) {
			found, ok = rm, true
		}
	}
	return found, ok, nil
}

// join reads and checks the caller's key of an existing room: a key whose
// grant or fingerprint does not check out is refused (e2e.OpenRoomKey).
func (r *runner) join(ctx context.Context, a *API, room api.Room) error {
	if err := r.setRoom(room); err != nil {
		return err
	}
	key, _, err := a.OpenRoomKey(ctx, room.ID, nil)
	if err != nil {
		return fmt.Errorf("room %s (%s): %w", room.ID, room.Name, err)
	}
	r.key = key
	return nil
}

func (r *runner) setRoom(room api.Room) error {
	if room.ID == "" {
		return fmt.Errorf("room %q: the server returned no room id", room.Name)
	}
	r.room = room
	r.subject, r.stream = api.RoomSubject(room.ID), api.RoomStream(room.ID)
	if room.Subject != "" && room.Subject != r.subject {
		r.log.Warn("room subject differs from the contract; using the server's", "contract", r.subject, "server", room.Subject)
		r.subject = room.Subject
	}
	if room.Stream != "" && room.Stream != r.stream {
		r.log.Warn("room stream differs from the contract; using the server's", "contract", r.stream, "server", room.Stream)
		r.stream = room.Stream
	}
	return nil
}

// connect dials NATS with every seed and starts reading the room,
// retrying both within setupBudget.
func (r *runner) connect(ctx context.Context, fresh bool) (*nats.Conn, jetstream.JetStream, *reader, error) {
	tlsCfg, err := pki.ClientTLSConfig(r.cfg.CA, r.cfg.Cert, r.cfg.Key)
	if err != nil {
		return nil, nil, nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, setupBudget)
	defer cancel()
	for attempt := 1; ; attempt++ {
		nc, js, rd, err := r.connectOnce(sctx, tlsCfg, fresh)
		if err == nil {
			return nc, js, rd, nil
		}
		r.log.Warn("connect attempt failed", "attempt", attempt, "err", err)
		if serr := sleepUntil(sctx, time.Now().Add(500*time.Millisecond)); serr != nil {
			if ctx.Err() != nil {
				return nil, nil, nil, ctx.Err()
			}
			return nil, nil, nil, fmt.Errorf("connect and subscribe: %w", err)
		}
	}
}

func (r *runner) connectOnce(ctx context.Context, tlsCfg *tls.Config, fresh bool) (nc *nats.Conn, js jetstream.JetStream, rd *reader, err error) {
	kp := r.id.KeyPair()
	r.cs = newConnState("")
	cs := r.cs
	rdr := newReader(r) // the handlers below use it; rd is only the result
	opts := []nats.Option{
		nats.Name("clientcheck"),
		nats.Secure(tlsCfg),
		nats.Nkey(r.id.NKey(), kp.Sign),
		nats.CustomInboxPrefix(authn.InboxPrefix(r.self)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(0, 0),
		nats.Timeout(connTimeout),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(2),
		// A node without quorum refuses logins; keep cycling the seeds
		// instead of closing after two refusals by the same server.
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if c.IsClosed() {
				return // our own Close, or nats.go gave up (publishes then fail with ErrConnectionClosed)
			}
			now := time.Now()
			from := cs.disconnected()
			r.led.disconnected(now, from)
			r.log.Info("disconnected", "server", from, "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			now := time.Now()
			to := c.ConnectedServerName()
			cs.reconnected(to)
			r.led.reconnected(now, to)
			rdr.reconnected()
			r.log.Info("reconnected", "server", to, "url", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				r.violation(err)
				return
			}
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			// A node without quorum refuses every reconnect (50 ms apart):
			// say so once every few seconds, with a count.
			if n, ok := r.throttle(err.Error()); ok {
				r.log.Warn("async NATS error", "subject", subj, "err", err, "times", n)
			}
		}),
	}
	nc, err = nats.Connect(strings.Join(r.cfg.Servers, ","), opts...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect %s: %w", strings.Join(r.cfg.Servers, ","), err)
	}
	defer func() {
		if err != nil {
			nc.Close()
		}
	}()
	server := nc.ConnectedServerName()
	cs.setInitial(server)
	r.led.connected(server)
	r.log.Info("connected", "server", server, "url", nc.ConnectedUrlRedacted())

	js, err = jetstream.New(nc)
	if err != nil {
		return nil, nil, nil, err
	}
	rdr.js = js
	if !fresh {
		// Only this run's messages matter: start after the current last
		// message. (DeliverNew would be re-applied by a consumer reset
		// before the first delivery, skipping what was published meanwhile.)
		last, err := r.lastSeq(ctx, js)
		if err != nil {
			return nil, nil, nil, err
		}
		rdr.first = last + 1
	}
	// Retried on this connection: a node that learns of the new membership
	// a moment after admitting us closes the connection, and the client's
	// reconnect carries the room in its ACL.
	for {
		err = rdr.start(ctx)
		if err == nil {
			return nc, js, rdr, nil
		}
		r.log.Warn("consumer not created yet", "err", err)
		if serr := sleepUntil(ctx, time.Now().Add(200*time.Millisecond)); serr != nil {
			return nil, nil, nil, err
		}
	}
}

// lastSeq is the stream's last sequence (a member may read its room's
// stream info).
func (r *runner) lastSeq(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	for {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := js.Stream(sctx, r.stream)
		cancel()
		if err == nil {
			return st.CachedInfo().State.LastSeq, nil
		}
		r.log.Warn("stream info", "stream", r.stream, "err", err)
		if serr := sleepUntil(ctx, time.Now().Add(200*time.Millisecond)); serr != nil {
			return 0, fmt.Errorf("find the last message of %s: %w%s", r.stream, err, r.violationHint())
		}
	}
}

func (r *runner) bad(what string, err error) {
	r.mu.Lock()
	r.badMsgs++
	r.mu.Unlock()
	r.log.Debug("unusable message", "what", what, "err", err)
}

func (r *runner) violation(err error) {
	msg := strings.TrimPrefix(err.Error(), nats.ErrPermissionViolation.Error()+": ")
	r.log.Warn("permission violation", "err", msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.violations) < maxViolated {
		r.violations = append(r.violations, msg)
	}
}

// replay records a replayed envelope (a second stream message with an id
// handed on before).
func (r *runner) replay(err error) {
	r.log.Warn("replay violation", "err", err)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replays++
	if len(r.replayMsgs) < maxViolated {
		r.replayMsgs = append(r.replayMsgs, err.Error())
	}
}

func (r *runner) violationHint() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.violations) == 0 {
		return ""
	}
	return " (server reported: " + strings.Join(r.violations, "; ") + ")"
}

func (r *runner) hasViolations() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.violations) > 0
}

// publishAll publishes messages 1..Count in order, each until acked.
func (r *runner) publishAll(ctx context.Context, js jetstream.JetStream) error {
	start := time.Now()
	lastProgress := start
	for n := 1; n <= r.cfg.Count; n++ {
		select {
		case <-r.cfg.Stop:
			return nil
		default:
		}
		if r.cfg.Rate > 0 {
			due := start.Add(time.Duration(float64(n-1) / r.cfg.Rate * float64(time.Second)))
			if err := sleepUntil(ctx, due); err != nil {
				return fmt.Errorf("message %d: %w", n, err)
			}
		}
		sentAt := time.Now()
		plain, err := json.Marshal(payload{Run: r.runID, N: n, Sent: sentAt.UnixNano()})
		if err != nil {
			return err
		}
		sealed, err := e2e.Seal(r.key, r.room.ID, r.id, plain)
		if err != nil {
			return err
		}
		msgID := fmt.Sprintf("%s-%d", r.runID, n)
		r.led.sent(n, sentAt)
		err = r.publishOne(ctx, js, n, msgID, sealed, &lastProgress)
		if r.cfg.OnPublish != nil {
			r.cfg.OnPublish(r.stream, msgID, n, sentAt, time.Now(), r.cs.current(), err)
		}
		if err != nil {
			return err
		}
		r.led.acked(n, time.Now())
		lastProgress = time.Now()
		if r.cfg.OnAcked != nil {
			r.cfg.OnAcked(n, r.cs.current())
		}
	}
	return nil
}

// publishOne publishes one message until it is acked. An attempt is
// cancelled when the connection drops and retried on the next connection
// with the same message id.
func (r *runner) publishOne(ctx context.Context, js jetstream.JetStream, n int, msgID string, data []byte, lastProgress *time.Time) error {
	backoff := time.Duration(0)
	// refused: since when, and how often since the last warning, attempts
	// were refused at once (no server-side wait). A refusal that persists
	// is logged at Warn every errLogEvery: it is not a failover (those end
	// with an election) and only the server's answer tells what it is.
	var refused, warned time.Time
	refusals := 0
	for attempt := 1; ; attempt++ {
		down, err := r.cs.waitUp(ctx)
		if err != nil {
			return fmt.Errorf("message %d (attempt %d): %w", n, attempt, err)
		}
		actx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		stop := make(chan struct{})
		var dropped bool
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-down:
				dropped = true
				cancel()
			case <-stop:
			}
		}()
		t0 := time.Now()
		m := &nats.Msg{Subject: r.subject, Data: data, Header: nats.Header{}}
		ack, err := js.PublishMsg(actx, m, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(r.stream))
		close(stop)
		wg.Wait()
		cancel()
		if err == nil {
			if attempt > 1 {
				r.log.Info("published after retry", "n", n, "attempts", attempt, "duplicate", ack.Duplicate, "seq", ack.Sequence)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("message %d (attempt %d): %w", n, attempt, ctx.Err())
		}
		if errors.Is(err, nats.ErrConnectionClosed) {
			return fmt.Errorf("message %d (attempt %d): %w", n, attempt, err)
		}
		r.log.Debug("publish attempt failed", "n", n, "attempt", attempt, "dropped", dropped, "after", time.Since(t0), "err", err)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeStoreFailed && roomFull(apiErr) {
			// No fault ends this: say so at once rather than after stallLimit.
			return fmt.Errorf("message %d: the room is full (%s): it rejects new messages until old ones expire", n, apiErr.Description)
		}
		if (permanent(err) || r.hasViolations()) && time.Since(*lastProgress) > stallLimit {
			return fmt.Errorf("message %d: no progress for %s: %w%s", n, time.Since(*lastProgress).Round(time.Millisecond), err, r.violationHint())
		}
		switch {
		case dropped:
			backoff, refused = 0, time.Time{} // retry at once on the next connection
		case time.Since(t0) >= r.cfg.PublishTimeout/2:
			backoff, refused = 0, time.Time{} // the attempt itself took its time
		default:
			// An immediate refusal (no responders, no stream leader yet).
			now := time.Now()
			if refused.IsZero() {
				refused, warned, refusals = now, now, 0
			}
			refusals++
			if now.Sub(warned) >= errLogEvery {
				r.log.Warn("publish refused at once, retrying", "n", n, "for", now.Sub(refused).Round(time.Millisecond),
					"refusals", refusals, "err", err, "server", r.cs.current())
				warned, refusals = now, 0
			}
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			if err := sleepUntil(ctx, time.Now().Add(backoff)); err != nil {
				return fmt.Errorf("message %d (attempt %d): %w", n, attempt, err)
			}
		}
	}
}

// permanent reports a publish refusal that no retry can fix. Everything
// else is retried: timeouts, no responders, 503s and also 409 "duplicate
// message id is in process" (10158), which a stream without quorum answers
// while the first attempt's proposal is pending.
func permanent(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jetstream.JSErrCodeStreamNotFound, // the room's stream is gone
		jsErrCodeStreamMismatch,                        // the subject is stored by another stream
		jetstream.JSErrCodeStreamMessageExceedsMaximum: // never fits
		return true
	}
	return false
}

// roomFull reports a room stream at its MaxBytes or MaxMsgs: it discards
// new messages (DiscardNew, see api.RoomStreamConfig) and stays full until
// old ones age out, so every publish is refused at once with a 503
// (10077) that looks transient. Retried as one, it hung TestFailoverKill,
// which reused one room until its 16 MiB were used up (~25 runs of 1200
// messages), with every node up and nothing in their logs above debug.
func roomFull(apiErr *jetstream.APIError) bool {
	d := apiErr.Description
	return strings.Contains(d, "maximum bytes exceeded") || strings.Contains(d, "maximum messages exceeded")
}

// Error codes nats.go has no constant for: "expected stream does not
// match" and a failed store, whose description says why (a full stream:
// "maximum bytes exceeded", "maximum messages exceeded").
const (
	jsErrCodeStreamMismatch jetstream.ErrorCode = 10060
	jsErrCodeStoreFailed    jetstream.ErrorCode = 10077
)

// drain waits until every acked message was received, Drain passes or ctx
// ends.
func (r *runner) drain(ctx context.Context) {
	t := time.NewTimer(r.cfg.Drain)
	defer t.Stop()
	for r.led.waiting() > 0 {
		select {
		case <-r.led.notify:
		case <-t.C:
			r.log.Warn("drain timed out", "waiting_for", r.led.waiting(), "drain", r.cfg.Drain)
			return
		case <-ctx.Done():
			return
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
