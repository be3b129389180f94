// Package process is the subprocess target: each node is a real
// membershipd process on loopback, so stop can be a real SIGTERM and kill a
// real SIGKILL (in-process Shutdown hides crash behaviour: raft leaders
// step down gracefully). `make cluster` uses it to give operators a local
// cluster to poke at.
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
	Log                             *slog.Logger
	// PowerLossFS puts each node's store on its own chaos/diskfault mount
	// (that metadata model) so PowerLoss can drop unsynced writes; "" = a
	// plain directory. Needs FUSE (see PowerLossAvailable).
	PowerLossFS diskfault.MetadataMode
}

// Cluster is the process target.
type Cluster struct {
	opts   Options
	layout *pki.Layout
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
}

var _ chaos.Cluster = (*Cluster)(nil)

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
	names, layout, err := chaos.MintLocal(o.Dir, o.Size)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: o, layout: layout}
	for i, name := range names {
		nf := layout.Nodes[name]
		n := &Node{c: c, name: name, clientPort: o.ClientBase + i, routePort: o.RouteBase + i, httpPort: o.HTTPBase + i,
			logPath: filepath.Join(o.Dir, name+".log")}
		var routes []string
		for j := range names {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.RouteBase+j))
			}
		}
		n.args = []string{"serve",
			"--node-name", name, "--cluster-name", o.ClusterName, "--bind", "127.0.0.1",
			"--client-port", strconv.Itoa(n.clientPort), "--route-port", strconv.Itoa(n.routePort),
			"--http-port", strconv.Itoa(n.httpPort), "--routes", strings.Join(routes, ","),
			"--nats-store", filepath.Join(o.Dir, name, "jetstream"),
			"--tls-cert", nf.ServerCert, "--tls-key", nf.ServerKey, "--ca", layout.ClientCACert,
			"--route-cert", nf.RouteCert, "--route-key", nf.RouteKey, "--route-ca", layout.RouteCACert,
			"--route-secret-file", layout.RouteSecret, "--kv-replicas", strconv.Itoa(o.KVReplicas),
			"--internal-id-file", filepath.Join(o.Dir, name, "secrets", "internal.id"),
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

// Close stops every node (and unmounts their stores).
func (c *Cluster) Close() error {
	err := chaos.StopNodes(context.Background(), c.Nodes()...)
	return errors.Join(err, c.unmountStores())
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

// Running implements chaos.Node.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
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

// Kill sends SIGKILL: a crash, with no raft step-down.
func (n *Node) Kill() error { return n.signal(syscall.SIGKILL, 10*time.Second) }

func (n *Node) signal(sig syscall.Signal, wait time.Duration) error {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
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
