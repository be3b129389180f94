// Package netproxy injects network faults into NATS cluster routes between
// loopback nodes of a test cluster.
//
// Every route between node i and node j passes through a directed TCP proxy
// P(i→j): node i's route URLs point at P(i→*), each forwarding to node j's
// real route listener. The proxy is a plain byte forwarder (routes are TLS;
// nothing is parsed). Faults are applied per proxy:
//
//   - Cut: live connections are reset and new ones are reset on accept, like
//     a crashed peer (no graceful step-down, no FIN handshake).
//   - Blackhole: live connections stop moving bytes in both directions and
//     new connections are accepted but never forwarded, like dropped packets.
//     The proxy simply stops reading, so TCP backpressure builds instead of
//     an unbounded buffer.
//   - DropToTarget / DropToClient: one direction of every connection stops
//     moving bytes (the proxy stops reading that side), the other keeps
//     flowing: a one-way link. This is a stream-level model of one-way packet
//     loss: with real one-way loss the surviving direction also stalls once
//     its unacknowledged window fills (its ACKs ride the lost direction),
//     and retransmits leak through whenever a rule is only one-way on one of
//     two TCP flows; here the surviving direction keeps delivering. For a
//     NATS route the effect on the far side is the same either way: pings go
//     unanswered, so both ends eventually drop the route.
//   - Pass: normal forwarding for new connections; connections frozen by a
//     blackhole or a one-way drop are closed so the peers reconnect cleanly
//     rather than resume a stream with a hole in it.
//
// Independently of the mode, SetLatency delays every chunk by a fixed time
// in both directions.
package netproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is the fault state of a proxy.
type Mode int

const (
	Pass Mode = iota
	Cut
	Blackhole
	// DropToTarget loses the bytes the dialling side sends to the target;
	// the target's bytes still reach the dialler.
	DropToTarget
	// DropToClient loses the target's bytes to the dialling side.
	DropToClient
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Cut:
		return "cut"
	case Blackhole:
		return "blackhole"
	case DropToTarget:
		return "drop-to-target"
	case DropToClient:
		return "drop-to-client"
	default:
		return fmt.Sprintf("Mode(%d)", int(m))
	}
}

// DialTimeout bounds the per-connection dial to the target.
const DialTimeout = 2 * time.Second

// Stats is a snapshot of a proxy's counters.
type Stats struct {
	Accepted   uint64 // connections accepted by the listener
	Forwarded  uint64 // connections whose upstream dial succeeded
	Refused    uint64 // connections reset on accept because the mode was Cut
	Blackholed uint64 // connections accepted in Blackhole mode (never dialled)
	DialFailed uint64 // upstream dials that failed
	Bytes      uint64 // payload bytes forwarded, both directions
	LiveConns  int    // connections currently tracked (dialling, forwarding or frozen)
}

// Proxy forwards every accepted TCP connection to a fixed target.
type Proxy struct {
	name   string
	target string
	ln     net.Listener
	log    *slog.Logger
	ctx    context.Context // cancelled by Close so in-flight dials abort
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop + one per tracked connection

	mu     sync.Mutex
	mode   Mode
	closed bool
	conns  map[*conn]struct{}

	latency atomic.Int64 // nanoseconds added to every chunk, both directions

	accepted, forwarded, refused, blackholed, dialFailed, bytes atomic.Uint64
}

// conn is one proxied client connection and, once dialled, its upstream.
type conn struct {
	client   net.Conn
	upstream net.Conn // set under Proxy.mu after a successful dial
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{} // closed when the conn is torn down
	closed   bool          // guarded by Proxy.mu
	// frozen[dir] is set by Blackhole (both) or a one-way drop (one) and
	// never cleared: a frozen stream has lost bytes, so healing closes it
	// instead of resuming it.
	frozen [2]atomic.Bool
}

// Directions of a proxied connection.
const (
	toTarget = 0 // client → upstream
	toClient = 1 // upstream → client
)

func (c *conn) anyFrozen() bool { return c.frozen[toTarget].Load() || c.frozen[toClient].Load() }

// freeze freezes the directions mode loses; it reports whether any
// direction was newly frozen.
func (c *conn) freeze(m Mode) bool {
	changed := false
	for dir, lost := range lostDirs(m) {
		if lost && !c.frozen[dir].Swap(true) {
			changed = true
		}
	}
	return changed
}

