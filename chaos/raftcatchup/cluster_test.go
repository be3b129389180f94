package raftcatchup

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/netproxy"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// stuckMsg is what the stuck follower logs every ~2 s.
const stuckMsg = "Expected first catchup entry to be a snapshot and peerstate"

// nodeLog is a nats-server logger that writes every line to a file (raft
// debug lines included: they say what the follower asked for and what the
// leader sent) and counts the stuck-follower warning.
type nodeLog struct {
	name  string
	mu    sync.Mutex
	w     io.Writer
	stuck atomic.Int64
}

func (l *nodeLog) line(level, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, stuckMsg) {
		l.stuck.Add(1)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s [%s] %s %s\n", time.Now().UTC().Format("15:04:05.000"), l.name, level, msg)
}

func (l *nodeLog) Noticef(f string, v ...any) { l.line("INF", f, v...) }
func (l *nodeLog) Warnf(f string, v ...any)   { l.line("WRN", f, v...) }
func (l *nodeLog) Fatalf(f string, v ...any)  { l.line("FTL", f, v...) }
func (l *nodeLog) Errorf(f string, v ...any)  { l.line("ERR", f, v...) }
func (l *nodeLog) Debugf(f string, v ...any) {
	// Only raft lines: the rest of the debug output is route and client
	// chatter that drowns the catchup exchange.
	if strings.HasPrefix(f, "RAFT") {
		l.line("DBG", f, v...)
	}
}
func (l *nodeLog) Tracef(string, ...any) {}

