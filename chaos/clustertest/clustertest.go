// Package clustertest starts a healthy cluster for a Go test or benchmark:
// the block every test that needs a running cluster otherwise repeats
// (new, start all, wait healthy, close on cleanup).
package clustertest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/chaos/process"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// QuorumTimeout bounds start-to-healthy (measured 0.2–5 s; margin for a
// loaded 2-core machine).
const QuorumTimeout = 90 * time.Second

// Inproc starts an in-process cluster with o (Dir defaults to a temp dir,
// Log to discard), waits until every node is healthy and closes it when
// tb ends. Any failure is fatal.
func Inproc(tb testing.TB, o inproc.Options) (*inproc.Cluster, *chaos.HealthClient) {
	tb.Helper()
	if o.Dir == "" {
		o.Dir = tb.TempDir()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c, err := inproc.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	return c, Healthy(tb, c)
}

// Process starts a cluster of membershipd processes with o (Binary
// required; Dir defaults to a temp dir, Log to discard), waits until every
// node is healthy and closes it when tb ends.
func Process(tb testing.TB, o process.Options) (*process.Cluster, *chaos.HealthClient) {
	tb.Helper()
	if o.Dir == "" {
		o.Dir = tb.TempDir()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c, err := process.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	return c, Healthy(tb, c)
}

// Healthy starts every node of c together, registers c.Close with
// tb.Cleanup, and waits until every node is healthy.
func Healthy(tb testing.TB, c chaos.Cluster) *chaos.HealthClient {
	tb.Helper()
	tb.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), QuorumTimeout)
	defer cancel()
	if err := chaos.StartNodes(ctx, c.Nodes()...); err != nil {
		tb.Fatal(err)
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
		tb.Fatal(err)
	}
	return hc
}

// AddUser registers a fresh member identity through the users KV with the
// first node's internal identity and waits until every node admits it (each
// node learns of it through its own watch, milliseconds after the commit).
func AddUser(ctx context.Context, tb testing.TB, c chaos.Cluster, handle string) *identity.Identity {
	tb.Helper()
	user, err := identity.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := chaos.DialInternal(c, c.Nodes()[0])
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := kv.NewUsers(js).AddUser(ctx, store.User{SignPub: user.SignPub(), Handle: handle, Role: identity.RoleMember}); err != nil {
		tb.Fatal(err)
	}
	for _, n := range c.Nodes() {
		for deadline := time.Now().Add(10 * time.Second); ; {
			unc, err := chaos.DialAs(c, n, user)
			if err == nil {
				unc.Close()
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("%s never admitted the user: %v", n.Name(), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return user
}
