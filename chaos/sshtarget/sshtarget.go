// Package sshtarget is the ssh target: each node is a host reached over SSH
// (the production VPS, or the repo's simulated hosts), running the real
// systemd unit the runbook deploys. Nodes start and stop through the unit,
// /healthz and the data plane are reached over the network, and the CLI
// runs on the node with sudo, as the operator runs it.
package sshtarget

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/runbook/deploy"
	"github.com/unibus/clusterkit/runbook/sshx"
	"github.com/unibus/clusterkit/runbook/vpssim"
)

// Options configures the target.
type Options struct {
	NodesFile string // nodes.env
	CertsDir  string // `runbook certs` output: the controller's CAs and operator certificate
	SSH       sshx.Options
	// AllowWipe lets Reset delete every node's JetStream data. Only the
	// simulated hosts ever set it.
	AllowWipe bool
	// SimDir is the simulated hosts' state dir; with it the target can
	// partition nodes (iptables inside the hosts' namespaces).
	SimDir string
	Log    *slog.Logger
}

// Cluster is a deployed cluster reached over SSH.
type Cluster struct {
	o     Options
	topo  deploy.Topology
	ssh   deploy.SSH
	nodes []*Node
}

// Node is one host.
type Node struct {
	c   *Cluster
	row deploy.NodeRow
	mu  sync.Mutex
	cl  *sshx.Client
}

var (
	_ chaos.Cluster        = (*Cluster)(nil)
	_ chaos.StoreInspector = (*Cluster)(nil)
	_ chaos.Partitioner    = (*Cluster)(nil)
)

// CanPartition implements chaos.Partitioner: only on simulated hosts.
func (c *Cluster) CanPartition() bool { return c.o.SimDir != "" }

// Isolate implements chaos.Partitioner on simulated hosts: every packet
// between n and the other nodes is dropped (both directions, INPUT and
// OUTPUT); the controller still reaches n. There is no RST variant, so
// "cut" and "blackhole" both drop.
func (c *Cluster) Isolate(n chaos.Node, mode string) error {
	if mode != "cut" && mode != "blackhole" {
		return fmt.Errorf("unknown partition mode %q (want cut or blackhole)", mode)
	}
	sim, err := c.sim()
	if err != nil {
		return err
	}
	return sim.Partition(n.Name(), nil)
}

// HealAll implements chaos.Partitioner.
func (c *Cluster) HealAll() error {
	sim, err := c.sim()
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, sim.Heal(n.row.Name))
	}
	return errors.Join(errs...)
}

func (c *Cluster) sim() (*vpssim.Sim, error) {
	if c.o.SimDir == "" {
		return nil, errors.New("ssh target: partitions need the simulated hosts (--sim-dir)")
	}
	return vpssim.Load(c.o.SimDir)
}

// New reads the topology; it connects lazily.
func New(o Options) (*Cluster, error) {
	t, err := deploy.ParseNodesEnv(o.NodesFile)
	if err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	c := &Cluster{o: o, topo: t, ssh: deploy.SSH{Options: o.SSH}}
	for _, r := range t.Nodes {
		c.nodes = append(c.nodes, &Node{c: c, row: r})
	}
	return c, nil
}

// Target implements chaos.Cluster.
func (c *Cluster) Target() string { return "ssh" }

// Nodes implements chaos.Cluster.
func (c *Cluster) Nodes() []chaos.Node { return chaos.AsNodes(c.nodes) }

// Node implements chaos.Cluster.
func (c *Cluster) Node(name string) chaos.Node { return chaos.FindNode(c.nodes, name) }

// Topology is the parsed nodes.env.
func (c *Cluster) Topology() deploy.Topology { return c.topo }

// TLS implements chaos.Cluster from the controller's certificates. The
// internal identities stay on the nodes (root-only, and usable only over a
// node's loopback anyway).
func (c *Cluster) TLS() chaos.TLSFiles {
	names := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		names[i] = n.row.Name
	}
	return chaos.TLSFromLayout(pki.LayoutFor(c.o.CertsDir, names), func(string) string { return "" })
}

// client returns the node's SSH connection, dialling on first use.
func (n *Node) client(ctx context.Context) (*sshx.Client, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cl != nil {
		return n.cl, nil
	}
	cl, err := n.c.ssh.Client(ctx, n.row)
	if err != nil {
		return nil, err
	}
	n.cl = cl
	return cl, nil
}

// sudo runs cmd on the node with sudo, redialling once if the connection
// went away (a host reboot in the simulation).
func (n *Node) sudo(ctx context.Context, cmd string) (sshx.Result, error) {
	for attempt := 0; ; attempt++ {
		cl, err := n.client(ctx)
		if err != nil {
			return sshx.Result{}, err
		}
		r, err := cl.Sudo(ctx, cmd, nil)
		if err == nil || attempt > 0 || ctx.Err() != nil {
			return r, err
		}
		n.mu.Lock()
		_ = n.cl.Close()
		n.cl = nil
		n.mu.Unlock()
	}
}

