package chaos

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/unibus/clusterkit/membershipd/node"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// HealthClient reads /healthz over HTTPS, verifying the server against the
// client CA (never skipping verification).
type HealthClient struct{ http *http.Client }

// NewHealthClient trusts only caFile.
func NewHealthClient(caFile string) (*HealthClient, error) {
	pool, err := pki.CertPoolFromFile(caFile)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true, // each probe is a fresh look at the node
	}
	return &HealthClient{http: &http.Client{Transport: tr, Timeout: 2 * time.Second}}, nil
}

// Probe is one /healthz observation.
type Probe struct {
	At     time.Time
	Code   int // 0 when the request failed
	Health node.Health
	Err    error
}

// OK is true for a 200 with status ok.
func (p Probe) OK() bool { return p.Code == http.StatusOK && p.Health.Status == "ok" }

func (p Probe) String() string {
	if p.Err != nil {
		return fmt.Sprintf("error: %v", p.Err)
	}
	if p.Health.Reason != "" {
		return fmt.Sprintf("%d %s (%s)", p.Code, p.Health.Status, p.Health.Reason)
	}
	return fmt.Sprintf("%d %s", p.Code, p.Health.Status)
}

// Get fetches url once.
func (c *HealthClient) Get(ctx context.Context, url string) Probe {
	p := Probe{At: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		p.Err = err
		return p
	}
	resp, err := c.http.Do(req)
	if err != nil {
		p.Err = err
		return p
	}
	defer func() { _ = resp.Body.Close() }()
	p.Code = resp.StatusCode
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		p.Err = err
		return p
	}
	if err := json.Unmarshal(b, &p.Health); err != nil {
		p.Err = fmt.Errorf("healthz body is not JSON: %w", err)
	}
	return p
}

// WaitHealthy polls until every node's /healthz is 200 or ctx ends, and
// returns the last probe of each node.
func (c *HealthClient) WaitHealthy(ctx context.Context, nodes ...Node) (map[string]Probe, error) {
	last := map[string]Probe{}
	for {
		all := true
		for _, n := range nodes {
			p := c.Get(ctx, n.HealthzURL())
			last[n.Name()] = p
			if !p.OK() {
				all = false
			}
		}
		if all {
			return last, nil
		}
		select {
		case <-ctx.Done():
			msg := ""
			for _, n := range nodes {
				msg += fmt.Sprintf(" %s=%s;", n.Name(), last[n.Name()])
			}
			return last, fmt.Errorf("nodes not healthy:%s %w", msg, ctx.Err())
		case <-time.After(Poll):
		}
	}
}
