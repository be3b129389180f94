package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/membershipd/quorum"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
	"github.com/unibus/clusterkit/membershipd/store/sqlite"
)

// Version is stamped at build time (-ldflags "-X .../node.Version=...").
var Version = "dev"

// Gate timings (see the quorum package).
const (
	gateTick = 250 * time.Millisecond
	// putDeadline: a heartbeat put keeps running this long while later
	// ticks start their own, so a slow fsync delays proofs instead of
	// cancelling every one of them. The put counts from its send time.
	putDeadline = 4 * time.Second
	// maxPutsInFlight bounds the overlap (putDeadline / gateTick).
	maxPutsInFlight = 16
	// pingKeep: replies to pings older than this prove nothing now.
	pingKeep = time.Second
	// proofTimeout bounds one allowlist freshness check; the rule needs a
	// proof younger than 1 s, so a slower answer is useless anyway.
	proofTimeout = 500 * time.Millisecond
)

// Node is one running membershipd node.
type Node struct {
	cfg  Config
	log  *slog.Logger
	opts *server.Options
	srv  *server.Server
	nc   *nats.Conn
	// sysGuard drops messages on the internal subjects that a member had
	// the server deliver there (clusterinfo.InboxPrefix).
	sysGuard clusterinfo.Guard
	// skew estimates each peer's clock offset from its pongs (clockskew.go).
	skew  skewTracker
	js    jetstream.JetStream
	http  *http.Server
	gate  *quorum.Tracker
	auth  *authn.Authenticator
	id    *identity.Identity
	allow allowlist
	users store.Users // the control-plane users store (KV or SQLite)
	api   *api.Server // the signed control plane (nil on a SQLite node)

	started time.Time
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{}

	mu       sync.Mutex
	opened   []kv.Opened // nil until every bucket is open
	waiting  string      // what bucket opening waits for
	hbWhy    string      // why the heartbeat bucket is not at R=N ("" once it is)
	fatalErr error
	stopOnce sync.Once

	usersWatchCancel    context.CancelFunc // restarts the users watch
	usersWatchRestarted time.Time
	roomsWatchCancel    context.CancelFunc // restarts the memberships watch
	proveNow            chan struct{}      // asks proofLoop for a check at once
	putNow              chan struct{}      // asks heartbeatLoop for a put at once
	// pingedBy: each peer daemon's last ping that reached this node (its
	// packets reach us, whether or not ours reach it).
	pingedBy map[string]pingSeen
}

// pingSeen is a peer's last ping: when it arrived and whether the peer's
// own gate then said no quorum.
type pingSeen struct {
	at       time.Time
	noQuorum bool
}

// New validates cfg, loads (or creates) the internal identity and builds
// the server options; nothing listens yet.
func New(cfg Config) (*Node, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts, err := buildOptions(&cfg)
	if err != nil {
		return nil, err
	}
	if err := checkStoreDir(&cfg); err != nil {
		return nil, err
	}
	id, created, err := identity.LoadOrCreate(cfg.InternalIDFile)
	if err != nil {
		return nil, configErr("--internal-id-file: %v", err)
	}
	n := &Node{
		cfg:  cfg,
		log:  cfg.Log.With("node", cfg.Name),
		opts: opts,
		gate: quorum.NewTracker(quorum.DefaultParams(cfg.size())),
		id:   id,
		done: make(chan struct{}),

		proveNow: make(chan struct{}, 1),
		putNow:   make(chan struct{}, 1),
	}
	if created {
		n.log.Info("created the internal service identity", "file", cfg.InternalIDFile, "nkey", id.NKey())
	}
	if cfg.Store == StoreSQLite {
		st, err := sqlite.Open(cfg.DBPath)
		if err != nil {
			return nil, configErr("--db %s: %v", cfg.DBPath, err)
		}
		n.users = st
		n.allow = &sqliteAllowlist{st: st}
	} else {
		n.allow = newKVAllowlist()
		n.hbWhy = "heartbeat bucket " + kv.HeartbeatsBucket + " not open yet"
	}
	n.auth = authn.New(cfg.BusAuth, id.NKey(), n.allow, n.serving, n.log.With("component", "authn"))
	opts.CustomClientAuthentication = n.auth
	return n, nil
}