// CLI implements chaos.Cluster: membershipd on the node, with sudo, with
// the on-node defaults (loopback, internal identity, /opt/unibus/tls).
func (c *Cluster) CLI(ctx context.Context, n chaos.Node, args ...string) (chaos.CLIResult, error) {
	sn, ok := n.(*Node)
	if !ok {
		return chaos.CLIResult{}, fmt.Errorf("ssh target: node %v is not from this cluster", n)
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = deploy.Quote(a)
	}
	r, err := sn.sudo(ctx, deploy.BinaryPath+" "+strings.Join(q, " "))
	if err != nil {
		return chaos.CLIResult{}, err
	}
	return chaos.CLIResult{Stdout: r.Stdout, Stderr: r.Stderr, ExitCode: r.ExitCode}, nil
}

// Close closes the SSH connections; the cluster keeps running.
func (c *Cluster) Close() error {
	for _, n := range c.nodes {
		n.mu.Lock()
		if n.cl != nil {
			_ = n.cl.Close()
			n.cl = nil
		}
		n.mu.Unlock()
	}
	return nil
}

// Reset stops every node and deletes its JetStream data (never the
// certificates, secrets or identities): a fresh cluster for the specs that
// are about start-up. Refused unless AllowWipe.
func (c *Cluster) Reset(ctx context.Context) error {
	if !c.o.AllowWipe {
		return errors.New("ssh target: resetting deletes every node's data; only allowed with --allow-wipe (the simulated hosts)")
	}
	if err := chaos.StopNodes(ctx, c.Nodes()...); err != nil {
		return err
	}
	for _, n := range c.nodes {
		r, err := n.sudo(ctx, "rm -rf /opt/unibus/local_files/jetstream")
		if err != nil {
			return err
		}
		if r.ExitCode != 0 {
			return fmt.Errorf("wipe %s: %s", n.row.Name, r.Stderr)
		}
	}
	return nil
}

// StreamDirs implements chaos.StoreInspector over SSH.
func (c *Cluster) StreamDirs(n chaos.Node) ([]string, error) {
	sn, ok := n.(*Node)
	if !ok {
		return nil, fmt.Errorf("ssh target: node %v is not from this cluster", n)
	}
	r, err := sn.sudo(context.Background(), "ls -1 /opt/unibus/local_files/jetstream/*/streams/ 2>/dev/null || true")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasSuffix(l, ":") {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Name implements chaos.Node.
func (n *Node) Name() string { return n.row.Name }

// Row is the node's nodes.env row.
func (n *Node) Row() deploy.NodeRow { return n.row }

// ClientURL implements chaos.Node.
func (n *Node) ClientURL() string { return n.c.topo.ClientURL(n.row) }

// HealthzURL implements chaos.Node.
func (n *Node) HealthzURL() string { return n.c.topo.HealthzURL(n.row) }

// RouteAddr implements chaos.Node.
func (n *Node) RouteAddr() string {
	return net.JoinHostPort(n.row.Address, strconv.Itoa(n.c.topo.RoutePort))
}

// Start implements chaos.Node through the systemd unit (cancelling the
// lease of a kill fault: the controller is starting it now).
func (n *Node) Start(ctx context.Context) error {
	n.cancelKillLease(ctx)
	return n.systemctl(ctx, "start")
}

// Stop implements chaos.Node through the systemd unit (SIGTERM: graceful).
func (n *Node) Stop(ctx context.Context) error { return n.systemctl(ctx, "stop") }

func (n *Node) systemctl(ctx context.Context, verb string) error {
	r, err := n.sudo(ctx, "systemctl "+verb+" "+deploy.UnitName)
	if err != nil {
		return fmt.Errorf("%s %s: %w", verb, n.row.Name, err)
	}
	if r.ExitCode != 0 {
		return fmt.Errorf("%s %s: exit %d: %s", verb, n.row.Name, r.ExitCode, strings.TrimSpace(r.Stderr))
	}
	return nil
}

// Running implements chaos.Node: the unit is active.
func (n *Node) Running() bool {
	r, err := n.sudo(context.Background(), "systemctl is-active "+deploy.UnitName)
	return err == nil && strings.TrimSpace(r.Stdout) == "active"
}

// Sudo runs a shell command on the node with sudo (specs inspect hosts
// with it: file modes, unit state).
func (n *Node) Sudo(ctx context.Context, cmd string) (chaos.CLIResult, error) {
	r, err := n.sudo(ctx, cmd)
	return chaos.CLIResult{Stdout: r.Stdout, Stderr: r.Stderr, ExitCode: r.ExitCode}, err
}

// SetEnv sets KEY=VALUE in every node's cluster.env (it takes effect on
// the next start). Used with Reset for specs that need a cluster created
// with other settings (buckets at R1); refused unless AllowWipe.
func (c *Cluster) SetEnv(ctx context.Context, key, value string) error {
	if !c.o.AllowWipe {
		return errors.New("ssh target: changing cluster.env is only allowed with --allow-wipe (the simulated hosts)")
	}
	line := key + "=" + value
	for _, n := range c.nodes {
		cmd := fmt.Sprintf("sed -i 's/^%s=.*/%s/' %s && grep -qx %s %s", key, line, deploy.EnvPath, deploy.Quote(line), deploy.EnvPath)
		r, err := n.sudo(ctx, cmd)
		if err != nil {
			return err
		}
		if r.ExitCode != 0 {
			return fmt.Errorf("set %s on %s: exit %d: %s", key, n.row.Name, r.ExitCode, r.Stderr)
		}
	}
	return nil
}
