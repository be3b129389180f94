// Package admin is the client side of the operator commands that talk to a
// live node over NATS: cluster report, kv scale, user add/list/revoke and
// migrate-to-kv. On a node they use the internal service identity over
// loopback, the only identity with control-plane permissions.
package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// ErrNoQuorum: the node refused or could not commit because it is not in
// a quorum. Callers exit 1 and say so.
var ErrNoQuorum = errors.New("no quorum")

// ErrRefused: the node refused the connection for another reason (the
// identity or certificate is not accepted).
var ErrRefused = errors.New("connection refused by the node")

// Conn says how to reach a node's data plane.
type Conn struct {
	URL          string // tls://HOST:PORT (nats:// is accepted; TLS is used either way)
	CA           string
	Cert         string
	Key          string
	IdentityFile string // nkey seed file; "" connects without an identity
	HTTPPort     int    // the node's HTTPS port, to explain a refusal
	Timeout      time.Duration
	ClientID     string
}

// Dial connects with TLS, a client certificate and (if given) the nkey
// identity. It never falls back to plaintext and never skips verification.
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
	opts := []nats.Option{nats.Secure(tlsCfg), nats.Timeout(timeout), nats.Name(name), nats.NoReconnect()}
	if c.IdentityFile != "" {
		id, err := identity.LoadFile(c.IdentityFile)
		if err != nil {
			return nil, err
		}
		kp := id.KeyPair()
		opts = append(opts, nats.Nkey(id.NKey(), kp.Sign))
	}
	nc, err := nats.Connect("tls://"+u.Host, opts...)
	if errors.Is(err, nats.ErrAuthorization) {
		return nil, c.explainRefusal(u.Hostname(), err)
	}
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", c.URL, err)
	}
	return nc, nil
}

// explainRefusal asks the node's /healthz why it refused: a node out of
// quorum says so there.
func (c Conn) explainRefusal(host string, cause error) error {
	if err := c.quorumProblem(host); err != nil {
		return fmt.Errorf("%w: node refused the connection", err)
	}
	return fmt.Errorf("%w (%v): the identity or client certificate is not accepted (is it registered and active?)", ErrRefused, cause)
}

// QuorumProblem returns an error wrapping ErrNoQuorum when the node's
// /healthz says it is not in a quorum, nil otherwise (or when it cannot
// tell). Commands call it to explain a failed write.
func (c Conn) QuorumProblem() error {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil
	}
	return c.quorumProblem(u.Hostname())
}

func (c Conn) quorumProblem(host string) error {
	port := c.HTTPPort
	if port == 0 {
		port = 8470
	}
	pool, err := pki.CertPoolFromFile(c.CA)
	if err != nil {
		return nil
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Get("https://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/healthz")
	if err != nil {
		return nil
	}
	defer func() { _ = resp.Body.Close() }()
	var h struct {
		Node   string `json:"node"`
		Reason string `json:"reason"`
		Quorum struct {
			InQuorum bool `json:"in_quorum"`
		} `json:"quorum"`
	}
	if json.NewDecoder(resp.Body).Decode(&h) != nil || h.Quorum.InQuorum {
		return nil
	}
	return fmt.Errorf("%w: node %s says: %s", ErrNoQuorum, h.Node, h.Reason)
}

// IsLoopbackURL reports whether a NATS URL points at this host.
func IsLoopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
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
