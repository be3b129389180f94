package raftcatchup

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// TestMeasureIngestProxy measures what an ingest proxy would cost a
// member's publish: members would publish to a subject outside the room
// stream (ingest.<room>), and the daemon on the member's node would
// republish to the stream keeping only Nats-Msg-Id (so no member can send
// Nats-Expected-Last-Msg-Id, which stops a replicated stream in 2.15.2,
// see TestReproExpectedLastMsgIDStopsStream). Two ways to return the ack:
// "passthrough" republishes with the member's reply subject, so the stream
// leader acks the member directly; "relay" has the daemon wait for the
// ack and answer the member itself. It also checks that the bad header
// sent through the proxy no longer stops the stream. Numbers only, no
// assertion on them:
//
//	INGEST_MEASURE=1 go test ./chaos/raftcatchup -run TestMeasureIngestProxy -v -count=1
func TestMeasureIngestProxy(t *testing.T) {
	if os.Getenv("INGEST_MEASURE") == "" {
		t.Skip("measurement: set INGEST_MEASURE=1")
	}
	c := startCluster(t, logDir(t))
	client, daemon := c.connect(0), c.connect(0)
	js, _ := jetstream.New(client)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ROOM", Subjects: []string{"room.>"}, Replicas: 3,
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	republish := func(m *nats.Msg, reply string) *nats.Msg {
		out := nats.NewMsg("room." + strings.TrimPrefix(m.Subject, "ingest."))
		out.Data, out.Reply = m.Data, reply
		if id := m.Header.Get(jetstream.MsgIDHeader); id != "" {
			out.Header.Set(jetstream.MsgIDHeader, id)
		}
		return out
	}
	if _, err := daemon.QueueSubscribe("ingest.pass.>", "ingest", func(m *nats.Msg) {
		_ = daemon.PublishMsg(republish(m, m.Reply))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := daemon.QueueSubscribe("ingest.relay.>", "ingest", func(m *nats.Msg) {
		r, err := daemon.RequestMsg(republish(m, ""), 5*time.Second)
		if err != nil {
			return // the member's publish times out: it retries with the same Nats-Msg-Id
		}
		_ = m.Respond(r.Data)
	}); err != nil {
		t.Fatal(err)
	}
	if err := daemon.Flush(); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 512)
	run := func(name, subj string, n int) {
		var lat []time.Duration
		for range n {
			m := nats.NewMsg(subj)
			m.Data = payload
			m.Header.Set(jetstream.MsgIDHeader, nuid.Next())
			start := time.Now()
			r, err := client.RequestMsg(m, 5*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if strings.Contains(string(r.Data), "error") {
				t.Fatalf("%s: %s", name, r.Data)
			}
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		t.Logf("%-11s n=%d p50=%v p90=%v p99=%v", name, n, lat[n/2].Round(time.Microsecond), lat[n*9/10].Round(time.Microsecond), lat[n*99/100].Round(time.Microsecond))
	}
	const n = 2000
	for round := range 2 {
		t.Logf("round %d", round)
		run("direct", "room.a", n)
		run("passthrough", "ingest.pass.a", n)
		run("relay", "ingest.relay.a", n)
	}

	// The bad header through the proxy is dropped, and the stream goes on.
	m := nats.NewMsg("ingest.pass.a")
	m.Header.Set(jetstream.ExpectedLastMsgIDHeader, nuid.Next())
	if _, err := client.RequestMsg(m, 5*time.Second); err != nil {
		t.Fatalf("publish with the bad header through the proxy: %v", err)
	}
	if _, err := js.Publish(ctx, "room.a", []byte("after")); err != nil {
		t.Errorf("a publish after the bad header went through the proxy: %v", err)
	}
}
