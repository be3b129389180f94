package diskfault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/unibus/clusterkit/chaos"
)

// The reproducer runs three nats-servers as child processes (this test
// binary re-executed), each with its store on its own diskfault mount, so a
// power cut is a real SIGKILL of separate processes plus the loss of every
// unsynced write. It stands in for membershipd until `serve --sync` exists:
// the child sets nats-server's sync policy directly.

const childEnv = "DISKFAULT_NATS_CHILD"

type childConfig struct {
	Name, Store           string
	Client, Cluster, HTTP int
	Routes                []string
	SyncAlways            bool
}

func TestMain(m *testing.M) {
	if c := os.Getenv(childEnv); c != "" {
		os.Exit(runChild(c))
	}
	os.Exit(m.Run())
}

func runChild(js string) int {
	var c childConfig
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 2
	}
	o := &server.Options{ServerName: c.Name, Host: "127.0.0.1", Port: c.Client, HTTPHost: "127.0.0.1", HTTPPort: c.HTTP,
		JetStream: true, StoreDir: c.Store, SyncAlways: c.SyncAlways, NoSigs: true}
	o.Cluster.Name, o.Cluster.Host, o.Cluster.Port = "pl", "127.0.0.1", c.Cluster
	for _, r := range c.Routes {
		u, _ := url.Parse(r)
		o.Routes = append(o.Routes, u)
	}
	s, err := server.NewServer(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "new server:", err)
		return 1
	}
	s.ConfigureLogger()
	s.Start()
	select {} // until SIGKILL
}

type plNode struct {
	cfg     childConfig
	backing string
	mnt     string
	fs      *FS
	cmd     *exec.Cmd
	log     *os.File
}

func (n *plNode) start(t *testing.T) {
	t.Helper()
	b, _ := json.Marshal(n.cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	cmd.Stdout, cmd.Stderr = n.log, n.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd = cmd
}

func (n *plNode) kill() {
	if n.cmd != nil {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
		n.cmd = nil
	}
}

type plCase struct {
	mode       MetadataMode // "" = no FUSE (baseline, no cut)
	syncAlways bool
	checkpoint bool // make everything durable after the stream is created
}

type plResult struct {
	acked, lost int
	lostIDs     []string
	streamGone  bool
	perNode     map[string]uint64 // last sequence each replica holds after restart
	syncP50     time.Duration     // sync publish latency
	cutStats    []Stats
}

// TestNATSPowerLoss: publish to an R3 stream, cut the power of all three
// nodes between N/2 and N acks, restart, read every acked id back.
// SyncAlways must lose nothing under the ext4-like model; the default sync
// interval must lose acked writes (the negative control proving the fault
// and the checker are real). Numbers go to the test log.
func TestNATSPowerLoss(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a FUSE filesystem per node")
	}
	if testing.Short() {
		t.Skip("starts three nats-server processes three times")
	}
	lost := func(t *testing.T, r plResult) {
		if r.lost == 0 {
			t.Errorf("negative control: default sync lost nothing of %d acked; the fault or the checker is not real", r.acked)
		}
	}
	none := func(t *testing.T, r plResult) {
		if r.lost != 0 {
			t.Errorf("SyncAlways lost %d of %d acked messages: %v", r.lost, r.acked, r.lostIDs)
		}
	}
	// checkpoint: the cluster's files and directories up to the stream's
	// creation are made durable before publishing ("old enough to be on
	// disk"), so the cut judges only what the publishing wrote.
	cases := []struct {
		plCase
		check func(t *testing.T, r plResult)
	}{
		{plCase{MetadataImmediate, true, true}, none},
		{plCase{MetadataImmediate, false, true}, lost},
		{plCase{MetadataDirFsync, true, true}, none},
		{plCase{MetadataDirFsync, false, true}, lost},
		// Finding (reproduced, not a bug of this package): nats-server
		// 2.15.2 never fsyncs the directories it creates its stream, meta
		// and raft files in, so under the POSIX-strict model SyncAlways
		// loses a stream created shortly before the cut, with every acked
		// message. ext4/xfs persist those entries with the file's fsync in
		// practice, which is why the default model is immediate. If this
		// fails, nats now syncs its directories: expect zero loss here too.
		{plCase{MetadataDirFsync, true, false}, func(t *testing.T, r plResult) {
			if r.lost == 0 {
				t.Errorf("SyncAlways under dir-fsync lost nothing of %d acked: nats now syncs directories; make this case expect zero loss", r.acked)
			}
		}},
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s/sync-always=%v/checkpoint=%v", c.mode, c.syncAlways, c.checkpoint)
		t.Run(name, func(t *testing.T) {
			r := runPowerLoss(t, c.plCase, 3000)
			t.Logf("%s: acked %d, lost %d (stream gone: %v), per-node last seq %v, sync publish p50 %v, cut %+v",
				name, r.acked, r.lost, r.streamGone, r.perNode, r.syncP50, r.cutStats)
			if r.lost > 0 {
				ids := r.lostIDs
				if len(ids) > 10 {
					ids = append(ids[:5:5], append([]string{"..."}, ids[len(ids)-5:]...)...)
				}
				t.Logf("lost acked ids: %v", ids)
			}
			if c.check != nil {
				c.check(t, r)
			}
		})
	}
}