// Write takes the healer's slog lines into the same file.
func (l *nodeLog) Write(p []byte) (int, error) {
	l.line("HEAL", "%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// cluster is three plain JetStream servers whose routes run through a
// netproxy mesh, so one node can be cut off while it keeps running.
type cluster struct {
	t       *testing.T
	dir     string
	names   []string
	mesh    *netproxy.Mesh
	opts    []*server.Options
	servers []*server.Server
	logs    []*nodeLog
	files   []*os.File
}

func startCluster(t *testing.T, dir string) *cluster {
	t.Helper()
	names := []string{"n1", "n2", "n3"}
	base, err := chaos.PortBlock(2 * len(names))
	if err != nil {
		t.Fatal(err)
	}
	var routeAddrs []string
	for i := range names {
		routeAddrs = append(routeAddrs, fmt.Sprintf("127.0.0.1:%d", base+len(names)+i))
	}
	meshBase, err := chaos.PortBlock(len(names) * len(names))
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := netproxy.NewMesh(names, routeAddrs, meshBase, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: dir, names: names, mesh: mesh}
	t.Cleanup(c.close)
	for i, name := range names {
		var routes []*url.URL
		for _, r := range mesh.RouteURLsFor(i) {
			u, _ := url.Parse(r)
			routes = append(routes, u)
		}
		c.opts = append(c.opts, &server.Options{
			ServerName: name, Host: "127.0.0.1", Port: base + i, NoSigs: true,
			JetStream: true, StoreDir: filepath.Join(dir, name), SyncAlways: true,
			Debug: true,
			Cluster: server.ClusterOpts{Name: "catchup", Host: "127.0.0.1", Port: base + len(names) + i,
				PoolSize: -1, Advertise: mesh.AdvertiseFor(i)},
			Routes: routes,
		})
		f, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		c.files = append(c.files, f)
		c.logs = append(c.logs, &nodeLog{name: name, w: f})
		c.servers = append(c.servers, nil)
		c.start(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		ok := true
		for _, s := range c.servers {
			if s.Healthz(nil).Status != "ok" || s.JetStreamIsCurrent() == false {
				ok = false
			}
		}
		if ok {
			return c
		}
		if ctx.Err() != nil {
			t.Fatalf("cluster not healthy: %v", ctx.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *cluster) start(i int) {
	c.t.Helper()
	s, err := server.NewServer(c.opts[i])
	if err != nil {
		c.t.Fatalf("server %s: %v", c.names[i], err)
	}
	s.SetLogger(c.logs[i], true, false)
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		c.t.Fatalf("server %s not ready", c.names[i])
	}
	c.servers[i] = s
}

// restart stops node i and starts it again on its data.
func (c *cluster) restart(i int) {
	c.t.Helper()
	c.servers[i].Shutdown()
	c.servers[i].WaitForShutdown()
	c.start(i)
}

func (c *cluster) close() {
	for _, s := range c.servers {
		if s != nil {
			s.Shutdown()
		}
	}
	for _, s := range c.servers {
		if s != nil {
			s.WaitForShutdown()
		}
	}
	_ = c.mesh.Close()
	for _, f := range c.files {
		_ = f.Close()
	}
}

func (c *cluster) stuckWarnings() int64 {
	var n int64
	for _, l := range c.logs {
		n += l.stuck.Load()
	}
	return n
}

func (c *cluster) connect(i int) *nats.Conn {
	c.t.Helper()
	nc, err := nats.Connect(c.servers[i].ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// replica is one server's own copy of a stream and its raft group.
type replica struct {
	Node           string
	LastSeq        uint64
	Leader         string
	Term, PTerm    uint64
	PIndex, Commit uint64
	Applied        uint64
	WALFirst       uint64
	CatchingUp     bool
	RaftState      string
}

func (r replica) String() string {
	return fmt.Sprintf("%s: last_seq=%d raft{%s leader=%s term=%d pterm=%d pindex=%d commit=%d applied=%d wal_first=%d catching_up=%v}",
		r.Node, r.LastSeq, r.RaftState, r.Leader, r.Term, r.PTerm, r.PIndex, r.Commit, r.Applied, r.WALFirst, r.CatchingUp)
}

// replicas reads every running server's local state of stream.
func (c *cluster) replicas(stream string) []replica {
	var out []replica
	for i, s := range c.servers {
		r := replica{Node: c.names[i]}
		jsz, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true, RaftGroups: true})
		if err != nil {
			out = append(out, r)
			continue
		}
		group, acc := "", ""
		for _, a := range jsz.AccountDetails {
			for _, sd := range a.Streams {
				if sd.Name == stream {
					r.LastSeq = sd.State.LastSeq
					group, acc = sd.RaftGroup, a.Name
					if sd.Cluster != nil {
						r.Leader = sd.Cluster.Leader
					}
				}
			}
		}
		if group != "" {
			if rz := s.Raftz(&server.RaftzOptions{AccountFilter: acc, GroupFilter: group}); rz != nil {
				for _, groups := range *rz {
					if g, ok := groups[group]; ok {
						r.Term, r.PTerm, r.PIndex = g.Term, g.PTerm, g.PIndex
						r.Commit, r.Applied, r.WALFirst = g.Committed, g.Applied, g.WAL.FirstSeq
						r.CatchingUp, r.RaftState = g.CatchingUp, g.State
					}
				}
			}
		}
		out = append(out, r)
	}
	return out
}

// spread is how far the lowest replica's last sequence trails the highest.
func spread(rs []replica) uint64 {
	var lo, hi uint64
	for i, r := range rs {
		if i == 0 || r.LastSeq < lo {
			lo = r.LastSeq
		}
		hi = max(hi, r.LastSeq)
	}
	return hi - lo
}

// heartbeats publishes node i's heartbeat the way membershipd does: every
// 250 ms, puts overlapping up to 16 in flight, each with a 4 s deadline,
// through a client connected to node i itself.
func heartbeats(ctx context.Context, nc *nats.Conn, node string, wg *sync.WaitGroup) {
	js, _ := jetstream.New(nc)
	subj := kv.HeartbeatSubject(node)
	var inFlight atomic.Int32
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if inFlight.Load() < 16 {
			inFlight.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer inFlight.Add(-1)
				pctx, cancel := context.WithTimeout(ctx, 4*time.Second)
				defer cancel()
				_, _ = js.Publish(pctx, subj, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *cluster) index(name string) int {
	for i, n := range c.names {
		if n == name {
			return i
		}
	}
	return -1
}
