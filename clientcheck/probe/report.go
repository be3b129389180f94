package probe

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Reconnect is one loss of the NATS connection and the reconnect after it.
type Reconnect struct {
	At     time.Time `json:"at"`      // reconnected
	DownAt time.Time `json:"down_at"` // disconnect noticed
	From   string    `json:"from"`    // server name before
	To     string    `json:"to"`      // server name after
	// Down is the time the client was disconnected (DownAt to At).
	Down time.Duration `json:"down_ns"`
	// Gap is the failover gap the publisher saw: from the last publish ack
	// before the drop to the first ack after it (Down when no publish was
	// acked on one side of the drop).
	Gap time.Duration `json:"gap_ns"`
}

// Report is the outcome of a Run. Messages are counted by their number n
// (1..Count, carried in the payload and in the Nats-Msg-Id), never by
// deliveries.
type Report struct {
	Room   string `json:"room"`    // room name
	RoomID string `json:"room_id"` // server-assigned room id
	RunID  string `json:"run_id"`  // this run's id (message ids are RUNID-N)
	Count  int    `json:"count"`   // messages asked for

	Sent     int `json:"sent"`     // messages published at least once
	Acked    int `json:"acked"`    // messages whose publish JetStream acked
	Received int `json:"received"` // distinct messages received
	// Lost: acked but never received.
	Lost int `json:"lost"`
	// Duplicated: receipts of a message beyond its first.
	Duplicated int `json:"duplicated"`
	// OutOfOrder: first receipts of a message numbered lower than one
	// received before it.
	OutOfOrder int `json:"out_of_order"`

	Reconnects []Reconnect `json:"reconnects"`
	// ConsumerRestarts counts resets of the consumer beyond the routine
	// one after each reconnect: a consumer stalled (acked messages not
	// arriving for 1 s) or a consume loop that ended and was restarted.
	ConsumerRestarts int `json:"consumer_restarts"`
	// LongestGap is the longest time between consecutive receipts.
	LongestGap time.Duration `json:"longest_gap_ns"`
	// LongestAck is the longest time from a message's first publish
	// attempt to its ack (retries included): the publisher's longest stall.
	LongestAck time.Duration `json:"longest_ack_ns"`
	// Publish-to-receive latency of first receipts.
	LatencyP50 time.Duration `json:"latency_p50_ns"`
	LatencyP99 time.Duration `json:"latency_p99_ns"`

	LostIDs []int    `json:"lost_ids,omitempty"` // the first 20
	Servers []string `json:"servers"`            // servers used, in order
	// Violations are the permission violations the server reported on this
	// connection (the first 20), e.g. `publish to "unibus.room.x.msg"`.
	Violations []string `json:"violations,omitempty"`
	// Replays counts envelopes whose message id was seen before in this
	// run (stored again by someone able to publish or write into the
	// stream): dropped, never counted as received. ReplayViolations
	// describes the first 20.
	Replays          int           `json:"replays"`
	ReplayViolations []string      `json:"replay_violations,omitempty"`
	Elapsed          time.Duration `json:"elapsed_ns"`
}

// OK reports a run without loss, duplication or replayed envelopes.
func (r Report) OK() bool { return r.Lost == 0 && r.Duplicated == 0 && r.Replays == 0 }

// WriteText writes the report for a terminal.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	p := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	p("room", "%s (id %s)", r.Room, r.RoomID)
	p("run", "%s", r.RunID)
	p("sent", "%d of %d", r.Sent, r.Count)
	p("acked", "%d", r.Acked)
	p("received", "%d", r.Received)
	lost := fmt.Sprint(r.Lost)
	if len(r.LostIDs) > 0 {
		lost += fmt.Sprintf(" (n = %s", joinInts(r.LostIDs))
		if r.Lost > len(r.LostIDs) {
			lost += ", ..."
		}
		lost += ")"
	}
	p("lost", "%s", lost)
	p("duplicated", "%d", r.Duplicated)
	p("out of order", "%d", r.OutOfOrder)
	p("reconnects", "%d", len(r.Reconnects))
	for _, rc := range r.Reconnects {
		p("", "%s  %s -> %s  disconnected %s, publish gap %s",
			rc.At.Format("15:04:05.000"), orDash(rc.From), orDash(rc.To), ms(rc.Down), ms(rc.Gap))
	}
	if r.ConsumerRestarts > 0 {
		p("consumer", "reset %d times (stalled)", r.ConsumerRestarts)
	}
	p("longest gap", "%s between receipts; longest publish-to-ack %s", ms(r.LongestGap), ms(r.LongestAck))
	p("latency", "p50 %s  p99 %s", ms(r.LatencyP50), ms(r.LatencyP99))
	p("servers", "%s", strings.Join(r.Servers, " -> "))
	for _, v := range r.Violations {
		p("violation", "%s", v)
	}
	if r.Replays > 0 {
		p("replays", "%d replayed envelopes dropped", r.Replays)
		for _, v := range r.ReplayViolations {
			p("replay violation", "%s", v)
		}
	}
	p("elapsed", "%s", r.Elapsed.Round(time.Millisecond))
	verdict := "OK"
	if !r.OK() {
		verdict = "FAILED"
	}
	p("result", "%s", verdict)
	return tw.Flush()
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ms formats d in milliseconds (seconds from 1 s on).
func ms(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}
