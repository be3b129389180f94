package nemesis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/validate"
	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Replica is one node's copy of one stream, as that server reports it
// ($SYS.REQ.SERVER.PING.JSZ with stream details: every server answers
// with its own replicas' state, leader or not).
type Replica struct {
	Node       string `json:"node"`
	Stream     string `json:"stream"`
	Leader     string `json:"leader"`
	Msgs       uint64 `json:"msgs"`
	Bytes      uint64 `json:"bytes"`
	FirstSeq   uint64 `json:"first_seq"`
	LastSeq    uint64 `json:"last_seq"`
	NumDeleted int    `json:"num_deleted,omitempty"`
	// LostMsgs: the server's own count of messages it found lost on
	// recovery (a torn or truncated block after a crash).
	LostMsgs int `json:"lost_msgs,omitempty"`
	// Hash: the content hash of this node's own copy (chaos/storehash,
	// read from its store after the cluster stopped); "" where the
	// target's stores cannot be read (ssh).
	Hash string `json:"hash,omitempty"`
}

// Replicas is replicas.json.
type Replicas struct {
	AtMS     int64     `json:"at_ms"`
	Answered []string  `json:"answered"` // servers that answered
	Replicas []Replica `json:"replicas"`
	// Converged: every replica of every stream reported the same
	// messages, bytes and sequences (after up to ConvergeWait).
	Converged bool     `json:"converged"`
	Diverged  []string `json:"diverged,omitempty"`
	Note      string   `json:"note"`
}

// jszAnswer is a server's answer to the JSZ ping.
type jszAnswer struct {
	Server server.ServerInfo `json:"server"`
	Data   *server.JSInfo    `json:"data"`
	Error  *server.ApiError  `json:"error"`
}

