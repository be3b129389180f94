package validate

import (
	"fmt"
	"testing"

	"github.com/unibus/clusterkit/chaos/history"
)

// queueHist publishes m-1..m-n to room, acked, and receives those for
// which recv says so (seq = n).
func queueHist(n int, recv func(i int) bool) *hist {
	h := &hist{}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("m-%d", i)
		t := int64(i * 10)
		h.add(op(history.Publish, "room", id, t, t+5, history.OK))
		if recv(i) {
			o := op(history.Receive, "room", id, t+6, t+7, history.OK)
			o.Seq = uint64(i)
			h.add(o)
		}
	}
	return h
}

func TestQueueClean(t *testing.T) {
	h := queueHist(20, func(int) bool { return true })
	r := Queue(h.ops)
	wantPass(t, r)
	if r.Counts["attempted"] != 20 || r.Counts["acked"] != 20 || r.Counts["received"] != 20 || r.Counts["lost"] != 0 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestQueueLostPrefixMiddlePostfix(t *testing.T) {
	lost := map[int]bool{1: true, 2: true, 10: true, 19: true, 20: true}
	h := queueHist(20, func(i int) bool { return !lost[i] })
	r := Queue(h.ops)
	wantFail(t, r, "lost-middle")
	c := r.Counts
	if c["lost"] != 5 || c["lost-prefix"] != 2 || c["lost-middle"] != 1 || c["lost-postfix"] != 2 {
		t.Fatalf("counts %v", c)
	}
}

func TestQueueNothingReceivedIsPostfix(t *testing.T) {
	r := Queue(queueHist(3, func(int) bool { return false }).ops)
	wantFail(t, r, "lost-postfix")
	if r.Counts["lost-postfix"] != 3 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestQueueUnknownNotReceivedIsNotLost(t *testing.T) {
	h := queueHist(3, func(int) bool { return true })
	h.add(op(history.Publish, "room", "m-x", 100, 2100, history.Unknown))
	h.add(op(history.Publish, "room", "m-y", 100, 200, history.Failed))
	r := Queue(h.ops)
	wantPass(t, r)
	if r.Counts["attempted"] != 5 || r.Counts["acked"] != 3 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestQueueRecovered(t *testing.T) {
	h := queueHist(3, func(int) bool { return true })
	h.add(op(history.Publish, "room", "m-x", 100, 2100, history.Unknown))
	rc := op(history.Receive, "room", "m-x", 2200, 2201, history.OK)
	rc.Seq = 4
	h.add(rc)
	r := Queue(h.ops)
	wantPass(t, r)
	if r.Counts["recovered"] != 1 || kinds(r)["recovered"] != 1 {
		t.Fatalf("counts %v anomalies %v", r.Counts, r.Anomalies)
	}
}

func TestQueueDuplicatedIsReportedNotFailed(t *testing.T) {
	h := queueHist(3, func(int) bool { return true })
	rc := op(history.Receive, "room", "m-2", 200, 201, history.OK)
	rc.Seq = 2 // redelivery of the same stored message
	h.add(rc)
	r := Queue(h.ops)
	wantPass(t, r)
	if r.Counts["duplicated"] != 1 || r.Counts["stored-twice"] != 0 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestQueueStoredTwiceFails(t *testing.T) {
	h := queueHist(3, func(int) bool { return true })
	rc := op(history.Receive, "room", "m-2", 200, 201, history.OK)
	rc.Seq = 9 // a second copy in the stream
	h.add(rc)
	r := Queue(h.ops)
	wantFail(t, r, "stored-twice")
	if r.Counts["duplicated"] != 1 || r.Counts["stored-twice"] != 1 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestQueueUnexpectedFails(t *testing.T) {
	h := queueHist(3, func(int) bool { return true })
	rc := op(history.Receive, "room", "ghost-1", 200, 201, history.OK)
	rc.Seq = 4
	h.add(rc)
	r := Queue(h.ops)
	wantFail(t, r, "unexpected")
	if r.Counts["unexpected"] != 1 || r.Counts["received"] != 4 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestQueueStreamsAreSeparate(t *testing.T) {
	h := queueHist(3, func(int) bool { return true })
	// m-1 received on another room does not count for room.
	h.add(op(history.Publish, "other", "m-9", 1, 2, history.OK))
	rc := op(history.Receive, "other", "m-1", 3, 4, history.OK)
	rc.Seq = 1
	h.add(rc)
	r := Queue(h.ops)
	if r.Counts["streams"] != 2 || kinds(r)["unexpected"] != 1 || kinds(r)["lost-postfix"] != 1 {
		t.Fatalf("got %s %v", r, r.Anomalies)
	}
}

func TestQueueNoTrafficIsInvalid(t *testing.T) {
	wantInvalid(t, Queue(nil))
}

// drain adds the final read of room holding the ids for which keep says
// so, ended by an ok drain op.
func drain(h *hist, n int, keep func(i int) bool) {
	for i := 1; i <= n; i++ {
		if keep(i) {
			d := op(history.Drain, "room", fmt.Sprintf("m-%d", i), 5000, 5001, history.OK)
			d.Seq = uint64(i)
			h.add(d)
		}
	}
	h.add(op(history.Drain, "room", "", 5000, 5002, history.OK))
}

func TestQueueDrainHoldsEverything(t *testing.T) {
	h := queueHist(10, func(i int) bool { return i%2 == 0 })
	drain(h, 10, func(int) bool { return true })
	r := Queue(h.ops)
	wantPass(t, r)
	if r.Counts["received"] != 10 || r.Counts["drained-streams"] != 1 {
		t.Fatalf("counts %v", r.Counts)
	}
}

// A message delivered during the run that the stream no longer holds after
// the heal (a power loss) is lost: the drain is the judge.
func TestQueueDeliveredThenGoneIsLost(t *testing.T) {
	h := queueHist(10, func(int) bool { return true })
	drain(h, 10, func(i int) bool { return i <= 7 })
	r := Queue(h.ops)
	wantFail(t, r, "lost-postfix")
	if r.Counts["lost"] != 3 || r.Counts["lost-postfix"] != 3 {
		t.Fatalf("counts %v", r.Counts)
	}
	// The anomaly names the publish and the delivery.
	for _, a := range r.Anomalies {
		if len(a.OpIDs) != 2 {
			t.Fatalf("anomaly %+v: want the publish and the receive", a)
		}
	}
}

// A stream that is gone after the heal: its drain ends ok with nothing
// read; every acked message is lost.
func TestQueueStreamGoneEverythingLost(t *testing.T) {
	h := queueHist(4, func(int) bool { return true })
	end := op(history.Drain, "room", "", 5000, 5002, history.OK)
	end.Error = "stream not found"
	h.add(end)
	r := Queue(h.ops)
	wantFail(t, r, "lost-postfix")
	if r.Counts["lost"] != 4 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestQueueFailedDrainIsInvalid(t *testing.T) {
	h := queueHist(4, func(int) bool { return true })
	h.add(op(history.Drain, "room", "", 5000, 5002, history.Failed))
	wantInvalid(t, Queue(h.ops))
}

func TestQueueDrainStoredTwiceFails(t *testing.T) {
	h := queueHist(3, func(int) bool { return true })
	drain(h, 3, func(int) bool { return true })
	d := op(history.Drain, "room", "m-2", 5000, 5001, history.OK)
	d.Seq = 7
	h.add(d)
	wantFail(t, Queue(h.ops), "stored-twice")
}