// inQuorum is the gate every authorization asks. A standalone SQLite node
// has no replication to lose, so it is always "in quorum" with itself.
func (n *Node) inQuorum() (bool, string) {
	if n.cfg.Store == StoreSQLite {
		return true, "standalone (sqlite store)"
	}
	v := n.Verdict()
	return v.InQuorum, v.Reason
}

// serving is what every admission and control-plane request asks: in
// quorum, the heartbeat bucket spans the cluster, and (once loaded) the
// allowlist is provably current. Denials name the first missing piece.
func (n *Node) serving() (bool, string) {
	if n.cfg.Store == StoreSQLite {
		return true, "standalone (sqlite store)"
	}
	if ok, why := n.inQuorum(); !ok {
		return false, why
	}
	if why := n.heartbeatProblem(); why != "" {
		return false, "no quorum: " + why
	}
	if al, ok := n.allow.(*kvAllowlist); ok {
		lp := al.proof(time.Now())
		// Not loaded yet is the authenticator's own, older check (so the
		// on-node CLI can seed the first admin while the load finishes).
		if lp.Loaded {
			if lv := n.gate.Allowlist(time.Now(), lp); !lv.Fresh {
				return false, lv.Reason
			}
		}
	}
	return true, "serving"
}

// heartbeatProblem is why the heartbeat bucket does not prove a cluster
// majority yet ("" when it is at R=N).
func (n *Node) heartbeatProblem() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hbWhy
}

// allowlistVerdict is the allowlist freshness decision now.
func (n *Node) allowlistVerdict() (quorum.ListVerdict, bool) {
	al, ok := n.allow.(*kvAllowlist)
	if !ok {
		return quorum.ListVerdict{}, false
	}
	now := time.Now()
	return n.gate.Allowlist(now, al.proof(now)), true
}

// Start brings up the listeners and the background loops. It returns once
// the listeners are up; quorum comes later (or never, for a lone node).
func (n *Node) Start() error {
	n.started = time.Now()
	srv, err := server.NewServer(n.opts)
	if err != nil {
		return fmt.Errorf("create nats server: %w", err)
	}
	srv.SetLoggerV2(&natsLogger{log: n.log.With("component", "nats")}, false, false, false)
	n.srv = srv
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats server on %s:%d did not become ready in 10s", n.cfg.Bind, n.cfg.ClientPort)
	}
	if n.cfg.Store == StoreKV {
		if err := importSystemRequests(srv); err != nil {
			n.log.Warn("operator system requests unavailable", "err", err)
		}
	}
	kp := n.id.KeyPair()
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Name("membershipd-internal:"+n.cfg.Name),
		nats.Nkey(n.id.NKey(), kp.Sign),
		nats.MaxReconnects(-1), nats.NoCallbacksAfterClientClose())
	if err != nil {
		srv.Shutdown()
		return fmt.Errorf("internal connection: %w", err)
	}
	n.nc = nc
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	loops := []func(context.Context){n.enforceLoop}
	if n.cfg.Store == StoreSQLite {
		loops = append(loops, n.sqliteRevocationLoop)
	} else {
		n.js, err = jetstream.New(nc)
		if err != nil {
			n.shutdown()
			return fmt.Errorf("jetstream context: %w", err)
		}
		n.users = kv.NewUsers(n.js)
		if err := n.subscribe(); err != nil {
			n.shutdown()
			return err
		}
		loops = append(loops, n.openBuckets, n.heartbeatLoop, n.pingLoop, n.proofLoop, n.sweepConnsLoop, n.bringupTimeline, n.replicaHealLoop)
	}
	if err := n.startHTTP(); err != nil {
		n.shutdown()
		return err
	}
	if n.api != nil {
		loops = append(loops, n.api.Reap) // revoked members' consumers
		loops = append(loops, func(ctx context.Context) { n.api.KeepPlacement(ctx, n.streamsLed) })
	}
	for _, loop := range loops {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); loop(ctx) }()
	}
	n.log.Info("node started", "client", n.ClientURL(), "healthz", n.HealthzURL(), "store", n.cfg.Store,
		"bus_auth", string(n.cfg.BusAuth), "routes", len(n.cfg.Routes), "cluster_size", n.cfg.size())
	return nil
}

