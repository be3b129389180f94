// Package inproc is the in-process target: N membershipd nodes inside the
// test process on loopback, each with its own store dir and fixed ports, and
// every route passing through a netproxy so routes can be cut like a crash.
package inproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/netproxy"
	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/node"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// Options configures a cluster.
type Options struct {
	Size        int    // nodes; default 3
	KVReplicas  int    // default 3
	ClusterName string // default "unibus-test"
	// Dir holds certs and store dirs; required (specs pass a temp dir).
	Dir string
	// Binary is a built membershipd used by CLI; optional.
	Binary string
	// BootstrapBudget for every node; default 120 s.
	BootstrapBudget time.Duration
	Log             *slog.Logger
	// Sync is each node's JetStream fsync mode (node.Config.Sync); "" is
	// the daemon's default.
	Sync string
	// DirectRoutes connects the routes to each other as deployed, with no
	// proxy in between: no extra hop per raft message, so a benchmark
	// compares like with like. Such a cluster cannot cut routes.
	DirectRoutes bool
}

// Cluster is the in-process target.
type Cluster struct {
	opts   Options
	layout *pki.Layout
	mesh   *netproxy.Mesh
	nodes  []*Node
	log    *slog.Logger
}

// Node is one in-process node.
type Node struct {
	c   *Cluster
	cfg node.Config
	mu  sync.Mutex
	n   *node.Node
}

var _ chaos.Cluster = (*Cluster)(nil)
var _ chaos.Partitioner = (*Cluster)(nil)
var _ chaos.StoreInspector = (*Cluster)(nil)
var _ chaos.LinkFaulter = (*Cluster)(nil)

// New mints certificates, reserves ports and builds the route proxies.
// No node is started: specs decide the order (together, staggered, alone).
func New(o Options) (*Cluster, error) {
	if o.Size == 0 {
		o.Size = 3
	}
	if o.KVReplicas == 0 {
		o.KVReplicas = 3
	}
	if o.ClusterName == "" {
		o.ClusterName = "unibus-test"
	}
	if o.BootstrapBudget == 0 {
		o.BootstrapBudget = node.DefaultBootstrapBudget
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Dir == "" {
		return nil, errors.New("inproc: Options.Dir is required")
	}
	names, layout, err := chaos.MintLocal(o.Dir, o.Size)
	if err != nil {
		return nil, err
	}
	base, err := chaos.PortBlock(3*o.Size + o.Size*o.Size)
	if err != nil {
		return nil, err
	}
	routeAddrs := make([]string, o.Size)
	for i := range names {
		routeAddrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(base+3*i+1))
	}
	var mesh *netproxy.Mesh
	if !o.DirectRoutes {
		if mesh, err = netproxy.NewMesh(names, routeAddrs, base+3*o.Size, o.Log); err != nil {
			return nil, fmt.Errorf("route proxies: %w", err)
		}
	}
	c := &Cluster{opts: o, layout: layout, mesh: mesh, log: o.Log}
	for i, name := range names {
		nf := layout.Nodes[name]
		var routes []string
		advertise := ""
		if mesh != nil {
			routes, advertise = mesh.RouteURLsFor(i), mesh.AdvertiseFor(i)
		} else {
			for j, a := range routeAddrs {
				if j != i {
					routes = append(routes, "nats-route://"+a)
				}
			}
		}
		cfg := node.Config{
			Sync: o.Sync,
			Name: name, Cluster: o.ClusterName, Bind: "127.0.0.1",
			ClientPort: base + 3*i, RoutePort: base + 3*i + 1, HTTPPort: base + 3*i + 2,
			Routes:     routes,
			Advertise:  advertise,
			StoreDir:   filepath.Join(o.Dir, name, "jetstream"),
			ServerCert: nf.ServerCert, ServerKey: nf.ServerKey, ClientCA: layout.ClientCACert,
			RouteCert: nf.RouteCert, RouteKey: nf.RouteKey, RouteCA: layout.RouteCACert,
			RouteSecretFile: layout.RouteSecret,
			BusAuth:         authn.Enforce,
			InternalIDFile:  filepath.Join(o.Dir, name, "secrets", "internal.id"),
			Store:           node.StoreKV,
			KVReplicas:      o.KVReplicas,
			BootstrapBudget: o.BootstrapBudget,
			Log:             o.Log,
		}
		c.nodes = append(c.nodes, &Node{c: c, cfg: cfg})
	}
	return c, nil
}

