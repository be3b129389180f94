package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/identity"
)

// fault is what a failover run does to one node.
type fault string

const (
	faultStop       fault = "stop"        // the client's node, SIGTERM
	faultKill       fault = "kill"        // the client's node, SIGKILL
	faultLeaderKill fault = "leader-kill" // the stream leader, SIGKILL
)

// failoverShape is one failover run's workload: count messages at rate,
// the fault after message at is acked.
type failoverShape struct {
	count int
	rate  float64
	at    int
}

// mFailover runs clientcheck's probe (its library, as `clientcheck` runs
// it) against the process cluster c and injects f after message at; it
// returns the longest gap between receipts. The faulted node is started
// again and the cluster is healthy again when it returns.
func mFailover(ctx context.Context, c chaos.Cluster, hc *chaos.HealthClient, m *member, f fault, sh failoverShape) (time.Duration, string, error) {
	cfg := probe.Config{Servers: m.servers, APIURLs: m.apis, CA: c.TLS().ClientCA, Cert: c.TLS().OperatorCert, Key: c.TLS().OperatorKey,
		Identity: m.id, Count: sh.count, Rate: sh.rate, Drain: 20 * time.Second}
	// A room made up front, so the stream (and its leader) is known.
	if err := m.createRoom(ctx, "bench-"+rand.Text()[:6]); err != nil {
		return 0, "", err
	}
	cfg.Room = m.room.Name
	stream := api.RoomStream(m.room.ID)
	if f != faultLeaderKill {
		// stop and kill are about the client's node while the stream's
		// leader survives (issue 12's ≤ 200 ms case): the client is given
		// only the other nodes' URLs, so its node is never the leader.
		leader, err := mStreamLeader(ctx, c, stream)
		if err != nil {
			return 0, "", err
		}
		cfg.Servers = nil
		for _, n := range c.Nodes() {
			if n.Name() != leader {
				cfg.Servers = append(cfg.Servers, n.ClientURL())
			}
		}
	}
	var (
		victim   chaos.Node
		faultErr error
		wg       sync.WaitGroup
		election time.Duration // leader-kill: the stream's, in this run
	)
	cfg.OnAcked = func(n int, server string) {
		if n != sh.at {
			return
		}
		target := c.Node(server)
		if f == faultLeaderKill {
			leader, err := mStreamLeader(ctx, c, stream)
			if err != nil {
				faultErr = err
				return
			}
			target = c.Node(leader)
		}
		if target == nil {
			faultErr = fmt.Errorf("no node %q to %s", server, f)
			return
		}
		victim = target
		wg.Add(1)
		go func() { // OnAcked must not block the publisher
			defer wg.Done()
			if f == faultStop {
				faultErr = target.Stop(ctx)
				return
			}
			k, ok := target.(chaos.Killer)
			if !ok {
				faultErr = fmt.Errorf("target %s cannot kill", c.Target())
				return
			}
			killed := time.Now()
			if faultErr = k.Kill(ctx, chaos.DefaultLease); faultErr == nil && f == faultLeaderKill {
				election = mElection(ctx, c, stream, target.Name(), killed)
			}
		}()
	}
	rep, err := probe.Run(ctx, cfg)
	wg.Wait()
	if victim != nil {
		if serr := victim.Start(ctx); serr != nil {
			return 0, "", fmt.Errorf("restart %s: %w", victim.Name(), serr)
		}
		if _, herr := hc.WaitHealthy(ctx, c.Nodes()...); herr != nil {
			return 0, "", herr
		}
	}
	if err != nil {
		return 0, "", fmt.Errorf("clientcheck (%s): %w", f, err)
	}
	if faultErr != nil {
		return 0, "", fmt.Errorf("%s: %w", f, faultErr)
	}
	if victim == nil {
		return 0, "", fmt.Errorf("%s: the fault never ran", f)
	}
	var notes []string
	if !rep.OK() {
		notes = append(notes, fmt.Sprintf("membershipd %s: lost %d duplicated %d", f, rep.Lost, rep.Duplicated))
	}
	if f == faultLeaderKill {
		// The goal compares the gap with this run's election (issue 12:
		// gap <= election + 0.5 s).
		notes = append(notes, fmt.Sprintf("membershipd leader-kill: gap %d ms, the stream's election %d ms (kill to STREAM.INFO naming a new leader), gap - election %+d ms",
			rep.LongestGap.Milliseconds(), election.Milliseconds(), (rep.LongestGap-election).Milliseconds()))
	}
	return rep.LongestGap, strings.Join(notes, "; "), nil
}

// mElection measures the stream's election after victim, its leader, was
// killed at killed, through a running node (chaos.ElectionTime; -1 if
// none was seen within 30 s).
func mElection(ctx context.Context, c chaos.Cluster, stream, victim string, killed time.Time) time.Duration {
	for _, n := range c.Nodes() {
		if n.Name() == victim || !n.Running() {
			continue
		}
		nc, err := chaos.DialInternal(c, n, nats.Timeout(time.Second))
		if err != nil {
			continue
		}
		defer nc.Close()
		return chaos.ElectionTime(ctx, nc, stream, "", victim, killed, 30*time.Second)
	}
	return -1
}

