// Package process is the subprocess target: each node is a real
// membershipd process on loopback, so stop can be a real SIGTERM, kill a
// real SIGKILL and pause a real SIGSTOP (in-process Shutdown hides crash
// behaviour: raft leaders step down gracefully). Every route passes
// through the same netproxy mesh as in-process, and each node advertises
// its mesh sink, so gossip cannot bypass the proxies and partitions need no
// root. `make cluster` uses it to give operators a local cluster to poke at.
package process

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
	"syscall"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/diskfault"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/chaos/netproxy"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// Options configures a cluster.
type Options struct {
	Size        int    // default 3
	KVReplicas  int    // default 3
	ClusterName string // default "unibus-local"
	Dir         string // certs, store dirs and logs; required
	Binary      string // membershipd binary; required
	// BasePorts: node i uses ClientBase+i, RouteBase+i, HTTPBase+i. Zero
	// picks a free block outside the ephemeral range.
	ClientBase, RouteBase, HTTPBase int
	// ProxyBase: the route proxies of node i listen on ProxyBase+i*Size+j.
	// Zero picks a free block.
	ProxyBase int
	// Sync is passed to every node as `serve --sync` ("" keeps the
	// binary's default, always): "default" is the negative control that
	// loses acked writes on power loss.
	Sync string
	Log  *slog.Logger
	// PowerLossFS puts each node's store on its own chaos/diskfault mount
	// (that metadata model) so PowerLoss can drop unsynced writes; "" = a
	// plain directory. Needs FUSE (see PowerLossAvailable).
	PowerLossFS diskfault.MetadataMode
}

// Cluster is the process target.
type Cluster struct {
	opts   Options
	layout *pki.Layout
	mesh   *netproxy.Mesh
	nodes  []*Node
	power  *powerState // nil unless Options.PowerLossFS
}

// Node is one membershipd process.
type Node struct {
	c                               *Cluster
	name                            string
	clientPort, routePort, httpPort int
	args                            []string
	logPath                         string
	mu                              sync.Mutex
	cmd                             *exec.Cmd
	exited                          chan struct{}
	paused                          bool
}

var (
	_ chaos.Cluster        = (*Cluster)(nil)
	_ chaos.Partitioner    = (*Cluster)(nil)
	_ chaos.LinkFaulter    = (*Cluster)(nil)
	_ chaos.StoreInspector = (*Cluster)(nil)
	_ chaos.PowerCutter    = (*Cluster)(nil)
	_ chaos.Killer         = (*Node)(nil)
	_ chaos.Pauser         = (*Node)(nil)
)

// New mints certificates and lays out the nodes; nothing starts.
func New(o Options) (*Cluster, error) {
	if o.Size == 0 {
		o.Size = 3
	}
	if o.KVReplicas == 0 {
		o.KVReplicas = 3
	}
	if o.ClusterName == "" {
		o.ClusterName = "unibus-local"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Dir == "" || o.Binary == "" {
		return nil, errors.New("process: Options.Dir and Options.Binary are required")
	}
	if o.ClientBase == 0 || o.RouteBase == 0 || o.HTTPBase == 0 {
		base, err := chaos.PortBlock(3 * o.Size)
		if err != nil {
			return nil, err
		}
		o.ClientBase, o.RouteBase, o.HTTPBase = base, base+o.Size, base+2*o.Size
	}
	if o.ProxyBase == 0 {
		base, err := chaos.PortBlock(o.Size * o.Size)
		if err != nil {
			return nil, err
		}
		o.ProxyBase = base
	}
	names, layout, err := chaos.MintLocal(o.Dir, o.Size)
	if err != nil {
		return nil, err
	}
	routeAddrs := make([]string, o.Size)
	for i := range names {
		routeAddrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(o.RouteBase+i))
	}
	mesh, err := netproxy.NewMesh(names, routeAddrs, o.ProxyBase, o.Log)
	if err != nil {
		return nil, fmt.Errorf("route proxies: %w", err)
	}
	c := &Cluster{opts: o, layout: layout, mesh: mesh}
	for i, name := range names {
		nf := layout.Nodes[name]
		n := &Node{c: c, name: name, clientPort: o.ClientBase + i, routePort: o.RouteBase + i, httpPort: o.HTTPBase + i,
			logPath: filepath.Join(o.Dir, name+".log")}
		routes := mesh.RouteURLsFor(i)
		n.args = []string{"serve",
			"--node-name", name, "--cluster-name", o.ClusterName, "--bind", "127.0.0.1",
			"--client-port", strconv.Itoa(n.clientPort), "--route-port", strconv.Itoa(n.routePort),
			"--http-port", strconv.Itoa(n.httpPort), "--routes", strings.Join(routes, ","),
			"--cluster-advertise", mesh.AdvertiseFor(i),
			"--nats-store", filepath.Join(o.Dir, name, "jetstream"),
			"--tls-cert", nf.ServerCert, "--tls-key", nf.ServerKey, "--ca", layout.ClientCACert,
			"--route-cert", nf.RouteCert, "--route-key", nf.RouteKey, "--route-ca", layout.RouteCACert,
			"--route-secret-file", layout.RouteSecret, "--kv-replicas", strconv.Itoa(o.KVReplicas),
			"--internal-id-file", filepath.Join(o.Dir, name, "secrets", "internal.id"),
		}
		if o.Sync != "" {
			n.args = append(n.args, "--sync", o.Sync)
		}
		c.nodes = append(c.nodes, n)
	}
	if err := c.mountStores(); err != nil {
		return nil, err
	}
	return c, nil
}

