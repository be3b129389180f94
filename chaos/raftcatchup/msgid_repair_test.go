package raftcatchup

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// TestTryRepairBrickedStream tries to repair a stream stopped by a wrong
// Nats-Expected-Last-Msg-Id (TestReproExpectedLastMsgIDStopsStream) from
// outside, keeping its name and messages: scale it to R1, restart every
// node, scale it back to R3. It logs what each step gives; a measurement,
// so it runs only with CATCHUP_REPRO=1:
//
//	CATCHUP_REPRO=1 go test ./chaos/raftcatchup -run TestTryRepairBrickedStream -v -count=1
func TestTryRepairBrickedStream(t *testing.T) {
	if os.Getenv("CATCHUP_REPRO") == "" {
		t.Skip("reproducer: set CATCHUP_REPRO=1")
	}
	c := startCluster(t, logDir(t))
	nc := c.connect(0)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg := jetstream.StreamConfig{Name: "ROOM", Subjects: []string{"room.>"}, Replicas: 3, Storage: jetstream.FileStorage}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := js.Publish(ctx, "room.a", []byte("before")); err != nil {
			t.Fatalf("publish before: %v", err)
		}
	}
	m := nats.NewMsg("room.a")
	m.Header.Set("Nats-Expected-Last-Msg-Id", nuid.Next())
	_, err := js.PublishMsg(ctx, m)
	t.Logf("bad publish: %v", err)
	publish := func(step string) bool {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		defer pcancel()
		ack, err := js.Publish(pctx, "room.a", []byte(step))
		ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
		defer icancel()
		info, ierr := js.Stream(ictx, "ROOM")
		msgs := uint64(0)
		if ierr == nil {
			msgs = info.CachedInfo().State.Msgs
		}
		t.Logf("%s: publish ack=%v err=%v; stream msgs=%d (info err %v)", step, ack, err, msgs, ierr)
		return err == nil
	}
	publish("after the bad publish")
	restartAll := func() {
		for i := range c.names {
			c.servers[i].Shutdown()
		}
		for i := range c.names {
			c.servers[i].WaitForShutdown()
		}
		for i := range c.names {
			c.start(i)
		}
		time.Sleep(10 * time.Second) // elections; the publish below waits 5 s more
	}

	update := func(cfg jetstream.StreamConfig) error {
		uctx, ucancel := context.WithTimeout(ctx, 20*time.Second)
		defer ucancel()
		_, err := js.UpdateStream(uctx, cfg)
		return err
	}
	cfg.Replicas = 1
	err = update(cfg)
	t.Logf("scale to R1: %v", err)
	time.Sleep(3 * time.Second)
	publish("R1, no restart")
	restartAll()
	publish("R1 after a restart of every node")
	cfg.Replicas = 3
	err = update(cfg)
	t.Logf("scale back to R3: %v", err)
	time.Sleep(5 * time.Second)
	publish("R3 again")
	restartAll()
	publish("R3 again, after a restart of every node")
}