// lostDirs says which directions mode m loses.
func lostDirs(m Mode) [2]bool {
	switch m {
	case Blackhole:
		return [2]bool{true, true}
	case DropToTarget:
		return [2]bool{true, false}
	case DropToClient:
		return [2]bool{false, true}
	}
	return [2]bool{}
}

// New listens on listenAddr and forwards each accepted connection to target.
// A nil log discards output.
func New(name, listenAddr, target string, log *slog.Logger) (*Proxy, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("netproxy %s: listen %s: %w", name, listenAddr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		name:   name,
		target: target,
		ln:     ln,
		log:    log.With("proxy", name),
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*conn]struct{}),
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		acceptLoop(ln, ctx.Done(), p.log, p.accept)
	}()
	return p, nil
}

// Name returns the proxy's name.
func (p *Proxy) Name() string { return p.name }

// Addr returns the host:port the proxy actually listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address connections are forwarded to.
func (p *Proxy) Target() string { return p.target }

// Mode returns the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// SetMode switches the fault mode and applies it to live connections: Cut
// resets them, Blackhole freezes them, a one-way drop freezes one direction,
// Pass closes the frozen ones.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	old := p.mode
	p.mode = m
	affected := 0
	for c := range p.conns {
		switch m {
		case Cut:
			p.closeLocked(c, true)
			affected++
		case Blackhole, DropToTarget, DropToClient:
			if c.freeze(m) {
				affected++
			}
		case Pass:
			if c.anyFrozen() {
				p.closeLocked(c, false)
				affected++
			}
		}
	}
	live := len(p.conns)
	p.mu.Unlock()
	if old != m || affected > 0 {
		p.log.Debug("netproxy mode change", "from", old, "to", m, "affected", affected, "live", live)
	}
}

// SetLatency delays every chunk forwarded from now on by d, both
// directions (0 removes the delay).
func (p *Proxy) SetLatency(d time.Duration) {
	p.latency.Store(int64(d))
	p.log.Debug("netproxy latency", "latency", d)
}

// Latency returns the current added delay.
func (p *Proxy) Latency() time.Duration { return time.Duration(p.latency.Load()) }

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	live := len(p.conns)
	p.mu.Unlock()
	return Stats{
		Accepted:   p.accepted.Load(),
		Forwarded:  p.forwarded.Load(),
		Refused:    p.refused.Load(),
		Blackholed: p.blackholed.Load(),
		DialFailed: p.dialFailed.Load(),
		Bytes:      p.bytes.Load(),
		LiveConns:  live,
	}
}

// Close stops the listener, closes every connection and waits for all
// goroutines. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	p.cancel()
	err := p.ln.Close()
	for c := range p.conns {
		p.closeLocked(c, false)
	}
	p.mu.Unlock()
	// Everything a goroutine can block on (Accept, Read, Write, dial, the
	// blackhole gate) has been closed or cancelled above, so this returns.
	p.wg.Wait()
	return err
}

// accept runs on the accept loop; it registers the conn under the lock so a
// concurrent SetMode or Close always sees it.
func (p *Proxy) accept(nc net.Conn) {
	p.accepted.Add(1)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = nc.Close()
		return
	}
	if p.mode == Cut {
		p.mu.Unlock()
		p.refused.Add(1)
		resetClose(nc)
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	c := &conn{client: nc, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	c.freeze(p.mode)
	p.conns[c] = struct{}{}
	p.wg.Add(1) // safe: closed is false and we hold mu, so Close is not waiting yet
	p.mu.Unlock()
	go p.serve(c)
}

func (p *Proxy) serve(c *conn) {
	defer p.wg.Done()
	defer p.finish(c)

	if c.frozen[toTarget].Load() && c.frozen[toClient].Load() {
		// Blackholed on arrival: never dial (the target must not see it) and
		// never read, just hold the socket until heal, cut or close.
		p.blackholed.Add(1)
		<-c.done
		return
	}

	d := net.Dialer{Timeout: DialTimeout}
	up, err := d.DialContext(c.ctx, "tcp", p.target)
	if err != nil {
		p.dialFailed.Add(1)
		p.log.Debug("netproxy dial failed", "target", p.target, "err", err)
		return
	}
	p.mu.Lock()
	if c.closed {
		p.mu.Unlock()
		_ = up.Close()
		return
	}
	c.upstream = up
	p.mu.Unlock()
	p.forwarded.Add(1)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.pipe(c, toTarget, up, c.client)
	}()
	p.pipe(c, toClient, c.client, up)
	wg.Wait()
}

