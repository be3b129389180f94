package chaos

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// electionPoll is how often ElectionTime asks. Each request runs on its own:
// one sent while the group has no leader is answered late or not at all,
// and must not hide the answer to a later one.
const electionPoll = 20 * time.Millisecond

// ElectionTime measures a raft group's election after its leader victim
// was killed at killed: the time from killed until an info request
// through nc names a leader other than victim. A request goes out every
// electionPoll, each on its own, so the answer is within one poll (and a
// round trip) of the election. consumer "" asks for the stream; otherwise
// for that consumer of the stream. -1 if none within limit.
func ElectionTime(ctx context.Context, nc *nats.Conn, stream, consumer, victim string, killed time.Time, limit time.Duration) time.Duration {
	js, err := jetstream.New(nc)
	if err != nil {
		return -1
	}
	ctx, cancel := context.WithTimeout(ctx, time.Until(killed.Add(limit)))
	defer cancel()
	found := make(chan time.Duration, 1)
	ask := func() {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		leader := ""
		if consumer == "" {
			if st, err := js.Stream(rctx, stream); err == nil && st.CachedInfo().Cluster != nil {
				leader = st.CachedInfo().Cluster.Leader
			}
		} else if c, err := js.Consumer(rctx, stream, consumer); err == nil && c.CachedInfo().Cluster != nil {
			leader = c.CachedInfo().Cluster.Leader
		}
		if leader != "" && leader != victim {
			select {
			case found <- time.Since(killed):
			default:
			}
		}
	}
	t := time.NewTicker(electionPoll)
	defer t.Stop()
	for {
		go ask()
		select {
		case d := <-found:
			return d
		case <-ctx.Done():
			return -1
		case <-t.C:
		}
	}
}

// MetaLeader names the JetStream meta layer's leader as the server nc is
// connected to knows it (through the system request the daemon imports
// for its internal identity), or "" if it does not answer or knows none.
func MetaLeader(ctx context.Context, nc *nats.Conn) string {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(rctx, "$SYS.REQ.SERVER.PING.JSZ", []byte("{}"))
	if err != nil {
		return ""
	}
	var resp struct {
		Data *struct {
			Meta *struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		} `json:"data"`
	}
	if json.Unmarshal(m.Data, &resp) != nil || resp.Data == nil || resp.Data.Meta == nil {
		return ""
	}
	return resp.Data.Meta.Leader
}