// replicaSummaries asks every server for its replicas through node n's
// internal identity (system requests are imported for it).
func replicaSummaries(ctx context.Context, c chaos.Cluster, n chaos.Node) ([]Replica, []string, error) {
	nc, err := chaos.DialInternal(c, n)
	if err != nil {
		return nil, nil, err
	}
	defer nc.Close()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, _ := json.Marshal(server.JSzOptions{Accounts: true, Streams: true})
	if err := nc.PublishRequest("$SYS.REQ.SERVER.PING.JSZ", inbox, req); err != nil {
		return nil, nil, err
	}
	var out []Replica
	var answered []string
	deadline := time.Now().Add(3 * time.Second)
	for len(answered) < len(c.Nodes()) {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		var a jszAnswer
		if err := json.Unmarshal(m.Data, &a); err != nil || a.Data == nil {
			continue
		}
		answered = append(answered, a.Server.Name)
		for _, acc := range a.Data.AccountDetails {
			for _, sd := range acc.Streams {
				r := Replica{Node: a.Server.Name, Stream: sd.Name, Msgs: sd.State.Msgs, Bytes: sd.State.Bytes,
					FirstSeq: sd.State.FirstSeq, LastSeq: sd.State.LastSeq, NumDeleted: sd.State.NumDeleted}
				if sd.Cluster != nil {
					r.Leader = sd.Cluster.Leader
				}
				if sd.State.Lost != nil {
					r.LostMsgs = len(sd.State.Lost.Msgs)
				}
				out = append(out, r)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Stream != out[j].Stream {
			return out[i].Stream < out[j].Stream
		}
		return out[i].Node < out[j].Node
	})
	sort.Strings(answered)
	if len(answered) == 0 {
		return nil, nil, fmt.Errorf("no server answered the JSZ ping through %s", n.Name())
	}
	return out, answered, nil
}

// movingStream is written by every node every second, so its replicas are
// rarely equal at one instant: left out of the comparison (still listed).
const movingStream = "KV_UNIBUS_heartbeats"

// diverged names the streams whose replicas differ.
func diverged(rs []Replica) []string {
	by := map[string][]Replica{}
	for _, r := range rs {
		if r.Stream == movingStream {
			continue
		}
		by[r.Stream] = append(by[r.Stream], r)
	}
	var out []string
	for s, list := range by {
		for _, r := range list[1:] {
			f := list[0]
			if r.Msgs != f.Msgs || r.LastSeq != f.LastSeq || r.FirstSeq != f.FirstSeq || r.Bytes != f.Bytes || r.Hash != f.Hash {
				out = append(out, fmt.Sprintf("%s: %s has %d msgs last %d hash %.12s, %s has %d msgs last %d hash %.12s", s, f.Node, f.Msgs, f.LastSeq, f.Hash, r.Node, r.Msgs, r.LastSeq, r.Hash))
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// gatherReplicas polls the replica summaries until every stream's
// replicas agree or wait passes. With an internal connection every server
// reports every stream it holds; through the CLI (env.cli) the streams
// are named: the control-plane buckets' and the probes' rooms.
func gatherReplicas(ctx context.Context, e *env, rooms []string, wait time.Duration) Replicas {
	deadline := time.Now().Add(wait)
	var last Replicas
	streams := append(controlStreams(), rooms...)
	slices.Sort(streams)
	for i := 0; ; i++ {
		n := e.nodes[i%len(e.nodes)]
		var (
			rs       []Replica
			answered []string
			err      error
		)
		note := "per-server stream state from $SYS.REQ.SERVER.PING.JSZ (messages, bytes, first/last sequence)"
		if e.cli {
			rs, answered, err = cliReplicas(ctx, e.c, n, streams, len(e.nodes))
			note = "per-server stream state from `membershipd cluster replicas --stream S --json` on a node (its JSZ: messages, bytes, first/last sequence) for the control-plane buckets and the probes' rooms; no content hash on this target (the stores of a deployed cluster are not copied off its hosts)"
		} else {
			rs, answered, err = replicaSummaries(ctx, e.c, n)
		}
		last = Replicas{AtMS: e.hist.MS(time.Now()), Answered: answered, Replicas: rs,
			Note: note + "; " + movingStream + " is not compared (every node writes it every second)"}
		if err != nil {
			last.Diverged = []string{err.Error()}
		} else {
			last.Diverged = diverged(rs)
			if len(answered) < len(e.nodes) {
				last.Diverged = append(last.Diverged, fmt.Sprintf("only %v answered", answered))
			}
			last.Converged = len(last.Diverged) == 0
		}
		if last.Converged || time.Now().After(deadline) || ctx.Err() != nil {
			return last
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// FinalRead is what a stream holds after the final heal: every message id
// (Nats-Msg-Id) with its sequence, read through the leader.
type FinalRead struct {
	Stream  string            `json:"stream"`
	LastSeq uint64            `json:"last_seq"`
	IDs     map[string]uint64 `json:"ids"`
	// Missing: the stream does not exist any more.
	Missing bool `json:"missing,omitempty"`
	// Dups are ids stored at more than one sequence.
	Dups  []string `json:"dups,omitempty"`
	Error string   `json:"error,omitempty"`
	// Order: every message read, in stream order (drain ops); StartMS
	// and EndMS: the read's span on the run's clock.
	Order   []IDSeq `json:"-"`
	StartMS int64   `json:"start_ms"`
	EndMS   int64   `json:"end_ms"`
}

// IDSeq is one stored message: its id and sequence.
type IDSeq struct {
	ID  string
	Seq uint64
}

// finalRead reads every message of stream with an ordered consumer on
// node n's internal identity.
func finalRead(ctx context.Context, c chaos.Cluster, n chaos.Node, stream string) FinalRead {
	fr := FinalRead{Stream: stream, IDs: map[string]uint64{}}
	fail := func(err error) FinalRead { fr.Error = err.Error(); return fr }
	nc, err := chaos.DialInternal(c, n)
	if err != nil {
		return fail(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(err)
	}
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// The cluster no longer knows the stream (a power loss can take the
		// meta layer's record of it): everything acked to it is lost.
		fr.Missing = true
		return fr
	}
	if err != nil {
		return fail(fmt.Errorf("stream %s: %w", stream, err))
	}
	fr.LastSeq = s.CachedInfo().State.LastSeq
	if s.CachedInfo().State.Msgs == 0 {
		return fr
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fail(err)
	}
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fail(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			id := m.Headers().Get(nats.MsgIdHdr)
			if prev, ok := fr.IDs[id]; ok && prev != md.Sequence.Stream {
				fr.Dups = append(fr.Dups, id)
			}
			fr.IDs[id] = md.Sequence.Stream
			fr.Order = append(fr.Order, IDSeq{id, md.Sequence.Stream})
			if md.Sequence.Stream >= fr.LastSeq {
				return fr
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fail(err)
		}
		if got == 0 {
			return fail(fmt.Errorf("stream %s: reading stopped before sequence %d", stream, fr.LastSeq))
		}
	}
}

// NodeAllowlist is one node's allowlist summary.
type NodeAllowlist struct {
	Node string `json:"node"`
	clusterinfo.AllowlistSummary
	Matches bool `json:"matches"`
}

// Allowlists is allowlists.json: every node's allowlist against the KV.
type Allowlists struct {
	AtMS int64 `json:"at_ms"`
	KV   struct {
		Users  int    `json:"users"`
		Active int    `json:"active"`
		Hash   string `json:"hash"`
	} `json:"kv"`
	Nodes []NodeAllowlist `json:"nodes"`
	// Snapshots: every node's digest at every poll (the convergence
	// checker's input).
	Snapshots   []validate.AllowlistSnapshot `json:"snapshots"`
	Converged   bool                         `json:"converged"`
	ConvergedMS int64                        `json:"converged_ms"` // -1: never within the wait
	Problems    []string                     `json:"problems,omitempty"`
}

// gatherAllowlists compares every node's allowlist (its status) with the
// users bucket until they match or wait passes.
func gatherAllowlists(ctx context.Context, e *env, wait time.Duration) Allowlists {
	start := time.Now()
	deadline := start.Add(wait)
	var a Allowlists
	var snaps []validate.AllowlistSnapshot
	for i := 0; ; i++ {
		a = Allowlists{AtMS: e.hist.MS(time.Now()), ConvergedMS: -1}
		n := e.nodes[i%len(e.nodes)]
		if err := a.sample(ctx, e, n); err != nil {
			a.Problems = append(a.Problems, err.Error())
		}
		for _, na := range a.Nodes {
			sn := validate.AllowlistSnapshot{Node: na.Node, AtMS: a.AtMS, Hash: na.Hash}
			if na.Hash == "" {
				sn.Error = "the node's status carries no allowlist summary"
			}
			snaps = append(snaps, sn)
		}
		a.Snapshots = snaps
		if a.Converged {
			a.ConvergedMS = time.Since(start).Milliseconds()
		}
		if a.Converged || time.Now().After(deadline) || ctx.Err() != nil {
			return a
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (a *Allowlists) sample(ctx context.Context, e *env, n chaos.Node) error {
	if e.cli {
		users, err := cliListUsers(ctx, e.c, n)
		if err != nil {
			return err
		}
		a.kv(users)
		sts, err := cliStatuses(ctx, e.c, n, len(e.nodes))
		if err != nil {
			return fmt.Errorf("node statuses via %s: %w", n.Name(), err)
		}
		a.compare(sts, len(e.nodes))
		return nil
	}
	nc, err := chaos.DialInternal(e.c, n)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	users, err := kv.NewUsers(js).ListUsers(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("list the users bucket via %s: %w", n.Name(), err)
	}
	a.kv(users)
	sctx, cancel := context.WithTimeout(ctx, clusterinfo.Deadline)
	sts, err := clusterinfo.CollectStatuses(sctx, nc, len(e.nodes))
	cancel()
	if err != nil && len(sts) == 0 {
		return fmt.Errorf("node statuses via %s: %w", n.Name(), err)
	}
	a.compare(sts, len(e.nodes))
	return nil
}

// kv sets the users bucket's side of the comparison.
func (a *Allowlists) kv(users []store.User) {
	status := map[string]string{}
	for _, u := range users {
		status[u.SignPub] = string(u.Status)
		if u.Status == store.StatusActive {
			a.KV.Active++
		}
	}
	a.KV.Users, a.KV.Hash = len(status), clusterinfo.AllowlistHash(status)
}

// compare sets every node's side from the statuses they reported.
func (a *Allowlists) compare(sts []clusterinfo.Status, size int) {
	ok := len(sts) == size
	for _, st := range sts {
		na := NodeAllowlist{Node: st.Node}
		if st.Allowlist != nil {
			na.AllowlistSummary = *st.Allowlist
			na.Matches = st.Allowlist.Hash == a.KV.Hash
		}
		ok = ok && na.Matches
		a.Nodes = append(a.Nodes, na)
	}
	slices.SortFunc(a.Nodes, func(x, y NodeAllowlist) int {
		if x.Node < y.Node {
			return -1
		}
		return 1
	})
	a.Converged = ok
}