// ClientURL is the TLS data-plane URL.
func (n *Node) ClientURL() string {
	return "tls://" + net.JoinHostPort(n.cfg.Bind, strconv.Itoa(n.cfg.ClientPort))
}

// HealthzURL is the HTTPS health endpoint.
func (n *Node) HealthzURL() string {
	return "https://" + net.JoinHostPort(n.cfg.Bind, strconv.Itoa(n.cfg.HTTPPort)) + "/healthz"
}

// Done is closed when the node stops (Stop, or a fatal error).
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is the fatal error that stopped the node, if any.
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fatalErr
}

// Stop shuts the node down gracefully (raft leaders step down first).
func (n *Node) Stop() { n.stop(nil) }

func (n *Node) stop(fatal error) {
	n.stopOnce.Do(func() {
		n.mu.Lock()
		n.fatalErr = fatal
		n.mu.Unlock()
		if n.cancel != nil {
			n.cancel()
		}
		n.shutdown()
		n.wg.Wait()
		close(n.done)
		n.log.Info("node stopped")
	})
}

func (n *Node) shutdown() {
	if n.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = n.http.Shutdown(ctx)
		cancel()
	}
	if n.nc != nil {
		n.nc.Close()
	}
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
	if n.users != nil {
		_ = n.users.Close()
	}
}

func (n *Node) subscribe() error {
	if _, err := n.nc.Subscribe(clusterinfo.PingSubject, func(m *nats.Msg) {
		if !n.sysGuard.Genuine(m) {
			return
		}
		now := time.Now()
		var ping clusterinfo.Ping
		_ = json.Unmarshal(m.Data, &ping) // an older pinger sends no body
		if ping.Node != "" && ping.Node != n.cfg.Name {
			n.mu.Lock()
			if n.pingedBy == nil {
				n.pingedBy = map[string]pingSeen{}
			}
			n.pingedBy[ping.Node] = pingSeen{at: now, noQuorum: ping.NoQuorum}
			n.mu.Unlock()
		}
		pong := clusterinfo.Pong{Node: n.cfg.Name, Seq: ping.Seq, PutAgeMS: -1, PutStreakMS: -1, ListAgeMS: -1, ListStreakMS: -1, HopAgeMS: -1, HopStreakMS: -1}
		if t, ok := n.gate.LastPut(); ok {
			pong.PutAgeMS = now.Sub(t).Milliseconds()
			if st, ok := n.gate.PutStreak(now); ok {
				pong.PutStreakMS = st.Milliseconds()
			}
		}
		if al, ok := n.allow.(*kvAllowlist); ok {
			if age, streak := al.proofAges(now); age >= 0 {
				pong.ListAgeMS, pong.ListStreakMS = age.Milliseconds(), streak.Milliseconds()
			}
			if age, streak, ok := n.gate.FreshestPeerProof(now, ping.Node); ok {
				pong.HopAgeMS, pong.HopStreakMS = age.Milliseconds(), streak.Milliseconds()
			}
		}
		pong.NowMS = time.Now().UnixMilli()
		b, _ := json.Marshal(pong)
		_ = m.Respond(b)
	}); err != nil {
		return fmt.Errorf("subscribe %s: %w", clusterinfo.PingSubject, err)
	}
	if _, err := n.nc.Subscribe(clusterinfo.AppliedSubject, func(m *nats.Msg) {
		if !n.sysGuard.Genuine(m) {
			return
		}
		var rev uint64
		if al, ok := n.allow.(*kvAllowlist); ok {
			rev = al.RoomsRevision()
		}
		b, _ := json.Marshal(clusterinfo.Applied{Node: n.cfg.Name, RoomsRev: rev})
		_ = m.Respond(b)
	}); err != nil {
		return fmt.Errorf("subscribe %s: %w", clusterinfo.AppliedSubject, err)
	}
	if _, err := n.nc.Subscribe(clusterinfo.StatusSubject, func(m *nats.Msg) {
		if !n.sysGuard.Genuine(m) {
			return
		}
		b, _ := json.Marshal(n.Status())
		_ = m.Respond(b)
	}); err != nil {
		return fmt.Errorf("subscribe %s: %w", clusterinfo.StatusSubject, err)
	}
	return n.nc.Flush()
}

