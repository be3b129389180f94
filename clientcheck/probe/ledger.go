package probe

import (
	"math"
	"slices"
	"sync"
	"time"
)

// ledger is the probe's bookkeeping: what was sent, acked and received, and
// when the connection dropped and came back. It knows nothing about NATS, so
// the arithmetic of a Report is tested on recorded sequences. Safe for
// concurrent use (the publisher, the consumer and the connection handlers
// all write to it).
type ledger struct {
	mu    sync.Mutex
	count int

	sentAt  []time.Time // by n (index 0 unused); zero = never sent
	ackedAt []time.Time // by n; zero = never acked
	recvs   []int       // receipts by n
	nSent   int
	nAcked  int

	nRecv    int // distinct n received
	dups     int // receipts beyond the first
	ooo      int // first receipts of an n lower than one received before
	maxN     int
	lastRecv time.Time
	gap      time.Duration
	ackWait  time.Duration   // longest first-attempt-to-ack
	lat      []time.Duration // publish-to-receive of first receipts

	// outstanding counts messages acked but not yet received; notify gets a
	// token whenever it may have reached zero.
	outstanding int
	notify      chan struct{}

	downAt     time.Time // zero while connected
	downFrom   string
	reconnects []Reconnect
	servers    []string
}

func newLedger(count int) *ledger {
	return &ledger{
		count:   count,
		sentAt:  make([]time.Time, count+1),
		ackedAt: make([]time.Time, count+1),
		recvs:   make([]int, count+1),
		lat:     make([]time.Duration, 0, count),
		notify:  make(chan struct{}, 1),
	}
}

func (l *ledger) valid(n int) bool { return n >= 1 && n <= l.count }

// sent records the first publish attempt of message n.
func (l *ledger) sent(n int, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.valid(n) || !l.sentAt[n].IsZero() {
		return
	}
	l.sentAt[n] = at
	l.nSent++
}

// acked records the publish ack of message n (the first one counts).
func (l *ledger) acked(n int, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.valid(n) || !l.ackedAt[n].IsZero() {
		return
	}
	l.ackedAt[n] = at
	l.nAcked++
	if !l.sentAt[n].IsZero() {
		l.ackWait = max(l.ackWait, at.Sub(l.sentAt[n]))
	}
	if l.recvs[n] == 0 {
		l.outstanding++
	}
}

// received records a delivery of message n, published at sent, at time at.
// It reports whether n belongs to this run (1..count).
func (l *ledger) received(n int, sent, at time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.valid(n) {
		return false
	}
	if !l.lastRecv.IsZero() {
		l.gap = max(l.gap, at.Sub(l.lastRecv))
	}
	l.lastRecv = at
	l.recvs[n]++
	if l.recvs[n] > 1 {
		l.dups++
		return true
	}
	l.nRecv++
	if n < l.maxN {
		l.ooo++
	}
	l.maxN = max(l.maxN, n)
	l.lat = append(l.lat, max(at.Sub(sent), 0))
	if !l.ackedAt[n].IsZero() {
		l.outstanding--
		if l.outstanding == 0 {
			select {
			case l.notify <- struct{}{}:
			default:
			}
		}
	}
	return true
}

// waiting is the number of acked messages not received yet.
func (l *ledger) waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.outstanding
}

// oldestWaiting is the ack time of the earliest acked message not received
// yet (zero if none).
func (l *ledger) oldestWaiting() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.outstanding == 0 {
		return time.Time{}
	}
	var oldest time.Time
	for n := 1; n <= l.count; n++ {
		if t := l.ackedAt[n]; !t.IsZero() && l.recvs[n] == 0 && (oldest.IsZero() || t.Before(oldest)) {
			oldest = t
		}
	}
	return oldest
}

// connected records the server the client is connected to at the start.
func (l *ledger) connected(server string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addServer(server)
}

func (l *ledger) addServer(s string) {
	if s != "" && (len(l.servers) == 0 || l.servers[len(l.servers)-1] != s) {
		l.servers = append(l.servers, s)
	}
}

// disconnected records the loss of the connection to server from.
func (l *ledger) disconnected(at time.Time, from string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.downAt.IsZero() {
		l.downAt, l.downFrom = at, from
	}
}

// reconnected records a new connection to server to.
func (l *ledger) reconnected(at time.Time, to string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Reconnect{At: at, DownAt: l.downAt, From: l.downFrom, To: to}
	if r.DownAt.IsZero() {
		r.DownAt = at
	}
	r.Down = at.Sub(r.DownAt)
	l.reconnects = append(l.reconnects, r)
	l.downAt, l.downFrom = time.Time{}, ""
	l.addServer(to)
}

// report computes the counts of a Report (Room, RunID, Elapsed and
// Violations are the caller's).
func (l *ledger) report() Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Report{
		Count:      l.count,
		Sent:       l.nSent,
		Acked:      l.nAcked,
		Received:   l.nRecv,
		Duplicated: l.dups,
		OutOfOrder: l.ooo,
		LongestGap: l.gap,
		LongestAck: l.ackWait,
		Servers:    slices.Clone(l.servers),
	}
	for n := 1; n <= l.count; n++ {
		if !l.ackedAt[n].IsZero() && l.recvs[n] == 0 {
			r.Lost++
			if len(r.LostIDs) < maxLostIDs {
				r.LostIDs = append(r.LostIDs, n)
			}
		}
	}
	lat := slices.Clone(l.lat)
	slices.Sort(lat)
	r.LatencyP50 = percentile(lat, 0.50)
	r.LatencyP99 = percentile(lat, 0.99)
	acks := l.ackTimes()
	for _, rc := range l.reconnects {
		rc.Gap = ackGap(acks, rc)
		r.Reconnects = append(r.Reconnects, rc)
	}
	return r
}

// maxLostIDs bounds Report.LostIDs.
const maxLostIDs = 20

// ackTimes are the ack times in time order.
func (l *ledger) ackTimes() []time.Time {
	ts := make([]time.Time, 0, l.nAcked)
	for _, t := range l.ackedAt[1:] {
		if !t.IsZero() {
			ts = append(ts, t)
		}
	}
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	return ts
}

// ackGap is the failover gap a publisher saw across reconnect rc: from the
// last ack before the connection dropped to the first ack after it. Without
// an ack on both sides (the drop happened before publishing began or after
// it ended) it is the time the client was disconnected.
func ackGap(acks []time.Time, rc Reconnect) time.Duration {
	i, _ := slices.BinarySearchFunc(acks, rc.DownAt, func(a, t time.Time) int {
		if a.After(t) {
			return 1
		}
		return -1
	})
	// acks[:i] are at or before DownAt.
	if i == 0 || i == len(acks) {
		return rc.Down
	}
	return acks[i].Sub(acks[i-1])
}

// percentile is the nearest-rank p-quantile of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