// Target implements chaos.Cluster.
func (c *Cluster) Target() string { return "process" }

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

// CLI implements chaos.Cluster.
func (c *Cluster) CLI(ctx context.Context, n chaos.Node, args ...string) (chaos.CLIResult, error) {
	pn, ok := n.(*Node)
	if !ok {
		return chaos.CLIResult{}, fmt.Errorf("process: node %v is not from this cluster", n)
	}
	full := append([]string{}, args...)
	if chaos.TalksToNode(args) {
		nf := c.layout.Nodes[pn.name]
		full = append(full, "--nats-url", pn.ClientURL(), "--ca", c.layout.ClientCACert, "--cert", nf.ServerCert, "--key", nf.ServerKey,
			"--internal-id-file", filepath.Join(c.opts.Dir, pn.name, "secrets", "internal.id"), "--http-port", strconv.Itoa(pn.httpPort))
	}
	return inproc.RunBinary(ctx, c.opts.Binary, full...)
}

// Close stops every node (a paused one is thawed first), the proxies, and
// unmounts the stores.
func (c *Cluster) Close() error {
	err := chaos.StopNodes(context.Background(), c.Nodes()...)
	return errors.Join(err, c.mesh.Close(), c.unmountStores())
}

// Isolate implements chaos.Partitioner.
func (c *Cluster) Isolate(n chaos.Node, mode string) error {
	var m netproxy.Mode
	switch mode {
	case "cut":
		m = netproxy.Cut
	case "blackhole":
		m = netproxy.Blackhole
	default:
		return fmt.Errorf("unknown partition mode %q (want cut or blackhole)", mode)
	}
	i, err := c.index(n)
	if err != nil {
		return err
	}
	c.mesh.Isolate(i, m)
	return nil
}

// CanPartition implements chaos.Partitioner.
func (c *Cluster) CanPartition() bool { return true }

// HealAll implements chaos.Partitioner.
func (c *Cluster) HealAll() error { c.mesh.HealAll(); return nil }

// CanFaultLinks implements chaos.LinkFaulter: the mesh does every kind.
func (c *Cluster) CanFaultLinks(kind chaos.LinkKind) error { return netproxy.CanFault(kind) }

// FaultLinks implements chaos.LinkFaulter on the route proxies.
func (c *Cluster) FaultLinks(_ context.Context, a, b []chaos.Node, f chaos.LinkFault) (func(context.Context) error, error) {
	ia, err := c.indices(a)
	if err != nil {
		return nil, err
	}
	ib, err := c.indices(b)
	if err != nil {
		return nil, err
	}
	return netproxy.FaultMesh(c.mesh, ia, ib, f)
}

