package storehash

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
)

// clusteredStores runs a three-server JetStream cluster in this process,
// writes an R3 stream through it (msgs messages with headers, one
// deleted), stops it, and returns each server's store dir.
func clusteredStores(t *testing.T, msgs int) []string {
	t.Helper()
	base, err := chaos.PortBlock(3)
	if err != nil {
		t.Fatal(err)
	}
	var routes []*url.URL
	for i := range 3 {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", base+i)})
	}
	var dirs []string
	var srvs []*server.Server
	for i := range 3 {
		dir := t.TempDir()
		s, err := server.NewServer(&server.Options{ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "storehash-test", Host: "127.0.0.1", Port: base + i},
			Routes:  routes})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		dirs, srvs = append(dirs, dir), append(srvs, s)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		for _, s := range srvs {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
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
	var s jetstream.Stream
	for {
		// The meta leader is elected after the routes form.
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		s, err = js.CreateStream(actx, jetstream.StreamConfig{Name: "ROOM_x", Subjects: []string{"room.x.>"}, Replicas: 3})
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("create stream: %v (routes %d)", err, srvs[0].NumRoutes())
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i := range msgs {
		m := nats.NewMsg(fmt.Sprintf("room.x.%d", i%3))
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("id-%d", i))
		m.Data = fmt.Appendf(nil, "message %d", i)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteMsg(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// Every replica applied everything before the stop.
	for {
		info, err := s.Info(ctx)
		if err == nil && info.Cluster != nil && len(info.Cluster.Replicas) == 2 &&
			info.Cluster.Replicas[0].Current && info.Cluster.Replicas[1].Current && info.Cluster.Replicas[0].Lag == 0 && info.Cluster.Replicas[1].Lag == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("replicas never current: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	nc.Close()
	stop()
	return dirs
}

// TestReadsEachReplicaOfAClusteredStore: each server's store of a
// clustered R3 stream, opened standalone from a copy, yields the stream's
// every message, and the three copies hash the same. The store dirs
// themselves are left as they were. (Without the rewrite to R1 the
// standalone server lists no stream at all.)
func TestReadsEachReplicaOfAClusteredStore(t *testing.T) {
	dirs := clusteredStores(t, 40)
	var first string
	for i, d := range dirs {
		before, _ := filepath.Glob(filepath.Join(d, "jetstream", "*", "streams", "*", "msgs", "*"))
		got, err := ReadCopy(context.Background(), d, nil)
		if err != nil {
			t.Fatalf("n%d: %v", i+1, err)
		}
		if len(got) != 1 || got[0].Name != "ROOM_x" {
			t.Fatalf("n%d: streams %+v, want ROOM_x only", i+1, got)
		}
		st := got[0]
		if st.Msgs != 39 || st.LastSeq != 40 || st.FirstSeq != 1 {
			t.Errorf("n%d: %+v, want 39 messages, sequences 1..40", i+1, st)
		}
		if i == 0 {
			first = st.Hash
		} else if st.Hash != first {
			t.Errorf("n%d hash %s, n1 %s: the replicas hold the same messages", i+1, st.Hash, first)
		}
		after, _ := filepath.Glob(filepath.Join(d, "jetstream", "*", "streams", "*", "msgs", "*"))
		if len(before) == 0 || len(after) != len(before) {
			t.Errorf("n%d: the store changed: %d message blocks before, %d after", i+1, len(before), len(after))
		}
	}
}

// TestHashSeesContent: a message's subject, header or data changes the
// hash; so does its sequence.
func TestHashSeesContent(t *testing.T) {
	sum := func(seq uint64, subj string, hdr nats.Header, data string) string {
		h := newHash()
		hashMsg(h, seq, subj, hdr, []byte(data))
		return fmt.Sprintf("%x", h.Sum(nil))
	}
	ref := sum(1, "a", nats.Header{"K": {"v"}}, "d")
	for name, got := range map[string]string{
		"sequence": sum(2, "a", nats.Header{"K": {"v"}}, "d"),
		"subject":  sum(1, "b", nats.Header{"K": {"v"}}, "d"),
		"header":   sum(1, "a", nats.Header{"K": {"w"}}, "d"),
		"no hdr":   sum(1, "a", nil, "d"),
		"data":     sum(1, "a", nats.Header{"K": {"v"}}, "e"),
		"boundary": sum(1, "ad", nats.Header{"K": {"v"}}, ""),
	} {
		if got == ref {
			t.Errorf("a different %s hashes the same", name)
		}
	}
	if sum(1, "a", nats.Header{"K": {"v"}, "J": {"x"}}, "d") != sum(1, "a", nats.Header{"J": {"x"}, "K": {"v"}}, "d") {
		t.Error("header order changed the hash")
	}
}

// TestUnreadableStreamConfig: a stream whose meta.inf a power loss left
// empty is reported as unreadable; the store's other streams are read.
func TestUnreadableStreamConfig(t *testing.T) {
	dir := t.TempDir()
	s, err := server.NewServer(&server.Options{ServerName: "w", DontListen: true, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(s))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{"A", "B"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name}}); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, name, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()
	s.Shutdown()
	s.WaitForShutdown()
	if err := os.Truncate(filepath.Join(dir, "jetstream", "$G", "streams", "B", "meta.inf"), 0); err != nil {
		t.Fatal(err)
	}
	got, err := ReadCopy(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "A" || got[0].Msgs != 1 || got[0].Hash == "" || got[1].Name != "B" || got[1].Unreadable == "" || got[1].Hash != "" {
		t.Fatalf("streams %+v: want A read, B unreadable", got)
	}
}
