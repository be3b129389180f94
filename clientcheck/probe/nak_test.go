package probe

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos/natstest"
)

// TestNakSubject: the NAK for another stream sequence keeps the stream,
// consumer and every other token of the template, in both ack-subject
// forms, and refuses what is not an ack subject.
func TestNakSubject(t *testing.T) {
	for _, tc := range []struct {
		tmpl, want string
		ok         bool
	}{
		{"$JS.ACK.ROOM_a.u_b.3.17.42.1700000000.5", "$JS.ACK.ROOM_a.u_b.1.9.43.1700000000.5", true},
		{"$JS.ACK.dom.acchash.ROOM_a.u_b.1.17.42.1700000000.5.rnd", "$JS.ACK.dom.acchash.ROOM_a.u_b.1.9.43.1700000000.5.rnd", true},
		{"_INBOX.abc.def", "", false},
		{"$JS.ACK.ROOM_a.u_b.1.17", "", false},
		{"$JS.ACK.ROOM_a.u_b.1.17.x.1700000000.5", "", false},
	} {
		got, ok := nakSubject(tc.tmpl, 9)
		if ok != tc.ok || got != tc.want {
			t.Errorf("nakSubject(%q, 9) = %q, %v; want %q, %v", tc.tmpl, got, ok, tc.want, tc.ok)
		}
	}
}

// TestNakRedeliversLostDelivery: a delivery that never reached the client
// (its connection died) is redelivered by a NAK built from another
// delivery's ack subject, long before the consumer's AckWait, both when it
// was delivered before the template and after it. This is what lets the
// reader fill a gap without the control plane; it rests on nats-server's
// ack-subject format and NAK rules, so it runs against the real server.
func TestNakRedeliversLostDelivery(t *testing.T) {
	_, nc, js := natstest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}}); err != nil {
		t.Fatal(err)
	}
	// An AckWait far beyond the fetch deadlines below: only a NAK can
	// bring a lost delivery back within them.
	cons, err := js.CreateConsumer(ctx, "R", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := js.Publish(ctx, "r.x", []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := cons.Fetch(4, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 4 {
		t.Fatalf("fetched %d of 4", len(msgs))
	}
	// Deliveries 2 and 4 are "lost": never acked. 1 and 3 arrive.
	for _, i := range []int{0, 2} {
		if err := msgs[i].Ack(); err != nil {
			t.Fatal(err)
		}
	}
	tmpl := msgs[2].Reply() // stream sequence 3
	for _, lost := range []uint64{2, 4} {
		subj, ok := nakSubject(tmpl, lost)
		if !ok {
			t.Fatalf("no NAK subject from %q", tmpl)
		}
		if err := nc.Publish(subj, []byte("-NAK")); err != nil {
			t.Fatal(err)
		}
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range b.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if md.Sequence.Stream != lost || md.NumDelivered != 2 {
				t.Errorf("after the NAK of %d: got stream sequence %d, delivery %d", lost, md.Sequence.Stream, md.NumDelivered)
			}
			_ = m.Ack()
			got++
		}
		if got != 1 {
			t.Errorf("sequence %d not redelivered after its NAK (AckWait is 10 min)", lost)
		}
	}
}