func (c *Cluster) index(n chaos.Node) (int, error) {
	for i, x := range c.nodes {
		if chaos.Node(x) == n {
			return i, nil
		}
	}
	return 0, fmt.Errorf("process: node %v is not from this cluster", n)
}

func (c *Cluster) indices(ns []chaos.Node) ([]int, error) {
	out := make([]int, len(ns))
	for k, n := range ns {
		i, err := c.index(n)
		if err != nil {
			return nil, err
		}
		out[k] = i
	}
	return out, nil
}

// StreamDirs implements chaos.StoreInspector.
func (c *Cluster) StreamDirs(n chaos.Node) ([]string, error) {
	i, err := c.index(n)
	if err != nil {
		return nil, err
	}
	matches, err := filepath.Glob(filepath.Join(c.opts.Dir, c.nodes[i].name, "jetstream", "jetstream", "*", "streams", "*"))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(matches))
	for _, m := range matches {
		out = append(out, filepath.Base(m))
	}
	return out, nil
}

// StoreDir is node n's --nats-store on this machine (a FUSE mount while the
// cluster is open, when Options.PowerLossFS is set): the nemesis reads each
// replica's own messages from it once the nodes are stopped.
func (c *Cluster) StoreDir(n chaos.Node) (string, error) {
	i, err := c.index(n)
	if err != nil {
		return "", err
	}
	return c.nodes[i].storeDir(), nil
}

// Name implements chaos.Node.
func (n *Node) Name() string { return n.name }

// ClientURL implements chaos.Node.
func (n *Node) ClientURL() string { return fmt.Sprintf("tls://127.0.0.1:%d", n.clientPort) }

// HealthzURL implements chaos.Node.
func (n *Node) HealthzURL() string { return fmt.Sprintf("https://127.0.0.1:%d/healthz", n.httpPort) }

// RouteAddr implements chaos.Node.
func (n *Node) RouteAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.routePort) }

// LogPath is where the node's stdout and stderr go.
func (n *Node) LogPath() string { return n.logPath }

// Running implements chaos.Node (a paused process is running).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runningLocked()
}

func (n *Node) runningLocked() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Start implements chaos.Node: spawn the process and wait until its HTTPS
// port listens (or it exits, with the end of its log as the error).
func (n *Node) Start(ctx context.Context) error {
	if n.Running() {
		return fmt.Errorf("node %s is already running", n.name)
	}
	lf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log %s: %w", n.logPath, err)
	}
	cmd := exec.Command(n.c.opts.Binary, n.args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		_ = lf.Close()
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = lf.Close(); close(exited) }()
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(n.httpPort))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("node %s exited at start: %s", n.name, tail(n.logPath))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("node %s: HTTPS port %s not listening after 30s: %s", n.name, addr, tail(n.logPath))
}

// Stop implements chaos.Node: SIGTERM, then SIGKILL after 30 s.
func (n *Node) Stop(_ context.Context) error { return n.signal(syscall.SIGTERM, 30*time.Second) }

// Kill implements chaos.Killer: SIGKILL, a crash with no raft step-down.
// The lease is moot here: the node stays down until Start, and the
// controller owns the process.
func (n *Node) Kill(context.Context, time.Duration) error {
	return n.signal(syscall.SIGKILL, 10*time.Second)
}

// Pause implements chaos.Pauser: SIGSTOP. The process keeps its sockets
// (the kernel still completes TCP handshakes) but answers nothing.
func (n *Node) Pause(context.Context, time.Duration) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return fmt.Errorf("pause %s: not running", n.name)
	}
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pause %s: %w", n.name, err)
	}
	n.paused = true
	return nil
}

// Resume implements chaos.Pauser: SIGCONT.
func (n *Node) Resume(context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return fmt.Errorf("resume %s: not running", n.name)
	}
	if err := n.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("resume %s: %w", n.name, err)
	}
	n.paused = false
	return nil
}

func (n *Node) signal(sig syscall.Signal, wait time.Duration) error {
	n.mu.Lock()
	cmd, exited, paused := n.cmd, n.exited, n.paused
	n.paused = false
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	_ = cmd.Process.Signal(sig)
	if paused {
		// A stopped process acts on SIGTERM only once it runs again.
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("node %s did not exit within %s of %s; killed", n.name, wait, sig)
	}
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}