// TestNATSPublishWithoutFUSE is the baseline for the FUSE overhead: the
// same publish load on plain directories, no cut.
func TestNATSPublishWithoutFUSE(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nats-server processes")
	}
	r := runPowerLoss(t, plCase{"", true, false}, 3000)
	t.Logf("no FUSE, sync-always: acked %d, sync publish p50 %v", r.acked, r.syncP50)
}

func runPowerLoss(t *testing.T, c plCase, n int) plResult {
	dir := t.TempDir()
	base, err := chaos.PortBlock(9)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*plNode
	for i := 0; i < 3; i++ {
		nd := &plNode{backing: filepath.Join(dir, fmt.Sprintf("n%d-disk", i)), mnt: filepath.Join(dir, fmt.Sprintf("n%d", i))}
		for _, d := range []string{nd.backing, nd.mnt} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		nd.cfg = childConfig{Name: fmt.Sprintf("n%d", i), Store: nd.mnt, Client: base + i, Cluster: base + 3 + i, HTTP: base + 6 + i, SyncAlways: c.syncAlways}
		for j := 0; j < 3; j++ {
			if j != i {
				nd.cfg.Routes = append(nd.cfg.Routes, fmt.Sprintf("nats-route://127.0.0.1:%d", base+3+j))
			}
		}
		if nd.log, err = os.Create(filepath.Join(dir, nd.cfg.Name+".log")); err != nil {
			t.Fatal(err)
		}
		if c.mode == "" {
			nd.cfg.Store = nd.backing
		} else if nd.fs, err = Mount(nd.backing, nd.mnt, Options{MetadataDurable: c.mode}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, nd)
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			t0 := time.Now()
			nd.kill()
			t1 := time.Now()
			if nd.fs != nil {
				_ = nd.fs.Unmount()
			}
			t.Logf("cleanup %s: kill %v unmount %v", nd.cfg.Name, t1.Sub(t0), time.Since(t1))
			_ = nd.log.Close()
		}
	})
	for _, nd := range nodes {
		nd.start(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	nc, js := connect(ctx, t, nodes)
	var stream jetstream.Stream
	for {
		cctx, cc := context.WithTimeout(ctx, 2*time.Second)
		stream, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: "PL", Subjects: []string{"pl.>"}, Replicas: 3, Storage: jetstream.FileStorage})
		cc()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("create R3 stream: %v\n%s", err, logTails(nodes))
		}
		t.Logf("create R3 stream: %v", err)
		time.Sleep(200 * time.Millisecond)
	}
	_ = stream
	if c.checkpoint {
		for _, nd := range nodes {
			if err := nd.fs.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Publish: 1 in 10 synchronously (timed), the rest async.
	var (
		mu     sync.Mutex
		acked  = map[string]uint64{}
		syncLs []time.Duration
	)
	cutAt := n/2 + rand.IntN(n/2)
	cutNow := make(chan struct{})
	var once sync.Once
	ack := func(id string, seq uint64) {
		mu.Lock()
		acked[id] = seq
		k := len(acked)
		mu.Unlock()
		if c.mode != "" && k >= cutAt {
			once.Do(func() { close(cutNow) })
		}
	}
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("m-%06d", i)
			msg := &nats.Msg{Subject: "pl.x", Data: []byte(id), Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, id)
			if i%10 == 0 {
				pctx, pc := context.WithTimeout(ctx, 5*time.Second)
				t0 := time.Now()
				a, err := js.PublishMsg(pctx, msg)
				pc()
				if err != nil {
					return // the cut: servers stop answering
				}
				mu.Lock()
				syncLs = append(syncLs, time.Since(t0))
				mu.Unlock()
				ack(id, a.Sequence)
				continue
			}
			f, err := js.PublishMsgAsync(msg)
			if err != nil {
				return
			}
			go func() {
				select {
				case a := <-f.Ok():
					ack(id, a.Sequence)
				case <-f.Err():
				case <-ctx.Done():
				}
			}()
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(10 * time.Second):
		}
	}()
	res := plResult{perNode: map[string]uint64{}}
	if c.mode == "" {
		<-pubDone
		mu.Lock()
		res.acked = len(acked)
		res.syncP50 = p50(syncLs)
		mu.Unlock()
		nc.Close()
		return res
	}
	select {
	case <-cutNow:
	case <-pubDone:
		t.Fatal("publishing ended before the cut point")
	}
	var fss []*FS
	for _, nd := range nodes {
		fss = append(fss, nd.fs)
	}
	if res.cutStats, err = PowerCut(fss...); err != nil {
		t.Fatalf("power cut: %v", err)
	}
	for _, nd := range nodes {
		nd.kill()
	}
	nc.Close()
	<-pubDone
	mu.Lock()
	ackedIDs := make(map[string]uint64, len(acked))
	for k, v := range acked {
		ackedIDs[k] = v
	}
	res.syncP50 = p50(syncLs)
	mu.Unlock()
	res.acked = len(ackedIDs)

	t.Logf("cut and killed %s", time.Now().Format("15:04:05.000"))
	// Power back: fresh mounts over the durable state, same paths.
	for _, nd := range nodes {
		t0 := time.Now()
		if err := nd.fs.Unmount(); err != nil {
			t.Fatal(err)
		}
		t.Logf("unmount %s after cut: %v", nd.cfg.Name, time.Since(t0))
		if nd.fs, err = Mount(nd.backing, nd.mnt, Options{MetadataDurable: c.mode}); err != nil {
			t.Fatal(err)
		}
		nd.start(t)
	}
	nc, js = connect(ctx, t, nodes)
	defer nc.Close()
	got, gone := readBack(ctx, t, js)
	res.streamGone = gone
	for id := range ackedIDs {
		if !got[id] {
			res.lostIDs = append(res.lostIDs, id)
		}
	}
	sort.Strings(res.lostIDs)
	res.lost = len(res.lostIDs)
	// Every replica must come to hold every acked sequence, not only the
	// leader (restarted followers catch up from it: allow them 15 s).
	var maxSeq uint64
	for _, s := range ackedIDs {
		maxSeq = max(maxSeq, s)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		behind := 0
		for _, nd := range nodes {
			res.perNode[nd.cfg.Name] = replicaLastSeq(nd)
			if res.perNode[nd.cfg.Name] < maxSeq {
				behind++
			}
		}
		if behind == 0 || gone || res.lost > 0 || time.Now().After(deadline) {
			if behind > 0 && !gone && res.lost == 0 {
				t.Errorf("replicas %v: not all hold acked seq %d", res.perNode, maxSeq)
			}
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return res
}

func connect(ctx context.Context, t *testing.T, nodes []*plNode) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	defer t.Logf("connected %s", time.Now().Format("15:04:05.000"))
	var urls []string
	for _, nd := range nodes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", nd.cfg.Client))
	}
	for {
		nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err == nil {
			js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
			if err != nil {
				t.Fatal(err)
			}
			return nc, js
		}
		if ctx.Err() != nil {
			t.Fatalf("connect: %v\n%s", err, logTails(nodes))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readBack waits for the restarted cluster to serve the stream and returns
// every id it holds; gone reports a stream the cluster no longer knows.
func readBack(ctx context.Context, t *testing.T, js jetstream.JetStream) (map[string]bool, bool) {
	t.Helper()
	got := map[string]bool{}
	// A restarted cluster answers 503 or nothing until it has a meta
	// leader; a 404 that persists for 6 s after that means the meta layer
	// has no record of the stream.
	deadline := time.Now().Add(30 * time.Second)
	var first404 time.Time
	var s jetstream.Stream
	var err error
	for {
		ictx, c := context.WithTimeout(ctx, 2*time.Second)
		s, err = js.Stream(ictx, "PL")
		c()
		if err == nil {
			break
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if first404.IsZero() {
				first404 = time.Now()
			}
			if time.Since(first404) > 6*time.Second {
				t.Logf("stream PL gone after restart: %v", err)
				return got, true
			}
		} else {
			first404 = time.Time{}
		}
		if time.Now().After(deadline) {
			t.Logf("stream PL not served 30 s after restart: %v", err)
			return got, true
		}
		time.Sleep(250 * time.Millisecond)
	}
	info := s.CachedInfo()
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		var m *jetstream.RawStreamMsg
		for {
			gctx, c := context.WithTimeout(ctx, 2*time.Second)
			m, err = s.GetMsg(gctx, seq)
			c()
			if err == nil || ctx.Err() != nil || strings.Contains(err.Error(), "not found") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err == nil {
			got[string(m.Data)] = true
		}
	}
	return got, false
}

// replicaLastSeq asks one node's monitoring port what its own replica of
// the stream holds.
func replicaLastSeq(nd *plNode) uint64 {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz?streams=true", nd.cfg.HTTP))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var jsz server.JSInfo
	if json.NewDecoder(resp.Body).Decode(&jsz) != nil {
		return 0
	}
	for _, a := range jsz.AccountDetails {
		for _, s := range a.Streams {
			if s.Name == "PL" {
				return s.State.LastSeq
			}
		}
	}
	return 0
}

func p50(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func logTails(nodes []*plNode) string {
	var b strings.Builder
	for _, nd := range nodes {
		data, _ := os.ReadFile(nd.log.Name())
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 8 {
			lines = lines[len(lines)-8:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", nd.cfg.Name, strings.Join(lines, "\n"))
	}
	return b.String()
}
