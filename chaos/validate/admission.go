package validate

import (
	"github.com/unibus/clusterkit/chaos/history"
)

// Admission: no node admits an identity that was never registered, and no
// node serves a signed request replayed byte for byte. A connect whose
// Value (role) is "unregistered" must fail everywhere, always; a request
// whose Value is "replay" (a deliberate replay of an accepted request) must
// be refused: its nonce was recorded when the original was served. An
// unknown outcome is no violation (the client cannot tell).
func Admission(ops []history.Op) Result {
	r := newResult("admission")
	var unreg, replays []int64
	for _, op := range ops {
		switch {
		case op.Kind == history.Connect && op.Value == "unregistered":
			r.Counts["unregistered-attempts"]++
			if op.Outcome == history.OK {
				unreg = append(unreg, op.ID)
			}
		case op.Kind == history.Request && op.Value == "replay":
			r.Counts["replays"]++
			if op.Outcome == history.OK {
				replays = append(replays, op.ID)
			}
		}
	}
	r.Counts["unregistered-admitted"] = len(unreg)
	r.Counts["replays-accepted"] = len(replays)
	if len(unreg) > 0 {
		r.fail("unregistered-admitted", unreg, "an identity never registered was admitted %d time(s)", len(unreg))
	}
	if len(replays) > 0 {
		r.fail("replay-accepted", replays, "a replayed signed request was served %d time(s)", len(replays))
	}
	if r.Counts["unregistered-attempts"]+r.Counts["replays"] == 0 {
		r.reason("no unregistered connection or replayed request in the history: nothing to judge")
	}
	return r
}
