package deploy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/runbook/sshx"
)

// SSH is how the tool reaches hosts.
type SSH struct {
	Options sshx.Options
}

// sshHost adapts an sshx client to Host.
type sshHost struct{ c *sshx.Client }

func (h sshHost) Sudo(ctx context.Context, cmd string) (string, int, error) {
	r, err := h.c.Sudo(ctx, cmd, nil)
	return strings.TrimSpace(r.Stdout + "\n" + r.Stderr), r.ExitCode, err
}

func (h sshHost) WriteFile(ctx context.Context, path string, data []byte, mode os.FileMode, owner string) (bool, error) {
	return h.c.WriteFile(ctx, path, data, mode, owner)
}

func (h sshHost) Close() error { return h.c.Close() }

// options are the ssh options for node n: its login user from nodes.env
// (sshx refuses when ssh_config names another).
func (s SSH) options(n NodeRow) sshx.Options {
	o := s.Options
	o.User = n.User
	return o
}

// Dialer dials a node by its ssh alias.
func (s SSH) Dialer() Dialer {
	return func(ctx context.Context, n NodeRow) (Host, error) {
		c, err := s.Client(ctx, n)
		if err != nil {
			return nil, err
		}
		return sshHost{c}, nil
	}
}

// Client dials one node.
func (s SSH) Client(ctx context.Context, n NodeRow) (*sshx.Client, error) {
	return sshx.Dial(ctx, n.Alias, s.options(n))
}

// CheckUsers resolves every node's alias (no network) and returns the first
// disagreement between a node's login user and ssh_config's User. Other
// resolution problems surface when the host is dialled.
func (s SSH) CheckUsers(t Topology) error {
	for _, n := range t.Nodes {
		if _, err := sshx.Resolve(n.Alias, s.options(n)); errors.Is(err, sshx.ErrUserConflict) {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

// Preflight connects to every node (host keys, login, sudo -n) before a
// command changes any; see sshx.Preflight. Every command that changes hosts
// calls it first and stops, having changed nothing, when it fails.
func (s SSH) Preflight(ctx context.Context, t Topology) error {
	hosts := make([]sshx.PreflightHost, len(t.Nodes))
	for i, n := range t.Nodes {
		hosts[i] = sshx.PreflightHost{Name: n.Name, Alias: n.Alias, Options: s.options(n)}
	}
	return sshx.Preflight(ctx, hosts)
}

// OnNode runs a command with sudo on node n and returns its output.
func (s SSH) OnNode(ctx context.Context, n NodeRow, cmd string) (sshx.Result, error) {
	c, err := s.Client(ctx, n)
	if err != nil {
		return sshx.Result{}, err
	}
	defer func() { _ = c.Close() }()
	return c.Sudo(ctx, cmd, nil)
}

// Parallel runs f on every node at once and prints prefixed results.
func Parallel(ctx context.Context, t Topology, out io.Writer, f func(ctx context.Context, n NodeRow) (string, error)) error {
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		fails []string
	)
	for _, n := range t.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, err := f(ctx, n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails = append(fails, n.Name)
				fmt.Fprintf(out, "[%s] FAILED: %v\n", n.Name, err)
				return
			}
			if msg != "" {
				fmt.Fprintf(out, "[%s] %s\n", n.Name, msg)
			}
		}()
	}
	wg.Wait()
	if len(fails) > 0 {
		return fmt.Errorf("failed on %s", strings.Join(fails, ", "))
	}
	return nil
}

// HealthzURL is node n's health endpoint as the controller reaches it.
func (t Topology) HealthzURL(n NodeRow) string {
	return "https://" + net.JoinHostPort(n.Address, strconv.Itoa(t.HTTPPort)) + "/healthz"
}

// ClientURL is node n's data-plane URL.
func (t Topology) ClientURL(n NodeRow) string {
	return "tls://" + net.JoinHostPort(n.Address, strconv.Itoa(t.ClientPort))
}

// Health is the part of /healthz the tool reads.
type Health struct {
	Status  string `json:"status"`
	Node    string `json:"node"`
	Reason  string `json:"reason"`
	Posture struct {
		BusAuth string `json:"bus_auth"`
		ACL     bool   `json:"acl"`
		TLS     bool   `json:"tls"`
		Cluster bool   `json:"cluster"`
		Store   string `json:"store"`
	} `json:"posture"`
	MetaLeader string `json:"meta_leader"`
}

// Healthz fetches a node's /healthz, verifying it against the client CA.
func Healthz(ctx context.Context, caFile, url string) (int, Health, error) {
	pool, err := pki.CertPoolFromFile(caFile)
	if err != nil {
		return 0, Health{}, err
	}
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, Health{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, Health{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	var h Health
	err = json.NewDecoder(resp.Body).Decode(&h)
	return resp.StatusCode, h, err
}

// WaitHealthy polls every node's /healthz until all are 200 or ctx ends.
func WaitHealthy(ctx context.Context, t Topology, caFile string, out io.Writer) error {
	last := map[string]string{}
	for {
		ok := 0
		for _, n := range t.Nodes {
			code, h, err := Healthz(ctx, caFile, t.HealthzURL(n))
			switch {
			case err != nil:
				last[n.Name] = err.Error()
			case code == 200:
				ok++
				last[n.Name] = "ok"
			default:
				last[n.Name] = fmt.Sprintf("%d %s", code, h.Reason)
			}
		}
		if ok == len(t.Nodes) {
			return nil
		}
		select {
		case <-ctx.Done():
			var parts []string
			for _, n := range t.Nodes {
				parts = append(parts, n.Name+": "+last[n.Name])
			}
			return fmt.Errorf("not every node healthy: %s", strings.Join(parts, "; "))
		case <-time.After(500 * time.Millisecond):
			fmt.Fprintf(out, "waiting for quorum: %d/%d healthy\n", ok, len(t.Nodes))
		}
	}
}

// Quote quotes one argument for a remote shell.
func Quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
