package fault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/unibus/clusterkit/chaos"
)

// Observers look at the cluster from outside only: TCP dials, /healthz,
// and the status every node answers over the cluster's own routes.

// poll calls check until it reports done or ctx ends; the error then
// carries check's last description of what it saw.
func poll(ctx context.Context, what string, check func(ctx context.Context) (bool, string)) error {
	last := ""
	for {
		done, seen := check(ctx)
		if done {
			return nil
		}
		last = seen
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: last seen: %s: %w", what, last, ctx.Err())
		case <-time.After(chaos.Poll):
		}
	}
}

func hostPort(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}

// refuses dials n's client port once: true when the connection is refused
// (nothing listens: the process is gone).
func refuses(ctx context.Context, n chaos.Node) (bool, string) {
	addr, err := hostPort(n.ClientURL())
	if err != nil {
		return false, err.Error()
	}
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		_ = c.Close()
		return false, n.Name() + " accepts connections on " + addr
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true, ""
	}
	return false, fmt.Sprintf("%s: %v (not a refusal)", n.Name(), err)
}

// waitRefused: every node's client port refuses connections.
func waitRefused(ctx context.Context, nodes ...chaos.Node) error {
	return poll(ctx, "port refuses", func(ctx context.Context) (bool, string) {
		for _, n := range nodes {
			if ok, seen := refuses(ctx, n); !ok {
				return false, seen
			}
		}
		return true, ""
	})
}

// waitSilent: every node's /healthz goes unanswered while its HTTPS port
// still accepts TCP: the process holds its sockets but runs nothing (a
// paused process, not a dead one).
func waitSilent(ctx context.Context, hc *chaos.HealthClient, nodes ...chaos.Node) error {
	return poll(ctx, "healthz stops answering", func(ctx context.Context) (bool, string) {
		for _, n := range nodes {
			p := hc.Get(ctx, n.HealthzURL())
			if p.Err == nil {
				return false, fmt.Sprintf("%s answered %s", n.Name(), p)
			}
			addr, err := hostPort(n.HealthzURL())
			if err != nil {
				return false, err.Error()
			}
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return false, fmt.Sprintf("%s: port %s does not accept (%v): gone, not paused", n.Name(), addr, err)
			}
			_ = c.Close()
		}
		return true, ""
	})
}

// reach names the nodes that answer a status request sent through n. A
// node that fails closed refuses even its internal identity; then its own
// /healthz says which peers answered its gate's pings lately.
func reach(ctx context.Context, c chaos.Cluster, n chaos.Node) ([]string, error) {
	// Without the internal identity (the ssh target) the cluster report
	// is the on-node CLI, which waits up to 15 s for the info of a bucket
	// whose only replica is cut off (R1): longer than an observer's whole
	// budget. The node's /healthz names the peers it reaches, from the
	// same pings, in milliseconds: ask it first there.
	_, direct := c.TLS().InternalID[n.Name()]
	if !direct {
		if got, err := reachHealthz(ctx, c, n); err == nil {
			return got, nil
		}
	}
	rctx, cancel := context.WithTimeout(ctx, reportBudget)
	st, err := chaos.Reachable(rctx, c, n)
	cancel()
	if err == nil {
		out := make([]string, 0, len(st))
		for _, s := range st {
			out = append(out, s.Node)
		}
		return out, nil
	}
	if !direct {
		return nil, err
	}
	got, herr := reachHealthz(ctx, c, n)
	if herr != nil {
		return nil, errors.Join(err, herr)
	}
	return got, nil
}

// reportBudget bounds one cluster-report ask, so a fallback and the next
// poll still fit in the observer's budget.
const reportBudget = 5 * time.Second

// reachHealthz: n itself and the peers its /healthz says it reaches.
func reachHealthz(ctx context.Context, c chaos.Cluster, n chaos.Node) ([]string, error) {
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		return nil, err
	}
	p := hc.Get(ctx, n.HealthzURL())
	if p.Err != nil || p.Health.Node != n.Name() {
		return nil, fmt.Errorf("healthz: %s", p)
	}
	return append([]string{n.Name()}, p.Health.Quorum.ReachablePeers...), nil
}

// waitSplit: no node of a reaches a node of b and no node of b reaches a
// node of a (nodes in skip, e.g. killed ones, are not asked).
func waitSplit(ctx context.Context, c chaos.Cluster, a, b []chaos.Node, skip ...string) error {
	what := fmt.Sprintf("split %v | %v", names(a), names(b))
	return poll(ctx, what, func(ctx context.Context) (bool, string) {
		for _, side := range [][2][]chaos.Node{{a, b}, {b, a}} {
			for _, n := range side[0] {
				if slices.Contains(skip, n.Name()) {
					continue
				}
				got, err := reach(ctx, c, n)
				if err != nil {
					return false, fmt.Sprintf("ask %s: %v", n.Name(), err)
				}
				for _, o := range side[1] {
					if slices.Contains(got, o.Name()) {
						return false, fmt.Sprintf("%s still reaches %s (answers: %v)", n.Name(), o.Name(), got)
					}
				}
			}
		}
		return true, ""
	})
}

// waitRecovered: every node of c is healthy and reaches every node.
func waitRecovered(ctx context.Context, c chaos.Cluster) error {
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		return err
	}
	if _, err := hc.WaitHealthy(ctx, c.Nodes()...); err != nil {
		return err
	}
	all := names(c.Nodes())
	return poll(ctx, "every node reaches every node", func(ctx context.Context) (bool, string) {
		for _, n := range c.Nodes() {
			got, err := reach(ctx, c, n)
			if err != nil {
				return false, fmt.Sprintf("ask %s: %v", n.Name(), err)
			}
			for _, want := range all {
				if !slices.Contains(got, want) {
					return false, fmt.Sprintf("%s reaches only %s", n.Name(), strings.Join(got, ","))
				}
			}
		}
		return true, ""
	})
}