// openBuckets retries until every bucket is open or the bootstrap budget is
// spent. A lone node sits here, not serving, until a quorum forms.
//
// Bring-up of a fresh cluster is a chain: meta leader, the meta leader's
// node creates the heartbeat bucket and the six control-plane buckets at
// once, each new stream elects its leader, then every node opens them.
// Each link is awaited by polling local server state (cheap) rather than
// by requests that the meta layer drops without a reply while it settles
// (each drop costs a whole request timeout).
func (n *Node) openBuckets(ctx context.Context) {
	deadline := time.Now().Add(n.cfg.BootstrapBudget)
	var metaSince time.Time // when this loop first saw a meta leader
	for attempt := 1; ; attempt++ {
		var (
			opened []kv.Opened
			err    error
		)
		// Requests sent before the meta layer has a leader are dropped
		// without a reply; asking the local server costs nothing, so poll
		// it briefly rather than sleeping a whole retry interval.
		n.awaitMetaLeader(ctx, metaLeaderWait)
		if !n.metaReady() {
			err = errNoMetaLeader
		} else {
			if metaSince.IsZero() {
				metaSince = time.Now()
			}
			// The heartbeat bucket and the control-plane buckets are
			// created together.
			// Only the meta leader's node creates (the others look): the
			// meta leader drops replies to concurrent identical creates.
			create := n.srv.JetStreamIsLeader()
			if create {
				// Placement needs every peer known to the meta leader
				// with its first stats; a create before that fails at
				// once with "no suitable peers" and costs a retry.
				n.awaitPlacementPeers(ctx, metaLeaderWait)
			} else if n.cfg.KVReplicas >= n.cfg.size() {
				// Every bucket gets a replica here: watch them appear
				// locally instead of asking (a look at a stream whose
				// first leader is still being elected goes unanswered
				// for the whole look timeout).
				n.awaitLocalBuckets(ctx, metaLeaderWait)
			}
			// A look at a stream created a moment ago gets no answer if it
			// arrives before the stream's first leader: keep looks short.
			// A create answers once the new stream has elected its leader
			// (0.3-1 s under load); with one creator no reply is dropped,
			// so it gets the time it needs.
			timeout := lookTimeout
			if create {
				timeout = createTimeout
			}
			if o, ok := n.localBuckets(); ok {
				// Every bucket's stream (and the heartbeat bucket at R=N)
				// is assigned here already and led: nothing to create, no
				// request.
				opened, err = o, nil
			} else {
				var hbErr error
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { defer wg.Done(); hbErr = n.ensureHeartbeats(ctx, timeout, create) }()
				if create {
					opened, err = kv.EnsureAll(ctx, n.js, n.cfg.KVReplicas, timeout)
				} else {
					opened, err = kv.OpenAll(ctx, n.js, timeout)
				}
				wg.Wait()
				if hbErr != nil {
					err = hbErr
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			n.mu.Lock()
			n.opened, n.waiting = opened, ""
			n.mu.Unlock()
			for _, o := range opened {
				if o.Replicas < n.cfg.KVReplicas {
					n.log.Warn("bucket has fewer replicas than --kv-replicas; left as is (raise it with `membershipd kv scale --replicas N`)",
						"bucket", o.Bucket, "replicas", o.Replicas, "want", n.cfg.KVReplicas)
				}
			}
			n.log.Info("control-plane buckets open", "attempts", attempt, "after", time.Since(n.started).Round(time.Millisecond).String())
			n.wg.Add(1)
			go func() { defer n.wg.Done(); n.watchMemberships(ctx) }()
			n.wg.Add(1)
			go func() { defer n.wg.Done(); n.roomsCheckLoop(ctx) }()
			n.watchUsers(ctx)
			return
		}
		why := kv.Explain(err, n.srv.NumRoutes()+1, n.cfg.KVReplicas)
		if errors.Is(err, errHeartbeats) {
			why = "waiting for the heartbeat bucket to be placed at R" + strconv.Itoa(n.cfg.size())
		}
		n.mu.Lock()
		n.waiting = why
		n.mu.Unlock()
		left := time.Until(deadline)
		n.log.Info("control-plane buckets not open yet", "attempt", attempt, "waiting_for", why, "err", err, "budget_left", left.Round(time.Second).String())
		if left <= 0 {
			n.log.Error("bootstrap budget spent without a quorum", "budget", n.cfg.BootstrapBudget.String(), "waiting_for", why)
			go n.stop(fmt.Errorf("control-plane buckets not open within the bootstrap budget %s: %s (a lone node never serves: start the other nodes)", n.cfg.BootstrapBudget, why))
			return
		}
		// "No suitable peers" (the third node has not joined the meta
		// group yet) answers at once: retry soon while bring-up is young.
		retry := 500 * time.Millisecond
		if metaSince.IsZero() || time.Since(metaSince) < fastRetryFor {
			retry = fastRetry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// Bring-up timings.
const (
	// metaLeaderWait: how long one attempt polls the local server for a
	// meta leader before counting as a failed attempt (a lone node keeps
	// logging why it waits at this pace).
	metaLeaderWait = 500 * time.Millisecond
	lookTimeout    = 300 * time.Millisecond
	createTimeout  = 2 * time.Second
	// fastRetryFor: for this long after the first meta leader, attempts
	// retry after fastRetry, later ones after 500 ms.
	fastRetryFor = 5 * time.Second
	fastRetry    = 50 * time.Millisecond
	// localPoll: how often bring-up re-reads local server state (meta
	// leader, placement peers, local bucket streams); a read is a lock
	// and a map walk, no network.
	localPoll = 10 * time.Millisecond
)

// localBuckets reports the buckets from this server's own stream
// assignments when every control-plane bucket and the heartbeat bucket at
// R=N are assigned here and have a leader (a node outside some bucket's
// replicas, e.g. at N=5 with R3 buckets, asks the cluster instead). It
// marks the heartbeat bucket as placed.
func (n *Node) localBuckets() ([]kv.Opened, bool) {
	out, ok := n.localBucketsState()
	if !ok {
		return nil, false
	}
	n.mu.Lock()
	n.hbWhy = ""
	n.mu.Unlock()
	select {
	case n.putNow <- struct{}{}:
	default:
	}
	return out, true
}

// localBucketsState is localBuckets without side effects.
func (n *Node) localBucketsState() ([]kv.Opened, bool) {
	jsz, err := n.srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Config: true})
	if err != nil || jsz == nil {
		return nil, false
	}
	replicas := map[string]int{}
	for _, a := range jsz.AccountDetails {
		for _, st := range a.Streams {
			// Led: the watches started next need the stream's leader.
			if st.Config != nil && st.Cluster != nil && st.Cluster.Leader != "" {
				replicas[st.Name] = st.Config.Replicas
			}
		}
	}
	if replicas[kv.StreamName(kv.HeartbeatsBucket)] != n.cfg.size() {
		return nil, false
	}
	out := make([]kv.Opened, 0, len(kv.Buckets))
	for _, b := range kv.Buckets {
		r, ok := replicas[kv.StreamName(b.Name)]
		if !ok {
			return nil, false
		}
		out = append(out, kv.Opened{Bucket: b.Name, Replicas: r})
	}
	return out, true
}

// awaitMetaLeader polls the local server until the meta layer has a leader
// that answers (metaReady), d passes or ctx ends.
func (n *Node) awaitMetaLeader(ctx context.Context, d time.Duration) {
	n.pollLocal(ctx, d, n.metaReady)
}

// metaReady: a meta leader is known and, when it is this node, it has
// taken up the role. A raft leader names itself before it has applied its
// log and only then serves the JetStream API; until that moment this node
// neither creates (JetStreamIsLeader is false) nor gets answers to looks
// (no server answers them), so an attempt made in between only waits out
// its timeouts.
func (n *Node) metaReady() bool {
	l := n.metaLeader()
	if l == "" {
		return false
	}
	return l != n.cfg.Name || n.srv.JetStreamIsLeader()
}

// awaitPlacementPeers polls, on the meta leader's node, until the meta
// leader knows enough peers with JetStream to place the heartbeat bucket
// at R=N (d passes, ctx ends, or the role moves on: then the attempt goes
// ahead and reports what is missing).
func (n *Node) awaitPlacementPeers(ctx context.Context, d time.Duration) {
	need := max(n.cfg.size(), n.cfg.KVReplicas)
	n.pollLocal(ctx, d, func() bool {
		return !n.srv.JetStreamIsLeader() || len(n.srv.JetStreamClusterPeers()) >= need
	})
}

// awaitLocalBuckets polls until every bucket is assigned here and led
// (localBuckets), this node becomes the meta leader (and so the creator),
// d passes or ctx ends.
func (n *Node) awaitLocalBuckets(ctx context.Context, d time.Duration) {
	n.pollLocal(ctx, d, func() bool {
		if n.srv.JetStreamIsLeader() {
			return true
		}
		_, ok := n.localBucketsState()
		return ok
	})
}

// pollLocal calls done every localPoll until it holds, d passes or ctx ends.
func (n *Node) pollLocal(ctx context.Context, d time.Duration, done func() bool) {
	deadline := time.Now().Add(d)
	for !done() && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(localPoll):
		}
	}
}

var (
	errNoMetaLeader = errors.New("no JetStream meta leader known to this node, or it has not taken up the role yet")
	errHeartbeats   = errors.New("heartbeat bucket not at R=N")
)

// ensureHeartbeats puts the heartbeat bucket at R=N; until it is, the node
// does not serve (a heartbeat below R=N proves no cluster majority).
func (n *Node) ensureHeartbeats(ctx context.Context, timeout time.Duration, create bool) error {
	n.mu.Lock()
	done := n.hbWhy == ""
	n.mu.Unlock()
	if done {
		return nil
	}
	size := n.cfg.size()
	hctx, cancel := context.WithTimeout(ctx, timeout)
	ensure := kv.CheckHeartbeats
	if create {
		ensure = kv.EnsureHeartbeats
	}
	o, err := ensure(hctx, n.js, size)
	cancel()
	n.mu.Lock()
	defer n.mu.Unlock()
	if err != nil {
		n.hbWhy = fmt.Sprintf("heartbeat bucket %s cannot be placed at R%d (the cluster size): %s",
			kv.HeartbeatsBucket, size, kv.Explain(err, n.srv.NumRoutes()+1, size))
		return fmt.Errorf("%w: %w", errHeartbeats, err)
	}
	n.hbWhy = ""
	// Put a heartbeat now rather than at the next tick.
	select {
	case n.putNow <- struct{}{}:
	default:
	}
	if o.Created {
		n.log.Info("heartbeat bucket created", "bucket", kv.HeartbeatsBucket, "replicas", o.Replicas)
	}
	return nil
}

// heartbeatLoop writes this node's heartbeat into the R=N heartbeat
// bucket every tick; an acked put is the one signal a minority can never
// fake. Puts overlap: a slow one keeps running (up to putDeadline) while
// the next tick starts its own, and each counts from its send time.
func (n *Node) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(gateTick)
	defer t.Stop()
	subj := kv.HeartbeatSubject(n.cfg.Name)
	var (
		wg       sync.WaitGroup
		inFlight atomic.Int32
	)
	defer wg.Wait()
	for {
		if inFlight.Load() < maxPutsInFlight {
			inFlight.Add(1)
			wg.Add(1)
			sent := time.Now()
			go func() {
				defer wg.Done()
				defer inFlight.Add(-1)
				pctx, cancel := context.WithTimeout(ctx, putDeadline)
				defer cancel()
				if _, err := n.js.Publish(pctx, subj, []byte(sent.UTC().Format(time.RFC3339Nano))); err == nil {
					n.gate.PutSucceeded(sent)
				}
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.putNow:
		}
	}
}

// pingLoop pings every node each tick without waiting for the answers:
// replies are stamped with the local time they arrive (never a peer's
// clock) as they come in, and replies to pings older than pingKeep are
// dropped.
func (n *Node) pingLoop(ctx context.Context) {
	var (
		mu       sync.Mutex
		sent     = map[uint64]time.Time{}
		answered = map[string]bool{} // peers that ever answered
	)
	// Under the internal inbox prefix: peers answer only such pings (Guard).
	inbox := clusterinfo.InboxPrefix + "." + nuid.Next()
	sub, err := n.nc.Subscribe(inbox, func(m *nats.Msg) {
		now := time.Now()
		p := clusterinfo.Pong{PutStreakMS: -1, ListAgeMS: -1, ListStreakMS: -1, HopAgeMS: -1, HopStreakMS: -1} // an older peer reports none of these
		if json.Unmarshal(m.Data, &p) != nil || p.Node == n.cfg.Name || p.Node == "" {
			return
		}
		if p.Seq != 0 { // 0: an older peer that does not echo it
			mu.Lock()
			at, ok := sent[p.Seq]
			mu.Unlock()
			if !ok || now.Sub(at) >= pingKeep {
				return
			}
			if p.NowMS != 0 {
				n.skew.observe(p.Node, at, now, p.NowMS)
			}
		}
		mu.Lock()
		answered[p.Node] = true
		mu.Unlock()
		n.gate.PeerReported(quorum.PeerReport{
			Node: p.Node, AnsweredAt: now,
			PutAge: msAge(p.PutAgeMS), PutStreak: msAge(p.PutStreakMS), ListAge: msAge(p.ListAgeMS), ListStreak: msAge(p.ListStreakMS),
			HopAge: msAge(p.HopAgeMS), HopStreak: msAge(p.HopStreakMS),
		})
	})
	if err != nil {
		n.log.Error("ping replies: subscribe failed; the gate will deny", "err", err)
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	t := time.NewTicker(gateTick)
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		now := time.Now()
		mu.Lock()
		sent[seq] = now
		for s, at := range sent {
			if now.Sub(at) >= pingKeep {
				delete(sent, s)
			}
		}
		mu.Unlock()
		b, _ := json.Marshal(clusterinfo.Ping{Node: n.cfg.Name, Seq: seq, NoQuorum: !n.gate.Verdict(now).InQuorum})
		_ = n.nc.PublishRequest(clusterinfo.PingSubject, inbox, b)
		// At start the first pings go out before the routes (or the
		// peers' subscriptions) are up and are lost: ping again soon
		// until every peer has answered once, not a whole tick later.
		// The rule is unchanged: answers still count for PeerFresh.
		var soon <-chan time.Time
		mu.Lock()
		young := len(answered) < n.cfg.size()-1 && time.Since(n.started) < startPingFor
		mu.Unlock()
		if young {
			soon = time.After(startPing)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-soon:
		}
	}
}

// Ping pace at start (pingLoop).
const (
	startPing    = 50 * time.Millisecond
	startPingFor = 10 * time.Second
)

// msAge turns a reported millisecond age into a duration; negative = none.
func msAge(ms int64) time.Duration {
	if ms < 0 {
		return -1
	}
	return time.Duration(ms) * time.Millisecond
}

// consumerLeader names the leader that this node's replica of a consumer
// follows (this node's name when it leads, "" while none is known) and
// whether this node holds a replica of it: the local raft state, which
// needs no leader to answer. Asked only by a reset whose consumer is
// silent, so it walks the server's consumers without a cache.
func (n *Node) consumerLeader(stream, consumer string) (string, bool) {
	if n.srv == nil {
		return "", false
	}
	jsz, err := n.srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Consumer: true})
	if err != nil {
		return "", false
	}
	for _, a := range jsz.AccountDetails {
		for _, st := range a.Streams {
			if st.Name != stream {
				continue
			}
			for _, c := range st.Consumer {
				if c != nil && c.Name == consumer {
					if c.Cluster == nil {
						return "", true
					}
					return c.Cluster.Leader, true
				}
			}
		}
	}
	return "", false
}

