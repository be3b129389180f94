package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// Gate timings (see quorum package and notes/nats-facts.md).
const (
	gateTick    = 250 * time.Millisecond
	gateTimeout = 500 * time.Millisecond
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
	js       jetstream.JetStream
	http     *http.Server
	gate     *quorum.Tracker
	auth     *authn.Authenticator
	id       *identity.Identity
	allow    allowlist
	users    store.Users // the control-plane users store (KV or SQLite)
	api      *api.Server // the signed control plane (nil on a SQLite node)

	started time.Time
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{}

	mu       sync.Mutex
	opened   []kv.Opened // nil until every bucket is open
	waiting  string      // what bucket opening waits for
	fatalErr error
	stopOnce sync.Once
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
	}
	n.auth = authn.New(cfg.BusAuth, id.NKey(), n.allow, n.inQuorum, n.log.With("component", "authn"))
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
		loops = append(loops, n.openBuckets, n.heartbeatLoop, n.pingLoop)
	}
	if err := n.startHTTP(); err != nil {
		n.shutdown()
		return err
	}
	if n.api != nil {
		loops = append(loops, n.api.Reap) // revoked members' consumers
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
		age := int64(-1)
		if t, ok := n.gate.LastPut(); ok {
			age = time.Since(t).Milliseconds()
		}
		b, _ := json.Marshal(clusterinfo.Pong{Node: n.cfg.Name, PutAgeMS: age})
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
func (n *Node) openBuckets(ctx context.Context) {
	deadline := time.Now().Add(n.cfg.BootstrapBudget)
	for attempt := 1; ; attempt++ {
		var (
			opened []kv.Opened
			err    error
		)
		if n.metaLeader() == "" {
			// Requests sent before the meta layer has a leader are dropped
			// without a reply; asking the local server costs nothing.
			err = errNoMetaLeader
		} else {
			opened, err = kv.EnsureAll(ctx, n.js, n.cfg.KVReplicas, time.Second)
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
			n.watchUsers(ctx)
			return
		}
		why := kv.Explain(err, n.srv.NumRoutes()+1, n.cfg.KVReplicas)
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
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

var errNoMetaLeader = errors.New("no JetStream meta leader known to this node")

// heartbeatLoop writes this node's heartbeat into the R3 nonce bucket; an
// acked put is the one signal a minority can never fake.
func (n *Node) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(gateTick)
	defer t.Stop()
	subj := kv.HeartbeatSubject(n.cfg.Name)
	for {
		pctx, cancel := context.WithTimeout(ctx, gateTimeout)
		_, err := n.js.Publish(pctx, subj, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
		cancel()
		if err == nil {
			n.gate.PutSucceeded(time.Now())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pingLoop asks every node for a Pong; answers feed the gate's grace rule.
func (n *Node) pingLoop(ctx context.Context) {
	t := time.NewTicker(gateTick)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, gateTimeout)
		raw, _ := clusterinfo.Collect(pctx, n.nc, clusterinfo.PingSubject, n.cfg.size())
		cancel()
		now := time.Now()
		for _, b := range raw {
			var p clusterinfo.Pong
			if json.Unmarshal(b, &p) != nil || p.Node == "" || p.Node == n.cfg.Name {
				continue
			}
			age := time.Duration(-1)
			if p.PutAgeMS >= 0 {
				age = time.Duration(p.PutAgeMS) * time.Millisecond
			}
			n.gate.PeerAnswered(p.Node, now, age)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Verdict is the quorum gate's current decision; later layers deny requests
// on it.
func (n *Node) Verdict() quorum.Verdict { return n.gate.Verdict(time.Now()) }

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
			Node: n.cfg.Name, JS: n.js, Replicas: n.cfg.KVReplicas, Gate: n.inQuorum,
			MaxConsumers: n.cfg.RoomMaxConsumers, Cluster: n.cfg.Cluster,
			Lookup: n.allow.Lookup, Log: n.log.With("component", "api"),
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
	n.http = &http.Server{
		Handler:           mux,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := n.http.Serve(tls.NewListener(l, tlsCfg)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("https server", "err", err)
		}
	}()
	return nil
}
