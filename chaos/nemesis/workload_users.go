package nemesis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/history"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// usersWorkload runs concurrent add / revoke / get on a small pool of keys
// (so operations on one key overlap: what the linearizability checker
// needs), through the operator CLI (`membershipd user add|revoke`, a
// subprocess on the node) and through the KV library the CLI uses, on a
// random node each time. Without an internal connection (env.cli) every
// operation goes through the CLI: writes as above, gets as `user list`.
type usersWorkload struct {
	e       *env
	keys    []*identity.Identity
	workers int
	cliFrac float64 // share of writes sent through the CLI
}

// opTimeout bounds one users operation; past it the outcome is unknown.
const opTimeout = 5 * time.Second

func (w *usersWorkload) start(ctx context.Context, wg *sync.WaitGroup) {
	for k := range w.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := w.e.rng(300 + uint64(k))
			conns := map[string]*nats.Conn{}
			defer func() {
				for _, nc := range conns {
					nc.Close()
				}
			}()
			name := fmt.Sprintf("users-%d", k+1)
			for jitter(ctx, rng, 50*time.Millisecond, 200*time.Millisecond) {
				id := w.keys[rng.IntN(len(w.keys))]
				n := w.e.nodes[rng.IntN(len(w.e.nodes))]
				r := rng.Float64()
				viaCLI := rng.Float64() < w.cliFrac || w.e.cli
				var op history.Op
				t0 := time.Now()
				switch {
				case r < 0.35:
					op = w.write(ctx, conns, n, history.UserAdd, id.SignPub(), viaCLI)
				case r < 0.6:
					op = w.write(ctx, conns, n, history.UserRevoke, id.SignPub(), viaCLI)
				default:
					op = w.get(ctx, conns, n, id.SignPub(), w.e.cli)
				}
				if ctx.Err() != nil {
					return
				}
				op.Process, op.Node, op.Key = name, n.Name(), id.SignPub()
				w.e.record(op, t0, time.Now())
			}
		}()
	}
}

// users is a KV users store on node n's connection (dialled again when the
// last one broke).
func (w *usersWorkload) users(conns map[string]*nats.Conn, n chaos.Node) (*kv.Users, error) {
	nc := conns[n.Name()]
	if nc == nil || nc.IsClosed() || !nc.IsConnected() {
		if nc != nil {
			nc.Close()
		}
		var err error
		if nc, err = chaos.DialInternal(w.e.c, n); err != nil {
			delete(conns, n.Name())
			return nil, err
		}
		conns[n.Name()] = nc
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return kv.NewUsers(js), nil
}

func (w *usersWorkload) write(ctx context.Context, conns map[string]*nats.Conn, n chaos.Node, kind history.Kind, key string, viaCLI bool) history.Op {
	op := history.Op{Kind: kind}
	if viaCLI {
		op.Value = "cli"
		args := []string{"user", "revoke", key}
		if kind == history.UserAdd {
			args = []string{"user", "add", "--sign-pub", key, "--handle", churnHandle, "--role", "member"}
		}
		cctx, cancel := context.WithTimeout(ctx, 3*opTimeout)
		res, err := w.e.c.CLI(cctx, n, args...)
		cancel()
		switch {
		case err != nil:
			op.Outcome, op.Error = history.Unknown, errText(err)
		case res.ExitCode == 0:
			op.Outcome = history.OK
		default:
			op.Error = errText(errors.New(strings.TrimSpace(res.Stderr)))
			op.Outcome = cliOutcome(res)
		}
		return op
	}
	op.Value = "kv"
	u, err := w.users(conns, n)
	if err != nil {
		// Nothing was sent.
		op.Outcome, op.Error = history.Failed, errText(err)
		return op
	}
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if kind == history.UserAdd {
		_, err = u.AddUser(cctx, store.User{SignPub: key, Handle: churnHandle, Role: identity.RoleMember})
	} else {
		_, err = u.RevokeUser(cctx, key)
	}
	op.Outcome, op.Error = kvOutcome(err), errText(err)
	return op
}

// churnHandle is the handle of the users workload's keys: spec- so that
// `user list` hides them once revoked, like every spec user a live run
// leaves behind.
const churnHandle = "spec-nemesis"

// get reads a key's status through the KV (Value: active, revoked or ""
// for absent); viaCLI, as `user list` on the node (the CLI has no get; the
// list reads each key from the stream leader, as a get does).
func (w *usersWorkload) get(ctx context.Context, conns map[string]*nats.Conn, n chaos.Node, key string, viaCLI bool) history.Op {
	op := history.Op{Kind: history.UserGet}
	if viaCLI {
		cctx, cancel := context.WithTimeout(ctx, 3*opTimeout)
		users, err := cliListUsers(cctx, w.e.c, n)
		cancel()
		if err != nil {
			op.Outcome, op.Error = history.Failed, errText(err) // a failed read changes nothing
			return op
		}
		op.Outcome, op.Value = history.OK, userStatus(users, key)
		return op
	}
	u, err := w.users(conns, n)
	if err != nil {
		op.Outcome, op.Error = history.Failed, errText(err)
		return op
	}
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	got, err := u.GetUser(cctx, key)
	switch {
	case err == nil:
		op.Outcome, op.Value = history.OK, string(got.Status)
	case errors.Is(err, store.ErrNotFound):
		op.Outcome = history.OK // read: absent
	default:
		op.Outcome, op.Error = history.Failed, errText(err) // a failed read changes nothing
	}
	return op
}

// kvOutcome: definite refusals are failed; anything else that is not a
// success may have committed (the store retries internally, so even a
// final "no responders" may follow an attempt that timed out).
func kvOutcome(err error) history.Outcome {
	switch {
	case err == nil:
		return history.OK
	case errors.Is(err, store.ErrAlreadyRegistered), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		return history.Failed
	}
	return history.Unknown
}

// cliOutcome maps a failed CLI write: bad input and definite refusals are
// failed; "no quorum ... may or may not have committed" and anything else
// unknown.
func cliOutcome(res chaos.CLIResult) history.Outcome {
	if res.ExitCode == 2 || strings.Contains(res.Stderr, "already registered") || strings.Contains(res.Stderr, "no such user") {
		return history.Failed
	}
	return history.Unknown
}
