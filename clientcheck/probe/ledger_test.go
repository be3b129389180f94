package probe

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// sendAck records message n sent at ms and acked 1 ms later.
func sendAck(l *ledger, n, ms int) {
	l.sent(n, at(ms))
	l.acked(n, at(ms+1))
}

func TestLedgerClean(t *testing.T) {
	l := newLedger(5)
	l.connected("n1")
	for n := 1; n <= 5; n++ {
		sendAck(l, n, 10*n)
		if !l.received(n, at(10*n), at(10*n+2)) {
			t.Fatalf("received(%d) = false", n)
		}
	}
	r := l.report()
	want := Report{Count: 5, Sent: 5, Acked: 5, Received: 5, LongestGap: 10 * time.Millisecond, LongestAck: time.Millisecond,
		LatencyP50: 2 * time.Millisecond, LatencyP99: 2 * time.Millisecond, Servers: []string{"n1"}}
	if !equalReports(r, want) {
		t.Fatalf("report\n got %+v\nwant %+v", r, want)
	}
	if !r.OK() {
		t.Fatal("clean run not OK")
	}
	if l.waiting() != 0 {
		t.Fatalf("waiting = %d", l.waiting())
	}
}

func TestLedgerLossDupOrder(t *testing.T) {
	l := newLedger(6)
	for n := 1; n <= 6; n++ {
		sendAck(l, n, n)
	}
	// 1, 3, 2 (out of order), 3 again (dup, not also out of order),
	// 5, 5 (dup), 4 never (lost), 6 never (lost).
	for i, n := range []int{1, 3, 2, 3, 5, 5} {
		l.received(n, at(n), at(100+10*i))
	}
	// Another run's numbers are not ours.
	if l.received(0, at(0), at(500)) || l.received(7, at(0), at(500)) {
		t.Fatal("out-of-range numbers accepted")
	}
	r := l.report()
	if r.Sent != 6 || r.Acked != 6 || r.Received != 4 {
		t.Fatalf("sent/acked/received = %d/%d/%d, want 6/6/4", r.Sent, r.Acked, r.Received)
	}
	if r.Lost != 2 || !slices.Equal(r.LostIDs, []int{4, 6}) {
		t.Fatalf("lost = %d %v, want 2 [4 6]", r.Lost, r.LostIDs)
	}
	if r.Duplicated != 2 {
		t.Fatalf("duplicated = %d, want 2", r.Duplicated)
	}
	if r.OutOfOrder != 1 {
		t.Fatalf("out of order = %d, want 1", r.OutOfOrder)
	}
	if r.LongestGap != 10*time.Millisecond {
		t.Fatalf("longest gap = %s", r.LongestGap)
	}
	if r.OK() {
		t.Fatal("lossy run OK")
	}
	if l.waiting() != 2 {
		t.Fatalf("waiting = %d, want 2", l.waiting())
	}
}

func TestLedgerDupOnlyNotOK(t *testing.T) {
	l := newLedger(1)
	sendAck(l, 1, 0)
	l.received(1, at(0), at(5))
	l.received(1, at(0), at(6))
	if r := l.report(); r.Lost != 0 || r.Duplicated != 1 || r.OK() {
		t.Fatalf("report %+v: want one duplicate, not OK", r)
	}
}

func TestLedgerUnackedIsNotLost(t *testing.T) {
	l := newLedger(3)
	sendAck(l, 1, 0)
	l.sent(2, at(5)) // the run ended before its ack
	l.sent(2, at(9)) // a retry does not count twice
	l.received(1, at(0), at(3))
	r := l.report()
	if r.Sent != 2 || r.Acked != 1 || r.Lost != 0 || !r.OK() {
		t.Fatalf("report %+v", r)
	}
}

func TestLedgerReceiveBeforeAck(t *testing.T) {
	// The consumer can see a message before the publisher sees its ack.
	l := newLedger(2)
	l.sent(1, at(0))
	l.received(1, at(0), at(1))
	l.acked(1, at(2))
	l.acked(1, at(3)) // a second ack of the same message is ignored
	if l.waiting() != 0 {
		t.Fatalf("waiting = %d, want 0", l.waiting())
	}
	sendAck(l, 2, 10)
	if l.waiting() != 1 {
		t.Fatalf("waiting = %d, want 1", l.waiting())
	}
	l.received(2, at(10), at(12))
	select {
	case <-l.notify:
	default:
		t.Fatal("no notification when the last acked message arrived")
	}
	if r := l.report(); r.Acked != 2 || r.Lost != 0 {
		t.Fatalf("report %+v", r)
	}
}