// Verdict is the quorum gate's current decision; later layers deny requests
// on it.
func (n *Node) Verdict() quorum.Verdict { return n.gate.Verdict(time.Now()) }

// streamsLed names the streams (any account) whose raft group this node
// leads, from its own server.
func (n *Node) streamsLed() []string {
	if n.srv == nil {
		return nil
	}
	jsz, err := n.srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range jsz.AccountDetails {
		for _, st := range a.Streams {
			if st.Cluster != nil && st.Cluster.Leader == n.cfg.Name {
				out = append(out, st.Name)
			}
		}
	}
	return out
}

func (n *Node) metaLeader() string {
	if n.srv == nil {
		return ""
	}
	jsz, err := n.srv.Jsz(&server.JSzOptions{})
	if err != nil || jsz == nil || jsz.Meta == nil {
		return ""
	}
	return jsz.Meta.Leader
}

// Status is this node's answer to `cluster report`.
func (n *Node) Status() clusterinfo.Status {
	v := n.Verdict()
	st := clusterinfo.Status{
		Node: n.cfg.Name, Cluster: n.cfg.Cluster, Version: Version,
		MetaLeader: n.metaLeader(), InQuorum: v.InQuorum, Reason: v.Reason,
		Features: featuresOf(n.opts, true),
		Ignored:  n.sysGuard.Ignored(),
	}
	if al, ok := n.allow.(*kvAllowlist); ok {
		st.Allowlist = al.summary()
	}
	if rz, err := n.srv.Routez(nil); err == nil {
		conns := map[string]int{}
		for _, r := range rz.Routes {
			conns[r.RemoteName]++
		}
		for name, c := range conns {
			st.Routes = append(st.Routes, clusterinfo.Route{Remote: name, Conns: c})
		}
		sort.Slice(st.Routes, func(i, j int) bool { return st.Routes[i].Remote < st.Routes[j].Remote })
	}
	return st
}