// mStreamLeader asks any running node for stream's raft leader.
func mStreamLeader(ctx context.Context, c chaos.Cluster, stream string) (string, error) {
	var errs []error
	for _, n := range c.Nodes() {
		if !n.Running() {
			continue
		}
		nc, err := chaos.DialInternal(c, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		leader, err := streamLeader(ctx, nc, stream)
		nc.Close()
		if err == nil {
			return leader, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("leader of %s: %w", stream, errors.Join(errs...))
}

func streamLeader(ctx context.Context, nc *nats.Conn, stream string) (string, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(sctx, stream)
	if err != nil {
		return "", err
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader", stream)
	}
	return info.Cluster.Leader, nil
}

// reconnectOpts are the client options of every failover client on both
// clusters: all seeds, reconnect at once and forever, keep cycling seeds
// that refuse the login (a node without quorum does).
func reconnectOpts() []nats.Option {
	return []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond), nats.ReconnectJitter(0, 0),
		nats.PingInterval(2 * time.Second), nats.MaxPingsOutstanding(2), nats.IgnoreAuthErrorAbort(),
		// nats.go's default prints every async error (a refused reconnect,
		// an EOF) to stderr: hundreds of lines in a storm.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}
}

// plainFailover is the plain cluster's counterpart of mFailover: the same
// paced publisher (retry with the same Nats-Msg-Id until acked) and an
// ordered consumer on a fresh R3 stream, what a plain NATS client does.
func plainFailover(ctx context.Context, p *procPlain, dial func(...nats.Option) (*nats.Conn, error), f fault, sh failoverShape) (time.Duration, string, error) {
	nc, err := dial(reconnectOpts()...)
	if err != nil {
		return 0, "", err
	}
	defer nc.Close()
	s, err := plainSide(ctx, func() (*nats.Conn, error) { return dial(nats.NoReconnect()) })
	if err != nil {
		return 0, "", err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, "", err
	}
	if f != faultLeaderKill {
		// As for membershipd: the client's node is not the stream's leader.
		if err := plainLeaderAway(ctx, nc, s.stream, nc.ConnectedServerName()); err != nil {
			return 0, "", err
		}
	}
	cons, err := js.OrderedConsumer(ctx, s.stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, "", err
	}
	var (
		mu       sync.Mutex
		seen     = make([]bool, sh.count)
		got      int
		last     time.Time
		longest  time.Duration
		all      = make(chan struct{})
		victim   = -1
		faultErr error
		wg       sync.WaitGroup
	)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		if len(m.Data()) < 8 {
			return
		}
		n := int(binary.BigEndian.Uint64(m.Data()))
		mu.Lock()
		defer mu.Unlock()
		if n < 0 || n >= sh.count || seen[n] {
			return
		}
		seen[n] = true
		if !last.IsZero() && now.Sub(last) > longest {
			longest = now.Sub(last)
		}
		last = now
		if got++; got == sh.count {
			close(all)
		}
	}, jetstream.PullHeartbeat(500*time.Millisecond))
	if err != nil {
		return 0, "", err
	}
	defer cc.Stop()
	run := rand.Text()[:8]
	start := time.Now()
	for n := range sh.count {
		due := start.Add(time.Duration(float64(n) / sh.rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		data := make([]byte, 330) // a sealed clientcheck message's size
		binary.BigEndian.PutUint64(data, uint64(n))
		for {
			actx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			_, err := js.PublishMsg(actx, &nats.Msg{Subject: s.subject, Data: data, Header: nats.Header{}}, jetstream.WithMsgID(fmt.Sprintf("%s-%d", run, n)))
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return 0, "", ctx.Err()
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n == sh.at {
			name := nc.ConnectedServerName()
			if f == faultLeaderKill {
				if name, err = streamLeader(ctx, nc, s.stream); err != nil {
					return 0, "", err
				}
			}
			i, err := p.index(name)
			if err != nil {
				return 0, "", err
			}
			victim = i
			sig := syscall.SIGKILL
			if f == faultStop {
				sig = syscall.SIGTERM
			}
			wg.Add(1)
			go func() { defer wg.Done(); faultErr = p.signal(i, sig) }()
		}
	}
	note := ""
	select {
	case <-all:
	case <-time.After(20 * time.Second):
		// The gap is still open: it lasts at least until now.
		mu.Lock()
		note = fmt.Sprintf("plain %s: only %d of %d received 20 s after the last publish; the gap counts until then (a lower bound)", f, got, sh.count)
		longest = max(longest, time.Since(last))
		mu.Unlock()
	}
	wg.Wait()
	if victim >= 0 {
		if err := p.start(victim); err != nil {
			return 0, "", err
		}
		if err := plainReady(ctx, p, dial); err != nil {
			return 0, "", err
		}
	}
	if faultErr != nil {
		return 0, "", fmt.Errorf("plain %s: %w", f, faultErr)
	}
	mu.Lock()
	defer mu.Unlock()
	return longest, note, nil
}

// plainLeaderAway steps stream's leader down until it is not node (before
// any timed part of a run).
func plainLeaderAway(ctx context.Context, nc *nats.Conn, stream, node string) error {
	for range 20 {
		leader, err := streamLeader(ctx, nc, stream)
		if err == nil && leader != node {
			return nil
		}
		if err == nil {
			_, _ = nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("stream %s: leader still on %s after 20 step-downs", stream, node)
}

// plainReady waits until every plain server accepts the user and answers
// JetStream account info (a meta leader is known).
func plainReady(ctx context.Context, p *procPlain, dial func(...nats.Option) (*nats.Conn, error)) error {
	for _, u := range p.urls() {
		for {
			err := func() error {
				nc, err := dial(nats.CustomInboxPrefix("_INBOX"), nats.NoReconnect(), func(o *nats.Options) error { o.Servers = []string{u}; o.Url = u; return nil })
				if err != nil {
					return err
				}
				defer nc.Close()
				js, err := jetstream.New(nc)
				if err != nil {
					return err
				}
				actx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				_, err = js.AccountInfo(actx)
				return err
			}()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("plain %s not ready: %w", u, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// failClosed kills every node but the first of the process cluster and
// returns the time from the quorum loss (the second kill done) to the
// first login the survivor refuses.
func failClosed(ctx context.Context, c chaos.Cluster, id *identity.Identity) (time.Duration, error) {
	nodes := c.Nodes()
	for _, n := range nodes[1:] {
		k, ok := n.(chaos.Killer)
		if !ok {
			return 0, fmt.Errorf("target %s cannot kill", c.Target())
		}
		if err := k.Kill(ctx, chaos.DefaultLease); err != nil {
			return 0, err
		}
	}
	t0 := time.Now()
	deadline := t0.Add(60 * time.Second)
	for time.Now().Before(deadline) {
		nc, err := chaos.DialAs(c, nodes[0], id)
		if err != nil {
			if strings.Contains(strings.ToLower(err.Error()), "authorization") {
				return time.Since(t0), nil
			}
		} else {
			nc.Close()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, errors.New("the survivor still admits the user 60 s after quorum loss")
}

// storm connects clients (16 at a time), kills one node with kill, and
// returns the time from the kill until every client that lost its
// connection was re-admitted, how many were not within limit, and how many
// lost their connection.
//
// victimAddr is the killed node's client host:port: a storm whose clients
// all connected elsewhere measures nothing, so that is an error.
func storm(ctx context.Context, clients int, dial func(...nats.Option) (*nats.Conn, error), victimAddr string, kill func() error, limit time.Duration) (time.Duration, int, int, error) {
	type client struct {
		nc      *nats.Conn
		dropped atomic.Bool
		back    atomic.Int64 // unix ns of the reconnect
	}
	cs := make([]*client, clients)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= clients {
					return
				}
				cl := &client{}
				opts := append(reconnectOpts(),
					nats.DisconnectErrHandler(func(*nats.Conn, error) { cl.dropped.Store(true) }),
					nats.ReconnectHandler(func(*nats.Conn) { cl.back.Store(time.Now().UnixNano()) }))
				nc, err := dial(opts...)
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("client %d: %w", i, err) })
					return
				}
				cl.nc = nc
				cs[i] = cl
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, cl := range cs {
			if cl != nil && cl.nc != nil {
				cl.nc.Close()
			}
		}
	}()
	if firstErr != nil {
		return 0, 0, 0, firstErr
	}
	onVictim := 0
	for _, cl := range cs {
		if cl.nc.ConnectedAddr() == victimAddr {
			onVictim++
		}
	}
	if onVictim == 0 {
		return 0, 0, 0, fmt.Errorf("none of %d clients connected to the node to be killed (%s): nothing to measure", clients, victimAddr)
	}
	t0 := time.Now()
	if err := kill(); err != nil {
		return 0, 0, 0, err
	}
	deadline := t0.Add(limit)
	for {
		waiting, dropped, latest := 0, 0, t0
		for _, cl := range cs {
			if !cl.dropped.Load() && cl.nc.IsConnected() {
				continue
			}
			dropped++
			b := cl.back.Load()
			if b == 0 || !cl.nc.IsConnected() {
				waiting++
				continue
			}
			if bt := time.Unix(0, b); bt.After(latest) {
				latest = bt
			}
		}
		// Done once every client on the victim has noticed the kill (the
		// first look may come before any has) and none is still away.
		if waiting == 0 && dropped >= onVictim {
			return latest.Sub(t0), 0, dropped, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Since(t0), waiting + max(onVictim-dropped, 0), dropped, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}