// Target implements chaos.Cluster.
func (c *Cluster) Target() string { return "inproc" }

// Nodes implements chaos.Cluster.
func (c *Cluster) Nodes() []chaos.Node { return chaos.AsNodes(c.nodes) }

// Node implements chaos.Cluster.
func (c *Cluster) Node(name string) chaos.Node { return chaos.FindNode(c.nodes, name) }

// TLS implements chaos.Cluster.
func (c *Cluster) TLS() chaos.TLSFiles {
	return chaos.TLSFromLayout(c.layout, func(name string) string {
		return filepath.Join(c.opts.Dir, name, "secrets", "internal.id")
	})
}

// StartAll starts every node together.
func (c *Cluster) StartAll(ctx context.Context) error { return chaos.StartNodes(ctx, c.Nodes()...) }

// CLI runs the membershipd binary against node n's client port with the
// node's own certificate, as an operator on that node would.
func (c *Cluster) CLI(ctx context.Context, n chaos.Node, args ...string) (chaos.CLIResult, error) {
	if c.opts.Binary == "" {
		return chaos.CLIResult{}, errors.New("inproc: no membershipd binary configured")
	}
	in, ok := n.(*Node)
	if !ok {
		return chaos.CLIResult{}, fmt.Errorf("inproc: node %v is not from this cluster", n)
	}
	full := append([]string{}, args...)
	if chaos.TalksToNode(args) {
		// What the on-node defaults (loopback URL, /opt/unibus/tls/...)
		// resolve to on a real node.
		full = append(full, "--nats-url", in.ClientURL(), "--ca", c.layout.ClientCACert,
			"--cert", in.cfg.ServerCert, "--key", in.cfg.ServerKey,
			"--internal-id-file", in.cfg.InternalIDFile, "--http-port", strconv.Itoa(in.cfg.HTTPPort))
	}
	return RunBinary(ctx, c.opts.Binary, full...)
}

// RunBinary runs a command and captures its output and exit status.
func RunBinary(ctx context.Context, bin string, args ...string) (chaos.CLIResult, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := chaos.CLIResult{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.ExitCode = ee.ExitCode()
	default:
		return r, fmt.Errorf("run %s: %w", bin, err)
	}
	return r, nil
}

// Isolate implements chaos.Partitioner.
func (c *Cluster) Isolate(n chaos.Node, mode string) error {
	if c.mesh == nil {
		return errNoMesh
	}
	m, err := parseMode(mode)
	if err != nil {
		return err
	}
	for i, x := range c.nodes {
		if x == n {
			c.mesh.Isolate(i, m)
			return nil
		}
	}
	return fmt.Errorf("inproc: node %v is not from this cluster", n)
}

// CanFaultLinks implements chaos.LinkFaulter: the mesh does every kind.
func (c *Cluster) CanFaultLinks(kind chaos.LinkKind) error {
	if c.mesh == nil {
		return errNoMesh
	}
	return netproxy.CanFault(kind)
}

// errNoMesh: a cluster made with DirectRoutes has no proxies to fault.
var errNoMesh = errors.New("inproc: this cluster's routes are direct (Options.DirectRoutes), with no proxy to cut")

// FaultLinks implements chaos.LinkFaulter on the route proxies.
func (c *Cluster) FaultLinks(_ context.Context, a, b []chaos.Node, f chaos.LinkFault) (func(context.Context) error, error) {
	if c.mesh == nil {
		return nil, errNoMesh
	}
	idx := func(ns []chaos.Node) ([]int, error) {
		out := make([]int, 0, len(ns))
	next:
		for _, n := range ns {
			for i, x := range c.nodes {
				if chaos.Node(x) == n {
					out = append(out, i)
					continue next
				}
			}
			return nil, fmt.Errorf("inproc: node %v is not from this cluster", n)
		}
		return out, nil
	}
	ia, err := idx(a)
	if err != nil {
		return nil, err
	}
	ib, err := idx(b)
	if err != nil {
		return nil, err
	}
	return netproxy.FaultMesh(c.mesh, ia, ib, f)
}

// CanPartition implements chaos.Partitioner.
func (c *Cluster) CanPartition() bool { return c.mesh != nil }

