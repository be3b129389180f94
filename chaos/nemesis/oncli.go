package nemesis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/admin"
	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// A target that keeps its nodes' internal identities to itself (ssh: they
// are root-only files on the hosts, usable only over a node's loopback)
// gives the controller no internal connection. There the nemesis reaches
// what it needs through the operator CLI on a node, as an operator would:
// `user add|revoke|list`, `cluster replicas`, `cluster report`.

// internalReachable: the controller can dial node n as the node itself.
func internalReachable(c chaos.Cluster, n chaos.Node) bool {
	_, ok := c.TLS().InternalID[n.Name()]
	return ok
}

// cliTimeout bounds one CLI run on a node (SSH, sudo, the command's own
// 10-15 s deadlines).
const cliTimeout = 30 * time.Second

// runCLI runs the CLI on node n; a non-zero exit is an error carrying its
// stderr. The result is returned either way (a command may print JSON and
// still exit 1: cluster report with problems).
func runCLI(ctx context.Context, c chaos.Cluster, n chaos.Node, args ...string) (chaos.CLIResult, error) {
	cctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	res, err := c.CLI(cctx, n, args...)
	if err != nil {
		return res, fmt.Errorf("membershipd %s on %s: %w", strings.Join(args[:min(2, len(args))], " "), n.Name(), err)
	}
	if res.ExitCode != 0 {
		return res, fmt.Errorf("membershipd %s on %s: exit %d: %s", strings.Join(args[:min(2, len(args))], " "), n.Name(), res.ExitCode, strings.TrimSpace(res.Stderr))
	}
	return res, nil
}

// cliAddUser registers a member through the CLI on node n.
func cliAddUser(ctx context.Context, c chaos.Cluster, n chaos.Node, signPub, handle string) error {
	_, err := runCLI(ctx, c, n, "user", "add", "--store", "kv", "--sign-pub", signPub, "--handle", handle, "--role", "member")
	return err
}

// cliRevokeUser revokes a user through the CLI on node n.
func cliRevokeUser(ctx context.Context, c chaos.Cluster, n chaos.Node, signPub string) error {
	_, err := runCLI(ctx, c, n, "user", "revoke", "--store", "kv", signPub)
	return err
}

// cliListUsers lists every user, revoked spec-* ones included, through the
// CLI on node n (the list reads each key from the stream leader).
func cliListUsers(ctx context.Context, c chaos.Cluster, n chaos.Node) ([]store.User, error) {
	res, err := runCLI(ctx, c, n, "user", "list", "--store", "kv", "--json", "--all")
	if err != nil {
		return nil, err
	}
	return parseUsers(res.Stdout)
}

// parseUsers reads `user list --json`.
func parseUsers(stdout string) ([]store.User, error) {
	var users []store.User
	if err := json.Unmarshal([]byte(stdout), &users); err != nil {
		return nil, fmt.Errorf("user list --json: %w", err)
	}
	return users, nil
}

// cliStatuses asks every node for its status through `cluster report
// --json` on node n. The report exits 1 when it found problems (a node
// missing, a bucket unhealthy) and still prints every status it got.
func cliStatuses(ctx context.Context, c chaos.Cluster, n chaos.Node, size int) ([]clusterinfo.Status, error) {
	res, err := runCLI(ctx, c, n, "cluster", "report", "--json", "--nodes", fmt.Sprint(size))
	if res.Stdout == "" && err != nil {
		return nil, err
	}
	return parseReport(res.Stdout)
}

// parseReport reads `cluster report --json`: the servers' statuses.
func parseReport(stdout string) ([]clusterinfo.Status, error) {
	var r clusterinfo.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		return nil, fmt.Errorf("cluster report --json: %w", err)
	}
	if len(r.Servers) == 0 {
		return nil, errors.New("cluster report --json: no server answered")
	}
	return r.Servers, nil
}

// cliReplicas asks every server for its own copy of each stream through
// `cluster replicas --stream S --json` on node n.
func cliReplicas(ctx context.Context, c chaos.Cluster, n chaos.Node, streams []string, size int) ([]Replica, []string, error) {
	var out []Replica
	answered := map[string]bool{}
	var errs []error
	for _, s := range streams {
		res, err := runCLI(ctx, c, n, "cluster", "replicas", "--stream", s, "--json", "--nodes", fmt.Sprint(size))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rs, err := parseReplicas(s, res.Stdout)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range rs {
			answered[r.Node] = true
		}
		out = append(out, rs...)
	}
	names := make([]string, 0, len(answered))
	for k := range answered {
		names = append(names, k)
	}
	slices.Sort(names)
	return out, names, errors.Join(errs...)
}

// parseReplicas reads `cluster replicas --stream S --json`.
func parseReplicas(stream, stdout string) ([]Replica, error) {
	var rs []admin.Replica
	if err := json.Unmarshal([]byte(stdout), &rs); err != nil {
		return nil, fmt.Errorf("cluster replicas --stream %s --json: %w", stream, err)
	}
	out := make([]Replica, 0, len(rs))
	for _, r := range rs {
		out = append(out, Replica{Node: r.Node, Stream: stream, Msgs: r.Msgs, Bytes: r.Bytes, FirstSeq: r.FirstSeq, LastSeq: r.LastSeq})
	}
	return out, nil
}

// controlStreams are the control-plane buckets' streams the divergence
// checker compares when it must name the streams (the CLI asks per
// stream); the heartbeats stream moves every second and is left out.
func controlStreams() []string {
	var out []string
	for _, b := range kv.Buckets {
		if s := kv.StreamName(b.Name); s != movingStream {
			out = append(out, s)
		}
	}
	return out
}

// userStatus is a key's status in a user list ("" absent), as a get reads
// it.
func userStatus(users []store.User, key string) string {
	for _, u := range users {
		if u.SignPub == key {
			return string(u.Status)
		}
	}
	return ""
}

// revokeActive revokes, through the CLI, every key of keys that is active
// on the cluster: what a live run leaves behind of the users it added is
// revoked rows only (rows are never deleted; `user list` hides revoked
// spec-* ones). It works through the first node that lists the users,
// lists them again to confirm, and returns the keys still active (all of
// them when no node listed the users).
func revokeActive(ctx context.Context, c chaos.Cluster, keys []string) ([]string, error) {
	var errs []error
	for _, n := range c.Nodes() {
		users, err := cliListUsers(ctx, c, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, k := range activeOf(users, keys) {
			if err := cliRevokeUser(ctx, c, n, k); err != nil {
				errs = append(errs, err)
			}
		}
		if users, err = cliListUsers(ctx, c, n); err != nil {
			return keys, errors.Join(append(errs, fmt.Errorf("confirm the revokes: %w", err))...)
		}
		if left := activeOf(users, keys); len(left) > 0 {
			return left, errors.Join(append(errs, fmt.Errorf("%d still active after revoke", len(left)))...)
		}
		return nil, nil
	}
	return keys, errors.Join(errs...)
}

// activeOf: the keys of keys that users lists as active.
func activeOf(users []store.User, keys []string) []string {
	var out []string
	for _, k := range keys {
		if userStatus(users, k) == string(store.StatusActive) {
			out = append(out, k)
		}
	}
	return out
}
