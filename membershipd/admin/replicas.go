package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Replica is one server's own copy of a stream, as that server's JSZ
// reports it: the state of its local store, not the leader's view. Two
// replicas that agree on every field hold the same messages as far as the
// server can tell without reading them (nats-server 2.15.2 keeps no
// per-replica content hash).
type Replica struct {
	Node     string `json:"node"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Msgs     uint64 `json:"msgs"`
	Bytes    uint64 `json:"bytes"`
}

// Same is the part every replica of a stream must agree on.
func (r Replica) Same() string {
	return fmt.Sprintf("first=%d last=%d msgs=%d bytes=%d", r.FirstSeq, r.LastSeq, r.Msgs, r.Bytes)
}

// jszSubject asks every server for its JetStream report; the daemon
// imports system requests for its internal identity.
const jszSubject = "$SYS.REQ.SERVER.PING.JSZ"

// Replicas asks every server (want of them answer) for its own state of
// stream, over nc (the internal identity): one Replica per server holding
// a copy, sorted by node. A replica that missed writes shows a lower last
// sequence or count; one that holds other messages, other bytes.
func Replicas(ctx context.Context, nc *nats.Conn, stream string, want int) ([]Replica, error) {
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", inbox, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, _ := json.Marshal(server.JSzOptions{Accounts: true, Streams: true})
	if err := nc.PublishRequest(jszSubject, inbox, req); err != nil {
		return nil, fmt.Errorf("publish %s: %w", jszSubject, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var out []Replica
	for answered := 0; answered < want; {
		select {
		case m := <-ch:
			answered++
			var resp struct {
				Server *server.ServerInfo `json:"server"`
				Data   *server.JSInfo     `json:"data"`
				Error  *server.ApiError   `json:"error"`
			}
			if err := json.Unmarshal(m.Data, &resp); err != nil {
				return nil, fmt.Errorf("JSZ answer: %w", err)
			}
			if resp.Error != nil || resp.Server == nil || resp.Data == nil {
				return nil, fmt.Errorf("JSZ answer without data: %s", m.Data)
			}
			for _, a := range resp.Data.AccountDetails {
				for _, s := range a.Streams {
					if s.Name == stream {
						out = append(out, Replica{Node: resp.Server.Name, FirstSeq: s.State.FirstSeq, LastSeq: s.State.LastSeq, Msgs: s.State.Msgs, Bytes: s.State.Bytes})
					}
				}
			}
		case <-wctx.Done():
			return out, fmt.Errorf("JSZ: %d of %d servers answered", answered, want)
		}
	}
	slices.SortFunc(out, func(a, b Replica) int { return strings.Compare(a.Node, b.Node) })
	return out, nil
}