// HealAll implements chaos.Partitioner.
func (c *Cluster) HealAll() error {
	if c.mesh != nil {
		c.mesh.HealAll()
	}
	return nil
}

func parseMode(s string) (netproxy.Mode, error) {
	switch s {
	case "cut":
		return netproxy.Cut, nil
	case "blackhole":
		return netproxy.Blackhole, nil
	}
	return 0, fmt.Errorf("unknown partition mode %q (want cut or blackhole)", s)
}

// Close stops every node and the proxies.
func (c *Cluster) Close() error {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); _ = n.Stop(context.Background()) }()
	}
	wg.Wait()
	if c.mesh == nil {
		return nil
	}
	return c.mesh.Close()
}

// StoreDir is where node n keeps its JetStream data.
func (n *Node) StoreDir() string { return n.cfg.StoreDir }

// StoreDir is node n's store dir, as on the process target: the specs
// read a copy of each replica's own messages from it (chaos/storehash).
func (c *Cluster) StoreDir(n chaos.Node) (string, error) {
	in, ok := c.Node(n.Name()).(*Node)
	if !ok {
		return "", fmt.Errorf("inproc: no node %s", n.Name())
	}
	return in.StoreDir(), nil
}

// Name implements chaos.Node.
func (n *Node) Name() string { return n.cfg.Name }

// ClientURL implements chaos.Node.
func (n *Node) ClientURL() string {
	return "tls://" + net.JoinHostPort(n.cfg.Bind, strconv.Itoa(n.cfg.ClientPort))
}

// HealthzURL implements chaos.Node.
func (n *Node) HealthzURL() string {
	return "https://" + net.JoinHostPort(n.cfg.Bind, strconv.Itoa(n.cfg.HTTPPort)) + "/healthz"
}

// RouteAddr is the node's real route listener (not the proxy).
func (n *Node) RouteAddr() string {
	return net.JoinHostPort(n.cfg.Bind, strconv.Itoa(n.cfg.RoutePort))
}

// Running implements chaos.Node.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.n == nil {
		return false
	}
	select {
	case <-n.n.Done():
		return false
	default:
		return true
	}
}

// Start implements chaos.Node: a fresh node.Node on the same dir and ports.
func (n *Node) Start(ctx context.Context) error { return n.startWith(ctx, n.cfg) }

func (n *Node) startWith(_ context.Context, cfg node.Config) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.n != nil {
		select {
		case <-n.n.Done():
		default:
			return fmt.Errorf("node %s is already running", cfg.Name)
		}
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return err
	}
	var (
		nn  *node.Node
		err error
	)
	// Right after a stop the OS may briefly hold a port; retry only that.
	for i := 0; i < 50; i++ {
		nn, err = node.New(cfg)
		if err == nil || !strings.Contains(err.Error(), "is not available") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	if err := nn.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	n.n = nn
	return nil
}

// Stop implements chaos.Node.
func (n *Node) Stop(_ context.Context) error {
	n.mu.Lock()
	nn := n.n
	n.mu.Unlock()
	if nn != nil {
		nn.Stop()
	}
	return nil
}

// StreamDirs implements chaos.StoreInspector: the stream directories under
// the node's JetStream store, whatever the account.
func (c *Cluster) StreamDirs(n chaos.Node) ([]string, error) {
	in, ok := n.(*Node)
	if !ok {
		return nil, fmt.Errorf("inproc: node %v is not from this cluster", n)
	}
	matches, err := filepath.Glob(filepath.Join(in.cfg.StoreDir, "jetstream", "*", "streams", "*"))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(matches))
	for _, m := range matches {
		out = append(out, filepath.Base(m))
	}
	return out, nil
}

// StartStandalone starts the node as the runbook's rollback does: without
// --store kv, standalone on the SQLite file db (no routes, no JetStream), on
// the same ports. A later Start brings it back as a cluster member.
func (n *Node) StartStandalone(ctx context.Context, db string) error {
	n.mu.Lock()
	cfg := n.cfg
	n.mu.Unlock()
	cfg.Store, cfg.DBPath, cfg.Routes, cfg.Advertise = node.StoreSQLite, db, nil, ""
	return n.startWith(ctx, cfg)
}

// Mesh exposes the route proxies (node i of Nodes() is mesh index i), for
// tests that cut a single link rather than isolate a node.
func (c *Cluster) Mesh() *netproxy.Mesh { return c.mesh }
