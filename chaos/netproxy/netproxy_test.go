package netproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echoServer answers each line with "<name>:<line>" and closes on EOF, so
// half-close propagation through the proxy is observable.
type echoServer struct {
	name     string
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func newEcho(t *testing.T, name string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{name: name, ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := io.WriteString(c, s.name+":"+sc.Text()+"\n"); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

func (s *echoServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New("test", "127.0.0.1:0", target, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends one line and returns the reply line.
func roundTrip(c net.Conn, msg string, timeout time.Duration) (string, error) {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

func mustEcho(t *testing.T, c net.Conn, want string) {
	t.Helper()
	got, err := roundTrip(c, "ping", 2*time.Second)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if got != want+":ping" {
		t.Fatalf("got %q, want %q", got, want+":ping")
	}
}

// expectClosed asserts the conn is closed/reset promptly (not a timeout).
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	start := time.Now()
	_, err := c.Read(make([]byte, 64))
	if err == nil {
		t.Fatal("read succeeded on a connection that should be closed")
	}
	if isTimeout(err) {
		t.Fatalf("read timed out after %v; want EOF/reset", time.Since(start))
	}
}

// expectSilent asserts nothing comes back within the deadline.
func expectSilent(t *testing.T, c net.Conn) {
	t.Helper()
	_, err := roundTrip(c, "ping", 300*time.Millisecond)
	if !isTimeout(err) {
		t.Fatalf("want read timeout, got %v", err)
	}
}

// expectRefused dials addr and asserts the connection is reset or closed at
// once. The RST can race the dial itself on loopback, so a dial error counts.
func expectRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		if isTimeout(err) {
			t.Fatalf("dial timed out: %v", err)
		}
		return
	}
	defer c.Close()
	expectClosed(t, c)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{Pass: "pass", Cut: "cut", Blackhole: "blackhole", DropToTarget: "drop-to-target", DropToClient: "drop-to-client", Mode(9): "Mode(9)"} {
		if m.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(m), m.String(), want)
		}
	}
}

func TestPass(t *testing.T) {
	e := newEcho(t, "echo")
	p := newProxy(t, e.addr())
	c := dial(t, p.Addr())
	mustEcho(t, c, "echo")
	mustEcho(t, c, "echo")
	st := p.Stats()
	if st.Accepted != 1 || st.Forwarded != 1 || st.LiveConns != 1 || st.Bytes == 0 {
		t.Fatalf("stats %+v", st)
	}
	if p.Mode() != Pass {
		t.Fatalf("mode %v", p.Mode())
	}
}

func TestModeChangeLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := New("logged", "127.0.0.1:0", "127.0.0.1:1", log)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetMode(Blackhole)
	p.SetMode(Blackhole) // no change, nothing affected: no line
	p.SetMode(Pass)
	out := buf.String()
	if strings.Count(out, "mode change") != 2 || !strings.Contains(out, "proxy=logged") || !strings.Contains(out, "to=blackhole") {
		t.Fatalf("log output:\n%s", out)
	}
}

func TestHalfClose(t *testing.T) {
	e := newEcho(t, "echo")
	p := newProxy(t, e.addr())
	c := dial(t, p.Addr())
	c.SetDeadline(time.Now().Add(2 * time.Second))
	io.WriteString(c, "a\nb\n")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The echo server only finishes (and closes) after seeing our FIN, so
	// ReadAll returning cleanly proves both half-closes were propagated.
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "echo:a\necho:b\n" {
		t.Fatalf("got %q", got)
	}
	waitFor(t, func() bool { return p.Stats().LiveConns == 0 })
}

func TestCut(t *testing.T) {
	e := newEcho(t, "echo")
	p := newProxy(t, e.addr())
	live := dial(t, p.Addr())
	mustEcho(t, live, "echo")

	p.SetMode(Cut)
	expectClosed(t, live)

	expectRefused(t, p.Addr()) // the kernel completes the handshake; the proxy resets it
	waitFor(t, func() bool { return p.Stats().Refused >= 1 })
	if n := e.accepted.Load(); n != 1 {
		t.Fatalf("target saw %d connections, want 1", n)
	}

	p.SetMode(Pass)
	mustEcho(t, dial(t, p.Addr()), "echo")
}

