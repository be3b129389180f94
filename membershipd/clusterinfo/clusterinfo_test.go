package clusterinfo

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// TestGuard: only requests whose reply is under InboxPrefix are internal;
// what a member can have the server deliver (fetch replies with a $JS.ACK
// reply, API answers with none) is counted and refused.
func TestGuard(t *testing.T) {
	var g Guard
	for _, reply := range []string{"", "$JS.ACK.ROOM_x.u_a.1.2.3.4.5", "_INBOX.abc", InboxPrefix, InboxPrefix + "x.y", "_INBOX_0123456789abcdef.x"} {
		if g.Genuine(&nats.Msg{Subject: PingSubject, Reply: reply}) {
			t.Errorf("reply %q accepted", reply)
		}
	}
	if !g.Genuine(&nats.Msg{Subject: PingSubject, Reply: InboxPrefix + ".abc"}) {
		t.Error("internal request refused")
	}
	if g.Ignored() != 6 {
		t.Errorf("ignored %d, want 6", g.Ignored())
	}
}