// pipe copies src→dst until EOF or error. On EOF it propagates a half-close
// so protocols that shut down one direction still work; on error it tears
// the whole conn down so the other direction unblocks.
func (p *Proxy) pipe(c *conn, dir int, dst, src net.Conn) {
	var readAt time.Time
	_, err := io.Copy(&gatedWriter{p, c, dir, dst, &readAt}, &gatedReader{c, dir, src, &readAt})
	if err != nil || !c.pass(dir) { // a frozen stream must not leak a FIN either
		p.finish(c)
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	p.finish(c)
}

func (p *Proxy) finish(c *conn) {
	p.mu.Lock()
	p.closeLocked(c, false)
	p.mu.Unlock()
}

// closeLocked tears c down; reset sends RST instead of FIN (crash-like).
// It never blocks, so it is safe under mu.
func (p *Proxy) closeLocked(c *conn, reset bool) {
	if c.closed {
		return
	}
	c.closed = true
	delete(p.conns, c)
	close(c.done)
	c.cancel()
	for _, nc := range []net.Conn{c.client, c.upstream} {
		if nc == nil {
			continue
		}
		if reset {
			resetClose(nc)
		} else {
			_ = nc.Close()
		}
	}
}

// pass reports whether bytes may flow in direction dir. If that direction is
// frozen it blocks until the conn is torn down, which is what stops reading
// and builds backpressure.
func (c *conn) pass(dir int) bool {
	if c.frozen[dir].Load() {
		<-c.done
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// gatedReader/gatedWriter deliberately hide ReaderFrom/WriterTo so io.Copy
// uses its bounded 32 KiB buffer and consults the gate on every chunk.
// Bytes already read when a blackhole starts are dropped at the writer gate
// (at most one buffer), like packets in flight.
//
// Latency: the reader stamps each chunk and the writer holds it until
// stamp+latency. Reading and writing share one goroutine, so under latency
// d a direction carries at most one 32 KiB buffer per d (320 KiB/s at
// 100 ms): ample for route control traffic, and it keeps memory bounded.
type gatedReader struct {
	c      *conn
	dir    int
	src    net.Conn
	readAt *time.Time
}

func (r *gatedReader) Read(b []byte) (int, error) {
	if !r.c.pass(r.dir) {
		return 0, net.ErrClosed
	}
	n, err := r.src.Read(b)
	*r.readAt = time.Now()
	return n, err
}

type gatedWriter struct {
	p      *Proxy
	c      *conn
	dir    int
	dst    net.Conn
	readAt *time.Time
}

func (w *gatedWriter) Write(b []byte) (int, error) {
	if d := time.Duration(w.p.latency.Load()); d > 0 {
		if wait := time.Until(w.readAt.Add(d)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-w.c.done:
				t.Stop()
				return 0, net.ErrClosed
			}
		}
	}
	if !w.c.pass(w.dir) {
		return 0, net.ErrClosed
	}
	n, err := w.dst.Write(b)
	w.p.bytes.Add(uint64(n))
	return n, err
}

// resetClose closes with SO_LINGER=0 so the peer sees RST, not a clean FIN.
func resetClose(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = nc.Close()
}

// acceptLoop calls handle for each accepted conn until ln is closed. Other
// accept errors (e.g. EMFILE) are retried with backoff rather than killing
// the listener mid-test.
func acceptLoop(ln net.Listener, done <-chan struct{}, log *slog.Logger, handle func(net.Conn)) {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-done:
				return
			default:
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.Debug("netproxy accept error", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		backoff = 0
		handle(nc)
	}
}

// Sink accepts and immediately closes every connection. Used as a node's
// Cluster.Advertise address so route gossip (INFO connect_urls) can never
// lead a peer to dial the real route listener and bypass the proxies.
type Sink struct {
	ln   net.Listener
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// NewSink listens on listenAddr.
func NewSink(listenAddr string) (*Sink, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("netproxy sink: listen %s: %w", listenAddr, err)
	}
	s := &Sink{ln: ln, done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		acceptLoop(ln, s.done, slog.New(slog.DiscardHandler), func(nc net.Conn) { _ = nc.Close() })
	}()
	return s, nil
}

// Addr returns the host:port the sink listens on.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Close stops the sink and waits for its goroutine. It is idempotent.
func (s *Sink) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.ln.Close()
	})
	s.wg.Wait()
	return err
}
