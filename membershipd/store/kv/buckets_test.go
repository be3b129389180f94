package kv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A follower the leader has not seen ("not seen": Active 0) or has not heard
// from for several heartbeats is never current, whatever the Current flag.
func TestFollowerCurrent(t *testing.T) {
	cases := []struct {
		name string
		p    jetstream.PeerInfo
		want bool
	}{
		{"current, seen 200ms ago", jetstream.PeerInfo{Current: true, Active: 200 * time.Millisecond}, true},
		{"lag 3, seen 300ms ago", jetstream.PeerInfo{Active: 300 * time.Millisecond, Lag: 3}, true},
		{"not seen (Active 0), Current still set", jetstream.PeerInfo{Current: true, Active: 0}, false},
		{"not seen, lag 0", jetstream.PeerInfo{Active: 0, Lag: 0}, false},
		{"offline", jetstream.PeerInfo{Current: true, Offline: true, Active: 100 * time.Millisecond}, false},
		{"silent for 8s, server still says current", jetstream.PeerInfo{Current: true, Active: 8 * time.Second}, false},
		{"lag 3, seen 2s ago", jetstream.PeerInfo{Active: 2 * time.Second, Lag: 3}, false},
		{"far behind", jetstream.PeerInfo{Active: 100 * time.Millisecond, Lag: 500}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := followerCurrent(&c.p); got != c.want {
				t.Fatalf("followerCurrent(%+v) = %t, want %t", c.p, got, c.want)
			}
		})
	}
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

// childEnv names the node a re-executed test binary runs (see TestMain), so
// a test can kill -9 a real nats-server process: a graceful Shutdown tells
// the cluster the node is offline, a crash does not.
const childEnv = "KVTEST_CHILD_NODE"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		runChild(spec)
		return
	}
	os.Exit(m.Run())
}

// nodeOptions is node i (0-based) of a 3-node loopback cluster.
func nodeOptions(i int, dir string, routes []int) *server.Options {
	var urls []string
	for _, p := range routes {
		urls = append(urls, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	return &server.Options{
		ServerName: fmt.Sprintf("n%d", i+1),
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
		Cluster:    server.ClusterOpts{Name: "kvtest", Host: "127.0.0.1", Port: routes[i]},
		Routes:     server.RoutesFromStr(strings.Join(urls, ",")),
	}
}

// runChild runs one node until killed. spec is "INDEX DIR PORT,PORT,PORT".
func runChild(spec string) {
	f := strings.Fields(spec)
	i, _ := strconv.Atoi(f[0])
	var routes []int
	for _, p := range strings.Split(f[2], ",") {
		n, _ := strconv.Atoi(p)
		routes = append(routes, n)
	}
	s, err := server.NewServer(nodeOptions(i, f[1], routes))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s.Start()
	s.WaitForShutdown()
}

// startCluster starts a real 3-node JetStream cluster on loopback: n1 and
// n2 in this process, n3 in a child process, returned for kill -9.
func startCluster(t *testing.T) ([]*server.Server, *exec.Cmd) {
	t.Helper()
	routes := freePorts(t, 3)
	var srvs []*server.Server
	for i := range 2 {
		s, err := server.NewServer(nodeOptions(i, t.TempDir(), routes))
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		srvs = append(srvs, s)
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), fmt.Sprintf("%s=2 %s %d,%d,%d", childEnv, t.TempDir(), routes[0], routes[1], routes[2]))
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Only the child this test started, by its pid.
		_ = child.Process.Kill()
		_ = child.Wait()
	})
	for _, s := range srvs {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatalf("%s not ready", s.Name())
		}
	}
	return srvs, child
}

// With one node of three killed (kill -9, as in the issue), the users
// bucket reports 1/2 current followers, never 2/2: the runbook's
// verification line. Before the fix the dead node, "not seen" by the new
// stream leader, counted as current.
func TestInspectCountsKilledFollowerAsNotCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	srvs, child := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nc, err := nats.Connect(srvs[0].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for {
		// The meta layer drops requests sent before it has a leader.
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.CreateStream(cctx, StreamConfig(Buckets[0], 3))
		ccancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("create R3 users stream: %v", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	if _, err := js.Publish(ctx, "$KV."+UsersBucket+".k1", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitState := func(want int, what string) {
		t.Helper()
		var s State
		for {
			// Per call: a request sent while the stream has no leader gets
			// no reply.
			ictx, icancel := context.WithTimeout(ctx, 2*time.Second)
			s, err = Inspect(ictx, js, UsersBucket)
			icancel()
			if err == nil && s.Followers == 2 && s.FollowersCurrent == want && s.Leader != "" && s.Leader != "n3" {
				t.Logf("%s: %s", what, s)
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: want followers_current=%d/2 with a live leader, last %s (err %v)", what, want, s, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	// Make n3 the stream leader when it is not, so its death forces a new
	// leader that never saw it: the "not seen" follower.
	for {
		ictx, icancel := context.WithTimeout(ctx, 2*time.Second)
		s, err := Inspect(ictx, js, UsersBucket)
		icancel()
		if err == nil && s.Leader == "n3" && s.FollowersCurrent == 2 {
			t.Logf("all up: %s", s)
			break
		}
		if err == nil && s.Leader != "" && s.Leader != "n3" {
			_, _ = nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+StreamName(UsersBucket), nil)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("n3 never led %s: last %s (err %v)", StreamName(UsersBucket), s, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitState(1, "n3 killed")
	// And it stays 1/2: the server keeps Current set for up to 10s after a
	// peer goes silent, so look well past that.
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		s, err := Inspect(ctx, js, UsersBucket)
		if err != nil {
			t.Fatal(err)
		}
		if s.FollowersCurrent != 1 {
			t.Fatalf("n3 killed, yet %s", s)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
