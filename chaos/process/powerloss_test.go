package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/diskfault"
)

// membershipdBinary is $MEMBERSHIPD, or a fresh build of ./membershipd.
func membershipdBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("MEMBERSHIPD"); b != "" {
		return b
	}
	out := filepath.Join(t.TempDir(), "membershipd")
	cmd := exec.Command("go", "build", "-o", out, "github.com/unibus/clusterkit/membershipd")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build membershipd: %v\n%s", err, b)
	}
	return out
}

// TestPowerLoss: three real membershipd processes, each store on its own
// diskfault mount with the ext4-like model. Publish to an R3 stream (1 in
// 10 synchronously), cut the power of all three between N/2 and N acks, and
// read every acked id back through every node after the restart on the
// durable state. membershipd's SyncAlways must lose nothing; with
// `serve --sync default` (nats' 2-minute interval) the same run must report
// lost acked writes, proving the fault and the checker are real. That
// negative control is skipped while the binary has no --sync flag.
func TestPowerLoss(t *testing.T) {
	if err := diskfault.Available(); err != nil {
		t.Skip(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a FUSE filesystem per node")
	}
	if testing.Short() {
		t.Skip("builds membershipd and runs three processes")
	}
	bin := membershipdBinary(t)
	help, _ := exec.Command(bin, "serve", "--help").CombinedOutput()
	hasSync := strings.Contains(string(help), "-sync")
	t.Run("sync-always", func(t *testing.T) {
		acked, lost := runPowerLoss(t, bin, nil)
		for node, l := range lost {
			if len(l) > 0 {
				t.Errorf("node %s: %d of %d acked messages lost after power loss, e.g. %v", node, len(l), acked, l[:min(5, len(l))])
			}
		}
	})
	t.Run("negative-control/sync-default", func(t *testing.T) {
		if !hasSync {
			t.Skip("membershipd serve has no --sync flag yet")
		}
		acked, lost := runPowerLoss(t, bin, []string{"--sync", "default"})
		for node, l := range lost {
			t.Logf("node %s: %d of %d acked messages lost, e.g. %v", node, len(l), acked, l[:min(5, len(l))])
			if len(l) == 0 {
				t.Errorf("node %s: default sync lost nothing of %d acked: the fault or the checker is not real", node, acked)
			}
		}
	})
}

// runPowerLoss returns the number of acked messages and, per node, the
// acked ids it cannot read back after the power loss.
func runPowerLoss(t *testing.T, bin string, extraArgs []string) (int, map[string][]string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := New(Options{Dir: t.TempDir(), Binary: bin, PowerLossFS: diskfault.MetadataImmediate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	for _, n := range c.nodes {
		n.args = append(n.args, extraArgs...)
	}
	if err := chaos.StartNodes(ctx, c.Nodes()...); err != nil {
		t.Fatal(err)
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
		t.Fatal(err)
	}
	nc, err := chaos.DialInternal(c, c.Nodes()[0])
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		t.Fatal(err)
	}
	for {
		cctx, cc := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: "POWERLOSS", Subjects: []string{"powerloss.>"}, Replicas: 3, Storage: jetstream.FileStorage})
		cc()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("create R3 stream: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	const n = 3000
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
	)
	cutAt := n/2 + int(time.Now().UnixNano()%int64(n/2))
	cutNow := make(chan struct{})
	var once sync.Once
	ack := func(id string) {
		mu.Lock()
		acked[id] = true
		k := len(acked)
		mu.Unlock()
		if k >= cutAt {
			once.Do(func() { close(cutNow) })
		}
	}
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("m-%06d", i)
			msg := &nats.Msg{Subject: "powerloss.x", Data: []byte(id), Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, id)
			if i%10 == 0 { // 1 in 10 synchronous, the rest async
				pctx, pc := context.WithTimeout(ctx, 5*time.Second)
				_, err := js.PublishMsg(pctx, msg)
				pc()
				if err != nil {
					return
				}
				ack(id)
				continue
			}
			f, err := js.PublishMsgAsync(msg)
			if err != nil {
				return
			}
			go func() {
				select {
				case <-f.Ok():
					ack(id)
				case <-f.Err():
				case <-ctx.Done():
				}
			}()
		}
	}()
	select {
	case <-cutNow:
	case <-pubDone:
		t.Fatal("publishing ended before the cut point")
	}
	t0 := time.Now()
	if err := c.PowerLoss(ctx); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	<-pubDone
	mu.Lock()
	ids := make([]string, 0, len(acked))
	for id := range acked {
		ids = append(ids, id)
	}
	mu.Unlock()
	sort.Strings(ids)
	t.Logf("power loss after %d acks (cut at %d), nodes restarted in %v; dropped per node: %+v", len(ids), cutAt, time.Since(t0), c.PowerLossStats())
	if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
		t.Fatal(err)
	}

	// Every acked id, read back through every node.
	lost := map[string][]string{}
	for _, node := range c.Nodes() {
		got := readAll(ctx, t, c, node)
		lost[node.Name()] = []string{}
		for _, id := range ids {
			if !got[id] {
				lost[node.Name()] = append(lost[node.Name()], id)
			}
		}
	}
	return len(ids), lost
}

// readAll reads the stream through one node (its own connection; the
// leader serves the reads, every node must be able to reach it).
func readAll(ctx context.Context, t *testing.T, c *Cluster, node chaos.Node) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	var nc *nats.Conn
	var err error
	for {
		if nc, err = chaos.DialInternal(c, node); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("dial %s: %v", node.Name(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var s jetstream.Stream
	var first404 time.Time
	for {
		sctx, sc := context.WithTimeout(ctx, 2*time.Second)
		s, err = js.Stream(sctx, "POWERLOSS")
		sc()
		if err == nil {
			break
		}
		// Healthy cluster, stream unknown for 8 s: the meta layer lost it.
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if first404.IsZero() {
				first404 = time.Now()
			}
			if time.Since(first404) > 8*time.Second {
				t.Logf("via %s: stream gone after power loss: %v", node.Name(), err)
				return got
			}
		} else {
			first404 = time.Time{}
		}
		if ctx.Err() != nil {
			t.Fatalf("stream via %s: %v", node.Name(), err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	info := s.CachedInfo()
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		for {
			gctx, gc := context.WithTimeout(ctx, 2*time.Second)
			m, err := s.GetMsg(gctx, seq)
			gc()
			if err == nil {
				got[string(m.Data)] = true
				break
			}
			if ctx.Err() != nil || strings.Contains(err.Error(), "not found") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return got
}

// Without the option a cluster refuses PowerLoss and says why, instead of
// killing nodes whose page cache would keep every write.
func TestPowerLossNeedsStoresOnMounts(t *testing.T) {
	c, err := New(Options{Dir: t.TempDir(), Binary: "/nonexistent/membershipd"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.PowerLossAvailable()
	if err == nil || !strings.Contains(err.Error(), "FUSE") && !strings.Contains(err.Error(), "PowerLossFS") {
		t.Fatalf("PowerLossAvailable = %v, want a reason naming FUSE or PowerLossFS", err)
	}
	if err := c.PowerLoss(context.Background()); err == nil {
		t.Fatal("PowerLoss ran on plain store directories")
	}
}