func TestBlackhole(t *testing.T) {
	e := newEcho(t, "echo")
	p := newProxy(t, e.addr())
	live := dial(t, p.Addr())
	mustEcho(t, live, "echo")

	p.SetMode(Blackhole)
	expectSilent(t, live)
	fresh := dial(t, p.Addr())
	expectSilent(t, fresh)
	if n := e.accepted.Load(); n != 1 {
		t.Fatalf("target saw %d connections during blackhole, want 1", n)
	}
	if st := p.Stats(); st.Blackholed != 1 || st.LiveConns != 2 {
		t.Fatalf("stats %+v", st)
	}

	// Heal: frozen connections are closed, new ones forward again.
	p.SetMode(Pass)
	expectClosed(t, live)
	expectClosed(t, fresh)
	mustEcho(t, dial(t, p.Addr()), "echo")
}

// TestBlackholeBackpressure checks the proxy stops reading rather than
// buffering: a writer must eventually block.
func TestBlackholeBackpressure(t *testing.T) {
	e := newEcho(t, "echo")
	p := newProxy(t, e.addr())
	c := dial(t, p.Addr())
	mustEcho(t, c, "echo")
	p.SetMode(Blackhole)

	c.SetWriteDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 64<<10)
	total := 0
	for total < 256<<20 {
		n, err := c.Write(buf)
		total += n
		if err != nil {
			if !isTimeout(err) {
				t.Fatalf("write: %v", err)
			}
			t.Logf("writer blocked after %d KiB", total>>10)
			return
		}
	}
	t.Fatalf("wrote %d MiB into a blackhole without blocking", total>>20)
}

func TestDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := newProxy(t, dead)
	expectRefused(t, p.Addr())
	waitFor(t, func() bool { return p.Stats().DialFailed == 1 })
}

