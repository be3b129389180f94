package validate

import (
	"cmp"
	"slices"

	"github.com/unibus/clusterkit/chaos/history"
)

// Queue judges the room streams: every message a publish acked must be
// received (read back from the stream after the final heal, or delivered
// during the run), and no message may be stored twice.
//
// Per stream (publish/receive Key) it counts, by message id (Value):
//   - attempted: ids published at least once;
//   - acked: ids some publish of which returned ok;
//   - received: ids some ok receive delivered;
//   - lost: acked, never received; split as Jepsen does into lost-prefix
//     (published before the first received message), lost-middle and
//     lost-postfix (after the last received one), in publish order (the
//     first invoke of each id); with nothing received all lost are postfix;
//   - unexpected: received, never attempted;
//   - duplicated: received more than once (a redelivery: reported, not a
//     failure);
//   - stored-twice: received under two stream sequences (the stream holds
//     two copies);
//   - recovered: published with an unknown or failed outcome, yet received
//     (acked late: reported, not a failure).
//
// lost, stored-twice and unexpected fail the run.
//
// A stream with a final read (drain ops, ended by an ok drain with an
// empty Value) is judged against it: an acked message is lost when the
// drain does not hold it, even if it was delivered during the run (the
// stream lost it later: a power loss), and "received" counts what the
// drain holds. A drain that failed makes the run invalid. A stream with
// no drain is judged on the deliveries during the run alone.
func Queue(ops []history.Op) Result {
	r := newResult("queue")
	type msg struct {
		firstInvoke int64
		publishes   []int64
		acked       bool
		receives    []int64
		drains      []int64
		seqs        []uint64
	}
	drained := map[string]bool{} // streams read to their end after the heal
	for _, op := range ops {
		if op.Kind != history.Drain || op.Value != "" {
			continue
		}
		switch op.Outcome {
		case history.OK:
			drained[op.Key] = true
		default:
			r.invalid("the final read of %s failed (op %d): %s", op.Key, op.ID, op.Error)
		}
	}
	streams := map[string]map[string]*msg{}
	get := func(stream, id string) *msg {
		s := streams[stream]
		if s == nil {
			s = map[string]*msg{}
			streams[stream] = s
		}
		m := s[id]
		if m == nil {
			m = &msg{firstInvoke: -1}
			s[id] = m
		}
		return m
	}
	for i := range ops {
		op := &ops[i]
		switch op.Kind {
		case history.Publish:
			m := get(op.Key, op.Value)
			if m.firstInvoke < 0 || op.InvokeMS < m.firstInvoke {
				m.firstInvoke = op.InvokeMS
			}
			m.publishes = append(m.publishes, op.ID)
			if op.Outcome == history.OK {
				m.acked = true
			}
		case history.Receive, history.Drain:
			if op.Outcome != history.OK || op.Value == "" {
				continue
			}
			m := get(op.Key, op.Value)
			if op.Kind == history.Drain {
				m.drains = append(m.drains, op.ID)
			} else {
				m.receives = append(m.receives, op.ID)
			}
			if !slices.Contains(m.seqs, op.Seq) {
				m.seqs = append(m.seqs, op.Seq)
			}
		}
	}
	names := make([]string, 0, len(streams))
	for s := range streams {
		names = append(names, s)
	}
	slices.Sort(names)
	r.Counts["streams"] = len(names)
	for _, stream := range names {
		msgs := streams[stream]
		type entry struct {
			id string
			m  *msg
		}
		var order []entry
		var unexpected []entry
		for id, m := range msgs {
			if len(m.publishes) == 0 {
				unexpected = append(unexpected, entry{id, m})
				continue
			}
			order = append(order, entry{id, m})
		}
		slices.SortFunc(order, func(a, b entry) int {
			return cmp.Or(cmp.Compare(a.m.firstInvoke, b.m.firstInvoke), cmp.Compare(a.id, b.id))
		})
		slices.SortFunc(unexpected, func(a, b entry) int { return cmp.Compare(a.id, b.id) })
		// got: the ops that show a message is in the stream.
		got := func(m *msg) []int64 {
			if drained[stream] {
				return m.drains
			}
			return m.receives
		}
		firstRecv, lastRecv := -1, -1
		for i, e := range order {
			if len(got(e.m)) > 0 {
				if firstRecv < 0 {
					firstRecv = i
				}
				lastRecv = i
			}
		}
		c := map[string]int{}
		for i, e := range order {
			c["attempted"]++
			if e.m.acked {
				c["acked"]++
			}
			if len(got(e.m)) > 0 {
				c["received"]++
				if !e.m.acked {
					c["recovered"]++
					r.note("recovered", append(slices.Clone(e.m.publishes), got(e.m)...),
						"%s: message %s was received although no publish of it was acked", stream, e.id)
				}
			}
			if e.m.acked && len(got(e.m)) == 0 {
				c["lost"]++
				where := "middle"
				switch {
				case firstRecv < 0 || i > lastRecv:
					where = "postfix"
				case i < firstRecv:
					where = "prefix"
				}
				c["lost-"+where]++
				if len(e.m.receives) > 0 {
					r.fail("lost-"+where, append(slices.Clone(e.m.publishes), e.m.receives...),
						"%s: message %s was acked and delivered during the run, but the stream no longer holds it after the heal", stream, e.id)
				} else {
					r.fail("lost-"+where, e.m.publishes, "%s: message %s was acked and never received", stream, e.id)
				}
			}
		}
		for _, e := range append(order, unexpected...) {
			if len(e.m.receives) > 1 {
				c["duplicated"]++
				r.note("duplicated", e.m.receives, "%s: message %s was received %d times", stream, e.id, len(e.m.receives))
			}
			if len(e.m.seqs) > 1 {
				c["stored-twice"]++
				r.fail("stored-twice", append(slices.Clone(e.m.receives), e.m.drains...), "%s: message %s is stored at sequences %v", stream, e.id, e.m.seqs)
			}
		}
		for _, e := range unexpected {
			c["unexpected"]++
			c["received"]++
			r.fail("unexpected", append(slices.Clone(e.m.receives), e.m.drains...), "%s: message %s was received but never published", stream, e.id)
		}
		if drained[stream] {
			c["drained-streams"]++
		}
		for k, v := range c {
			r.Counts[k] += v
		}
		r.reason("%s: attempted %d acked %d received %d lost %d (prefix %d middle %d postfix %d) unexpected %d duplicated %d stored-twice %d recovered %d",
			stream, c["attempted"], c["acked"], c["received"], c["lost"], c["lost-prefix"], c["lost-middle"], c["lost-postfix"],
			c["unexpected"], c["duplicated"], c["stored-twice"], c["recovered"])
	}
	for _, k := range []string{"attempted", "acked", "received", "lost", "lost-prefix", "lost-middle", "lost-postfix", "unexpected", "duplicated", "stored-twice", "recovered", "drained-streams"} {
		r.Counts[k] += 0
	}
	if r.Counts["attempted"] == 0 {
		r.invalid("no message was published: the queue workload did not run")
	}
	return r
}