func (n *Node) startHTTP() error {
	tlsCfg, err := pki.ServerTLSConfig(n.cfg.ServerCert, n.cfg.ServerKey, n.cfg.ClientCA, false)
	if err != nil {
		return configErr("https TLS: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", n.serveHealthz)
	if n.js != nil {
		n.api = api.New(api.Deps{
			Node: n.cfg.Name, JS: n.js, Replicas: n.cfg.KVReplicas, Gate: n.apiGate,
			MaxConsumers: n.cfg.RoomMaxConsumers, Cluster: n.cfg.Cluster,
			Lookup: n.allow.Lookup, Log: n.log.With("component", "api"), Limits: n.cfg.Rooms,
			IsMember:       func(signPub, roomID string) bool { return slices.Contains(n.allow.Rooms(signPub), roomID) },
			MetaLeader:     n.metaLeader,
			ConsumerLeader: n.consumerLeader,
			PeerAlive: func(peer string) bool {
				// Pings go out every gateTick: four missed are a dead peer.
				return peer == n.cfg.Name || n.gate.AnsweredWithin(peer, time.Now(), 4*gateTick)
			},
			WaitApplied: func(ctx context.Context, rev uint64) []string {
				return clusterinfo.WaitApplied(ctx, n.nc, n.cfg.size(), rev)
			},
		})
		n.api.Register(mux)
	}
	addr := net.JoinHostPort(n.cfg.Bind, strconv.Itoa(n.cfg.HTTPPort))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return configErr("http port %s is not available: %v", addr, errors.Unwrap(err))
	}
	n.http = serveHTTPS(l, mux, tlsCfg, n.cfg.HTTP, n.log)
	return nil
}