func TestSink(t *testing.T) {
	s, err := NewSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 3 {
		expectRefused(t, s.Addr())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func urlAddr(t *testing.T, u string) string {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	if pu.Scheme != "nats-route" || pu.Hostname() != "127.0.0.1" {
		t.Fatalf("bad route url %q", u)
	}
	return pu.Host
}

// meshConn dials node j through node i's proxy P(i→j).
func meshConn(t *testing.T, m *Mesh, i, j int) net.Conn {
	t.Helper()
	return dial(t, m.Link(i, j).Addr())
}

func newTestMesh(t *testing.T, basePort int) (*Mesh, error) {
	t.Helper()
	names := []string{"n0", "n1", "n2"}
	var addrs []string
	for _, n := range names {
		addrs = append(addrs, newEcho(t, n).addr())
	}
	m, err := NewMesh(names, addrs, basePort, nil)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { m.Close() })
	return m, nil
}

func TestMesh(t *testing.T) {
	m, err := newTestMesh(t, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		urls := m.RouteURLsFor(i)
		if len(urls) != 2 {
			t.Fatalf("node %d: %d urls", i, len(urls))
		}
		// Each URL must reach a distinct peer, never node i itself.
		seen := map[string]bool{}
		for _, u := range urls {
			c := dial(t, urlAddr(t, u))
			got, err := roundTrip(c, "ping", 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			peer := strings.TrimSuffix(got, ":ping")
			if peer == "n"+strconv.Itoa(i) || seen[peer] {
				t.Fatalf("node %d url %s reached %q", i, u, peer)
			}
			seen[peer] = true
		}
		if _, _, err := net.SplitHostPort(m.AdvertiseFor(i)); err != nil {
			t.Fatal(err)
		}
		expectRefused(t, m.AdvertiseFor(i))
	}

	// Live routes on every directed link before the fault.
	live := map[[2]int]net.Conn{}
	for i := range 3 {
		for j := range 3 {
			if i != j {
				live[[2]int{i, j}] = meshConn(t, m, i, j)
				mustEcho(t, live[[2]int{i, j}], "n"+strconv.Itoa(j))
			}
		}
	}

	m.Isolate(0, Cut)
	for k, c := range live {
		if k[0] == 0 || k[1] == 0 {
			expectClosed(t, c) // both directions, live connection
			expectRefused(t, m.Link(k[0], k[1]).Addr())
		} else {
			mustEcho(t, c, "n"+strconv.Itoa(k[1]))
			mustEcho(t, meshConn(t, m, k[0], k[1]), "n"+strconv.Itoa(k[1]))
		}
	}

	m.HealAll()
	for i := range 3 {
		for j := range 3 {
			if i != j {
				mustEcho(t, meshConn(t, m, i, j), "n"+strconv.Itoa(j))
			}
		}
	}
}

func TestMeshPartition(t *testing.T) {
	m, err := newTestMesh(t, 0)
	if err != nil {
		t.Fatal(err)
	}
	m.Partition([]int{0}, []int{1, 2}, Blackhole)
	expectSilent(t, meshConn(t, m, 0, 1))
	expectSilent(t, meshConn(t, m, 2, 0))
	mustEcho(t, meshConn(t, m, 1, 2), "n2")
	mustEcho(t, meshConn(t, m, 2, 1), "n1")
	m.HealAll()
	mustEcho(t, meshConn(t, m, 0, 1), "n1")
	mustEcho(t, meshConn(t, m, 2, 0), "n0")
}

func TestMeshFixedPorts(t *testing.T) {
	// Outside the Linux ephemeral range; pid-derived to avoid collisions
	// between concurrent test binaries. 9 ports needed for N=3.
	base := 20000 + os.Getpid()%9990
	m, err := newTestMesh(t, base)
	if err != nil {
		t.Skipf("cannot bind fixed ports at %d: %v", base, err)
	}
	const n = 3
	wantURLs := make([][]string, n)
	for i := range n {
		wantURLs[i] = m.RouteURLsFor(i)
		for j := range n {
			var addr string
			if i == j {
				addr = m.AdvertiseFor(i)
			} else {
				addr = m.Link(i, j).Addr()
			}
			if want := "127.0.0.1:" + strconv.Itoa(base+i*n+j); addr != want {
				t.Fatalf("slot (%d,%d) = %s, want %s", i, j, addr, want)
			}
		}
	}
	mustEcho(t, meshConn(t, m, 0, 1), "n1")
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	// A rebuilt mesh (e.g. after a restart) yields identical route URLs.
	m2, err := newTestMesh(t, base)
	if err != nil {
		t.Fatalf("re-bind fixed ports at %d: %v", base, err)
	}
	for i := range n {
		if got := m2.RouteURLsFor(i); strings.Join(got, ",") != strings.Join(wantURLs[i], ",") {
			t.Fatalf("node %d urls %v, want %v", i, got, wantURLs[i])
		}
	}
	mustEcho(t, meshConn(t, m2, 1, 0), "n0")
}

func TestNewMeshErrors(t *testing.T) {
	if _, err := NewMesh([]string{"a"}, nil, 0, nil); err == nil {
		t.Fatal("want error for mismatched addrs")
	}
	if _, err := NewMesh([]string{"a", "b"}, []string{"x:1", "x:2"}, 65535, nil); err == nil {
		t.Fatal("want error for port overflow")
	}
}

// stallServer accepts and never reads, so a proxy writing to it blocks on
// backpressure.
func stallServer(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String(), func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
}

// TestCloseNoLeak puts connections in every awkward state (forwarding,
// half-closed, frozen, blocked on a full upstream) and checks Close returns
// promptly and every goroutine is gone.
func TestCloseNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()

	func() {
		e := newEcho(t, "echo")
		p, err := New("leak", "127.0.0.1:0", e.addr(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var clients []net.Conn
		defer func() {
			for _, c := range clients {
				c.Close()
			}
		}()
		dialC := func(addr string) net.Conn {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
			return c
		}
		mustEcho(t, dialC(p.Addr()), "echo")
		half := dialC(p.Addr())
		mustEcho(t, half, "echo")
		half.(*net.TCPConn).CloseWrite()
		frozen := dialC(p.Addr())
		mustEcho(t, frozen, "echo")
		p.SetMode(Blackhole)
		dialC(p.Addr()) // blackholed on arrival
		waitFor(t, func() bool { return p.Stats().Blackholed == 1 })

		stallAddr, stop := stallServer(t)
		defer stop()
		ps, err := New("stall", "127.0.0.1:0", stallAddr, nil)
		if err != nil {
			t.Fatal(err)
		}
		sc := dialC(ps.Addr())
		writerDone := make(chan struct{})
		go func() { // fill socket buffers until the proxy's upstream write blocks
			defer close(writerDone)
			buf := make([]byte, 64<<10)
			for {
				if _, err := sc.Write(buf); err != nil {
					return
				}
			}
		}()
		time.Sleep(200 * time.Millisecond)

		s, err := NewSink("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}

		closed := make(chan struct{})
		go func() {
			p.Close()
			ps.Close()
			s.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("Close deadlocked")
		}
		if err := p.Close(); err != nil { // idempotent
			t.Fatal(err)
		}
		sc.Close()
		<-writerDone
		e.close()
	}()

	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("condition not met in time; goroutines=%d\n%s", runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOneWay: DropToTarget loses the dialler's bytes, never the target's;
// heal closes the half-frozen connection and new ones forward again.
func TestOneWay(t *testing.T) {
	e := newEcho(t, "echo")
	for _, m := range []Mode{DropToTarget, DropToClient} {
		t.Run(m.String(), func(t *testing.T) {
			p := newProxy(t, e.addr())
			live := dial(t, p.Addr())
			mustEcho(t, live, "echo")
			p.SetMode(m)
			expectSilent(t, live) // either the line or its echo is lost
			fresh := dial(t, p.Addr())
			expectSilent(t, fresh)
			p.SetMode(Pass)
			expectClosed(t, live)
			mustEcho(t, dial(t, p.Addr()), "echo")
		})
	}
}

// TestOneWayDirection proves which direction is lost: under DropToTarget
// the target sees nothing the client writes; under DropToClient the
// target gets the line (it is counted) but its reply never arrives.
func TestOneWayDirection(t *testing.T) {
	// A server that writes a greeting first, then echoes: its bytes reach
	// the client even when the client's bytes are lost.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var got atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "hello\n")
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					got.Add(1)
					_, _ = io.WriteString(c, "echo:"+sc.Text()+"\n")
				}
			}()
		}
	}()

	p := newProxy(t, ln.Addr().String())
	p.SetMode(DropToTarget)
	c := dial(t, p.Addr())
	r := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if l, err := r.ReadString('\n'); err != nil || l != "hello\n" {
		t.Fatalf("DropToTarget must still deliver the target's bytes: %q %v", l, err)
	}
	io.WriteString(c, "x\n")
	time.Sleep(300 * time.Millisecond)
	if got.Load() != 0 {
		t.Fatal("DropToTarget delivered the client's bytes")
	}

	p.SetMode(DropToClient)
	c2 := dial(t, p.Addr())
	io.WriteString(c2, "y\n")
	waitFor(t, func() bool { return got.Load() == 1 })
	c2.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c2.Read(make([]byte, 64)); err == nil {
		t.Fatalf("DropToClient delivered %d bytes of the target's", n)
	}
}

// TestLatency: every round trip through a delayed proxy takes at least two
// delays (there and back), and removing the delay restores speed.
func TestLatency(t *testing.T) {
	e := newEcho(t, "echo")
	p := newProxy(t, e.addr())
	c := dial(t, p.Addr())
	mustEcho(t, c, "echo")
	const d = 150 * time.Millisecond
	p.SetLatency(d)
	if p.Latency() != d {
		t.Fatalf("Latency() = %s", p.Latency())
	}
	start := time.Now()
	mustEcho(t, c, "echo")
	if rtt := time.Since(start); rtt < 2*d {
		t.Fatalf("round trip %s under latency %s; want >= %s", rtt, d, 2*d)
	}
	p.SetLatency(0)
	start = time.Now()
	mustEcho(t, c, "echo")
	if rtt := time.Since(start); rtt >= d {
		t.Fatalf("round trip %s after removing the latency", rtt)
	}
}

func TestMeshOneWayAndHeal(t *testing.T) {
	m, err := newTestMesh(t, 0)
	if err != nil {
		t.Fatal(err)
	}
	m.OneWay([]int{0}, []int{1})
	if m.Link(0, 1).Mode() != DropToTarget || m.Link(1, 0).Mode() != DropToClient {
		t.Fatalf("modes %s %s", m.Link(0, 1).Mode(), m.Link(1, 0).Mode())
	}
	expectSilent(t, meshConn(t, m, 0, 1))
	expectSilent(t, meshConn(t, m, 1, 0))
	mustEcho(t, meshConn(t, m, 0, 2), "n2")
	mustEcho(t, meshConn(t, m, 2, 1), "n1")
	m.SetLatency([]int{2}, []int{1}, 50*time.Millisecond)
	m.Heal([]int{0}, []int{1})
	mustEcho(t, meshConn(t, m, 0, 1), "n1")
	mustEcho(t, meshConn(t, m, 1, 0), "n0")
	if m.Link(2, 1).Latency() != 50*time.Millisecond || m.Link(1, 2).Latency() != 50*time.Millisecond {
		t.Fatal("Heal of {0}|{1} touched the 2–1 link")
	}
	m.HealAll()
	if m.Link(2, 1).Latency() != 0 {
		t.Fatal("HealAll left latency")
	}
}