func TestLedgerPercentiles(t *testing.T) {
	l := newLedger(100)
	// Latencies 1..100 ms, received in reverse order of latency.
	for n := 1; n <= 100; n++ {
		sendAck(l, n, 0)
		lat := 101 - n
		l.received(n, at(0), at(lat))
	}
	r := l.report()
	if r.LatencyP50 != 50*time.Millisecond || r.LatencyP99 != 99*time.Millisecond {
		t.Fatalf("p50 %s p99 %s, want 50ms 99ms", r.LatencyP50, r.LatencyP99)
	}
	if r.OutOfOrder != 0 {
		t.Fatalf("out of order = %d", r.OutOfOrder)
	}
	// A clock step backwards never makes a negative latency.
	l2 := newLedger(1)
	l2.received(1, at(10), at(5))
	if r := l2.report(); r.LatencyP50 != 0 {
		t.Fatalf("negative latency not clamped: %s", r.LatencyP50)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Fatalf("percentile of nothing = %s", got)
	}
	one := []time.Duration{7}
	if percentile(one, 0.5) != 7 || percentile(one, 0.99) != 7 {
		t.Fatal("percentile of one sample")
	}
}

func TestLedgerReconnects(t *testing.T) {
	l := newLedger(10)
	l.connected("n1")
	// Acks every 10 ms; the connection drops at 33 ms (after the ack of
	// message 3 at 31 ms), comes back on n2 at 41 ms, and message 4 (in
	// flight, retried) is acked at 62 ms.
	for n := 1; n <= 3; n++ {
		sendAck(l, n, 10*n)
	}
	l.sent(4, at(40))
	l.disconnected(at(33), "n1")
	l.disconnected(at(34), "n1") // a second notice does not move the start
	l.reconnected(at(41), "n2")
	l.acked(4, at(62))
	for n := 5; n <= 10; n++ {
		sendAck(l, n, 10*n+20)
	}
	// After the last ack: a drop without publishing around it.
	l.disconnected(at(500), "n2")
	l.reconnected(at(520), "n3")
	// And a reconnect back to n2.
	l.disconnected(at(600), "n3")
	l.reconnected(at(610), "n2")
	r := l.report()
	if r.LongestAck != 22*time.Millisecond {
		t.Fatalf("longest ack %s, want 22ms (message 4: sent 40, acked 62)", r.LongestAck)
	}
	if len(r.Reconnects) != 3 {
		t.Fatalf("reconnects = %+v", r.Reconnects)
	}
	rc := r.Reconnects[0]
	if rc.From != "n1" || rc.To != "n2" || rc.Down != 8*time.Millisecond || rc.Gap != 31*time.Millisecond || !rc.At.Equal(at(41)) {
		t.Fatalf("first reconnect %+v: want n1->n2 down 8ms gap 31ms", rc)
	}
	if rc := r.Reconnects[1]; rc.Gap != 20*time.Millisecond || rc.Down != 20*time.Millisecond {
		t.Fatalf("second reconnect %+v: want gap = down = 20ms", rc)
	}
	if !slices.Equal(r.Servers, []string{"n1", "n2", "n3", "n2"}) {
		t.Fatalf("servers %v", r.Servers)
	}
	// A reconnect without a disconnect notice has no downtime.
	l2 := newLedger(1)
	l2.reconnected(at(5), "n1")
	if rc := l2.report().Reconnects[0]; rc.Down != 0 || rc.From != "" {
		t.Fatalf("%+v", rc)
	}
}

func TestReportText(t *testing.T) {
	r := Report{Room: "clientcheck-0011aabb", RoomID: "0123456789abcdef", RunID: "r1", Count: 3,
		Sent: 3, Acked: 3, Received: 2, Lost: 1, LostIDs: []int{2},
		Reconnects: []Reconnect{{At: at(0), From: "n1", To: "n2", Down: 3 * time.Millisecond, Gap: 29 * time.Millisecond}},
		LongestGap: 1500 * time.Millisecond, Servers: []string{"n1", "n2"},
		Violations: []string{`Permissions Violation for Publish to "x"`}}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"lost          1 (n = 2)", "n1 -> n2", "publish gap 29.00 ms", "1.50 s", "n1 -> n2", "result        FAILED", "violation"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	// JSON round-trips.
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil || !equalReports(back, r) {
		t.Fatalf("JSON round trip: %v\n%s", err, data)
	}
}

func equalReports(a, b Report) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func TestLedgerOldestWaiting(t *testing.T) {
	l := newLedger(3)
	if !l.oldestWaiting().IsZero() {
		t.Fatal("nothing acked, yet something waits")
	}
	sendAck(l, 1, 0)  // acked at 1
	sendAck(l, 2, 10) // acked at 11
	sendAck(l, 3, 20) // acked at 21
	l.received(1, at(0), at(2))
	if got := l.oldestWaiting(); !got.Equal(at(11)) {
		t.Fatalf("oldest waiting %s, want the ack of 2", got)
	}
	l.received(3, at(20), at(22))
	l.received(2, at(10), at(23))
	if !l.oldestWaiting().IsZero() {
		t.Fatal("all received, yet something waits")
	}
}
