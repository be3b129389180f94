// Package deploy is the runbook's deploy machinery: the topology in
// nodes.env, the per-node cluster.env, the plan of files and commands for
// every host, and applying it over SSH.
package deploy

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// NodeRow is one node of nodes.env.
type NodeRow struct {
	Name    string // node name (NATS server name)
	Alias   string // ssh alias
	Address string // public address: routes, data plane and HTTPS
	// User is the ssh login user (root or a user with passwordless sudo).
	// It is the user the tool logs in as; "" ("-" in nodes.env) lets
	// ssh_config's User decide. A different User in ssh_config is refused.
	User string
}

// Topology is nodes.env.
type Topology struct {
	ClusterName  string
	RouteNetwork string
	ClientPort   int
	RoutePort    int
	HTTPPort     int
	KVReplicas   int
	Nodes        []NodeRow
}

var placeholderRE = regexp.MustCompile(`<[A-Z0-9_]+>`)

// ParseNodesEnv reads and validates nodes.env. A remaining <PLACEHOLDER>
// is an error naming every one, so no tool ever runs against a half-filled
// topology.
func ParseNodesEnv(path string) (Topology, error) {
	f, err := os.Open(path)
	if err != nil {
		return Topology{}, fmt.Errorf("nodes file: %w", err)
	}
	defer func() { _ = f.Close() }()
	vals := map[string]string{}
	var placeholders []string
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return Topology{}, fmt.Errorf("%s:%d: want KEY=VALUE, got %q", path, ln, line)
		}
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"'`)
		for _, p := range placeholderRE.FindAllString(v, -1) {
			placeholders = append(placeholders, fmt.Sprintf("%s (line %d, %s)", p, ln, k))
		}
		vals[k] = v
	}
	if err := sc.Err(); err != nil {
		return Topology{}, fmt.Errorf("read %s: %w", path, err)
	}
	if len(placeholders) > 0 {
		return Topology{}, fmt.Errorf("%s still has placeholders: %s — replace each with the real value before running any command",
			path, strings.Join(placeholders, ", "))
	}
	t := Topology{ClusterName: vals["CLUSTER_NAME"], RouteNetwork: vals["ROUTE_NETWORK"]}
	for _, p := range []struct {
		key string
		dst *int
		def int
	}{{"CLIENT_PORT", &t.ClientPort, 4250}, {"ROUTE_PORT", &t.RoutePort, 6250}, {"HTTP_PORT", &t.HTTPPort, 8470}, {"KV_REPLICAS", &t.KVReplicas, 3}} {
		*p.dst = p.def
		if s, ok := vals[p.key]; ok {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return Topology{}, fmt.Errorf("%s: %s=%q is not a positive number", path, p.key, s)
			}
			*p.dst = n
		}
	}
	if t.ClusterName == "" {
		return Topology{}, fmt.Errorf("%s: CLUSTER_NAME is required", path)
	}
	var keys []string
	for k := range vals {
		if strings.HasPrefix(k, "NODE_") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	seen := map[string]bool{}
	for _, k := range keys {
		f := strings.Fields(vals[k])
		if len(f) != 4 {
			return Topology{}, fmt.Errorf("%s: %s=%q: want \"<name> <ssh alias> <address> <login user>\"", path, k, vals[k])
		}
		row := NodeRow{Name: f[0], Alias: f[1], Address: f[2], User: f[3]}
		if row.User == "-" {
			row.User = "" // ssh_config's User decides
		}
		if net.ParseIP(row.Address) == nil {
			return Topology{}, fmt.Errorf("%s: %s: address %q is not an IP address", path, k, row.Address)
		}
		if seen[row.Name] {
			return Topology{}, fmt.Errorf("%s: node name %q appears twice", path, row.Name)
		}
		seen[row.Name] = true
		t.Nodes = append(t.Nodes, row)
	}
	if len(t.Nodes) == 0 {
		return Topology{}, fmt.Errorf("%s: no NODE_<i> rows", path)
	}
	if t.KVReplicas > len(t.Nodes) {
		return Topology{}, fmt.Errorf("%s: KV_REPLICAS=%d is more than the %d nodes", path, t.KVReplicas, len(t.Nodes))
	}
	return t, nil
}

// Node returns the row named name.
func (t Topology) Node(name string) (NodeRow, bool) {
	for _, n := range t.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeRow{}, false
}

// Remote paths on every node.
const (
	Root            = "/opt/unibus"
	BinaryPath      = Root + "/membershipd"
	EnvPath         = Root + "/cluster.env"
	UnitName        = "membershipd-cluster.service"
	UnitPath        = "/etc/systemd/system/" + UnitName
	InternalIDPath  = Root + "/secrets/internal.id"
	ServiceUser     = "unibus"
	RouteSecretPath = Root + "/secrets/cluster.pass"
)

// ClusterEnv is node's /opt/unibus/cluster.env: its name and the routes to
// the OTHER nodes. Listeners bind every address (routes and clients arrive
// on the public one, the on-node CLI on loopback).
func (t Topology) ClusterEnv(node NodeRow) string {
	var routes []string
	for _, n := range t.Nodes {
		if n.Name != node.Name {
			routes = append(routes, fmt.Sprintf("nats-route://%s", net.JoinHostPort(n.Address, strconv.Itoa(t.RoutePort))))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `runbook deploy`; do not edit on the node.\n")
	fmt.Fprintf(&b, "NODE_NAME=%s\nCLUSTER_NAME=%s\nBIND=0.0.0.0\n", node.Name, t.ClusterName)
	fmt.Fprintf(&b, "CLIENT_PORT=%d\nROUTE_PORT=%d\nHTTP_PORT=%d\n", t.ClientPort, t.RoutePort, t.HTTPPort)
	fmt.Fprintf(&b, "ROUTES=%s\n", strings.Join(routes, ","))
	fmt.Fprintf(&b, "INTERNAL_ID_FILE=%s\nKV_REPLICAS=%d\n", InternalIDPath, t.KVReplicas)
	return b.String()
}
