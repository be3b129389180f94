package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/clusterinfo"
)

// ClusterReport runs `membershipd cluster report --json` on node n, as an
// operator on that node would, expecting every node of c to answer. A
// report with problems (a node that did not answer) exits 1 but is still a
// report: it is returned with its Problems, and err is nil.
func ClusterReport(ctx context.Context, c Cluster, n Node) (clusterinfo.Report, error) {
	var rep clusterinfo.Report
	r, err := c.CLI(ctx, n, "cluster", "report", "--json", "--nodes", strconv.Itoa(len(c.Nodes())))
	if err != nil {
		return rep, fmt.Errorf("cluster report on %s: %w", n.Name(), err)
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		return rep, fmt.Errorf("cluster report on %s: exit %d, no JSON report (%v): %s", n.Name(), r.ExitCode, err, strings.TrimSpace(r.Stderr))
	}
	return rep, nil
}

// Reachable lists the nodes that answer a status request sent through node
// n: n itself and every node n reaches over routes. A partition shows here
// first, from both sides, whatever its kind (a blackholed route stays
// "connected" until its pings time out; the requests across it fail at
// once). It asks with the node's internal identity where the controller has
// it (fast: one 2 s round), otherwise through the CLI on the node.
func Reachable(ctx context.Context, c Cluster, n Node) ([]clusterinfo.Status, error) {
	if _, ok := c.TLS().InternalID[n.Name()]; ok {
		nc, err := DialInternal(c, n)
		if err != nil {
			return nil, err
		}
		defer nc.Close()
		sctx, cancel := context.WithTimeout(ctx, clusterinfo.Deadline)
		defer cancel()
		return clusterinfo.CollectStatuses(sctx, nc, len(c.Nodes()))
	}
	rep, err := ClusterReport(ctx, c, n)
	return rep.Servers, err
}

// StreamLeader names the leader of a stream as node n sees it: "meta" for
// the meta group, a KV bucket by bucket or stream name ("UNIBUS_users" or
// "KV_UNIBUS_users") from the cluster report, any other stream (a room's)
// from JetStream stream info with the node's internal identity. An error
// when nobody leads it or the stream is unknown.
func StreamLeader(ctx context.Context, c Cluster, n Node, stream string) (string, error) {
	if stream != "meta" && !strings.HasPrefix(stream, "KV_") && !strings.HasPrefix(stream, "UNIBUS_") {
		return streamInfoLeader(ctx, c, n, stream)
	}
	rep, err := ClusterReport(ctx, c, n)
	if err != nil {
		return "", err
	}
	if stream == "meta" {
		if l := rep.MetaLeader(); l != "" {
			return l, nil
		}
		return "", fmt.Errorf("no meta leader in %s's report", n.Name())
	}
	for _, b := range rep.Buckets {
		if b.Bucket == stream || "KV_"+b.Bucket == stream {
			if b.Leader == "" {
				return "", fmt.Errorf("stream %s has no leader in %s's report", stream, n.Name())
			}
			return b.Leader, nil
		}
	}
	return "", fmt.Errorf("stream %q is not in %s's cluster report (meta or a control-plane bucket)", stream, n.Name())
}

func streamInfoLeader(ctx context.Context, c Cluster, n Node, stream string) (string, error) {
	nc, err := DialInternal(c, n)
	if err != nil {
		return "", fmt.Errorf("leader of %s: %w", stream, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", fmt.Errorf("leader of %s via %s: %w", stream, n.Name(), err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader (asked %s)", stream, n.Name())
	}
	return info.Cluster.Leader, nil
}
