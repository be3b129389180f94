package raftcatchup

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// TestReproExpectedLastMsgIDStopsStream: one publish carrying a wrong
// Nats-Expected-Last-Msg-Id header to a replicated stream is not checked
// before the raft proposal in nats-server 2.15.2; every replica then fails
// to apply it ("last msgid mismatch") and treats that as a critical write
// error, which stops the stream on every replica. Found while looking for a
// way to make a stream leader snapshot; any client allowed to publish on a
// stream's subjects can do it. A reproducer (CATCHUP_REPRO=1) that fails
// while the bug is there.
//
//	CATCHUP_REPRO=1 go test ./chaos/raftcatchup -run TestReproExpectedLastMsgIDStopsStream -v -count=1
func TestReproExpectedLastMsgIDStopsStream(t *testing.T) {
	if os.Getenv("CATCHUP_REPRO") == "" {
		t.Skip("reproducer: set CATCHUP_REPRO=1")
	}
	dir := logDir(t)
	c := startCluster(t, dir)
	nc := c.connect(0)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ROOM", Subjects: []string{"room.>"}, Replicas: 3, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "room.a", []byte("before")); err != nil {
		t.Fatalf("publish before: %v", err)
	}
	m := nats.NewMsg("room.a")
	m.Header.Set("Nats-Expected-Last-Msg-Id", nuid.Next())
	_, err := js.PublishMsg(ctx, m)
	t.Logf("publish with a wrong expected last msg id: %v", err)
	time.Sleep(time.Second)
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	_, after := js.Publish(pctx, "room.a", []byte("after"))
	pcancel()
	t.Logf("publish after: %v", after)
	stopped := 0
	for i := range c.names {
		b, err := os.ReadFile(c.files[i].Name())
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "critical write error: last msgid mismatch") {
			stopped++
		}
	}
	if stopped > 0 || after != nil {
		t.Errorf("nats-server bug reproduced: %d of 3 replicas logged a critical write error for one rejected publish; a normal publish afterwards: %v", stopped, after)
	}
}
