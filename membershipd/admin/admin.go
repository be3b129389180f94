// Package admin is the client side of the operator commands that talk to a
// live cluster over NATS: cluster report and kv scale.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Conn says how to reach a node's data plane.
type Conn struct {
	URL      string // tls://HOST:PORT or nats://HOST:PORT (TLS is used either way)
	CA       string
	Cert     string
	Key      string
	Timeout  time.Duration
	ClientID string
}

// Dial connects with TLS and a client certificate. It never falls back to
// plaintext and never skips verification.
func (c Conn) Dial() (*nats.Conn, error) {
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--nats-url %q: want tls://HOST:PORT", c.URL)
	}
	tlsCfg, err := pki.ClientTLSConfig(c.CA, c.Cert, c.Key)
	if err != nil {
		return nil, err
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	name := c.ClientID
	if name == "" {
		name = "membershipd-cli"
	}
	nc, err := nats.Connect(c.URL, nats.Secure(tlsCfg), nats.Timeout(timeout), nats.Name(name),
		nats.NoReconnect())
	if errors.Is(err, nats.ErrAuthorization) {
		return nil, fmt.Errorf("connect %s: the node refused the connection (%w): it admits clients only while it is in a quorum", c.URL, err)
	}
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", c.URL, err)
	}
	return nc, nil
}

// ClusterReport asks every node for its status and every bucket for its
// replication state. want is the number of nodes expected to answer.
func ClusterReport(ctx context.Context, nc *nats.Conn, want int) (clusterinfo.Report, error) {
	var r clusterinfo.Report
	sctx, cancel := context.WithTimeout(ctx, clusterinfo.Deadline)
	servers, err := clusterinfo.CollectStatuses(sctx, nc, want)
	cancel()
	if err != nil {
		return r, err
	}
	r.Servers = servers
	if len(servers) < want {
		r.Problems = append(r.Problems, fmt.Sprintf("%d of %d nodes answered", len(servers), want))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return r, fmt.Errorf("jetstream: %w", err)
	}
	for _, b := range kv.Buckets {
		bctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := kv.Inspect(bctx, js, b.Name)
		cancel()
		if err != nil {
			r.Problems = append(r.Problems, err.Error())
			continue
		}
		r.Buckets = append(r.Buckets, st)
	}
	return r, nil
}

// Scale sets every bucket to replicas and waits until each has a leader and
// all followers current, or ctx ends.
func Scale(ctx context.Context, nc *nats.Conn, replicas int, log *slog.Logger) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := kv.Scale(ctx, js, replicas, log); err != nil {
		return err
	}
	for _, b := range kv.Buckets {
		for {
			st, err := kv.Inspect(ctx, js, b.Name)
			if err == nil && st.Replicas == replicas && st.Leader != "" && st.FollowersCurrent == replicas-1 && st.Followers == replicas-1 {
				break
			}
			select {
			case <-ctx.Done():
				if err != nil {
					return fmt.Errorf("wait for %s at R%d: %w", b.Name, replicas, err)
				}
				return fmt.Errorf("wait for %s at R%d: %w (now: %s)", b.Name, replicas, ctx.Err(), st)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}
