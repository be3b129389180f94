// Package chaos is the test-and-chaos framework: the cluster targets the
// specs run against (sub-packages inproc, process, ...), health probes and
// wait helpers. Faults, workloads, checkers and reports live in their own
// sub-packages.
package chaos

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/unibus/clusterkit/membershipd/pki"
)

// Node is one cluster member as a spec sees it: from outside.
type Node interface {
	Name() string
	// Start starts a stopped node on its existing data and ports.
	Start(ctx context.Context) error
	// Stop stops the node gracefully (raft leaders step down first).
	Stop(ctx context.Context) error
	// Running says whether the target believes the node is running.
	Running() bool
	// ClientURL is the TLS data-plane URL; HealthzURL the HTTPS health URL.
	ClientURL() string
	HealthzURL() string
	// RouteAddr is the node's own route listener (HOST:PORT), bypassing
	// any fault-injection proxy: specs present certificates to it.
	RouteAddr() string
}

// ClusterSpec is the shape of a cluster a spec asks a target for.
type ClusterSpec struct {
	Size       int // nodes; 0 means 3
	KVReplicas int // 0 means 3
	// Dir is where the target keeps certificates and node data.
	Dir string
	// Fresh: the spec is about start-up and needs nodes with no data,
	// stopped (in-process clusters always are; a deployed one is reset).
	Fresh bool
	// PowerLoss puts each node's store where a power loss can drop its
	// unsynced writes (the process target: a FUSE mount per node), so the
	// cluster is a PowerCutter. Targets that cannot ignore it; the
	// power-loss fault then says why it is unavailable.
	PowerLoss bool
	// Sync is the nodes' JetStream fsync mode (`serve --sync`: always,
	// default or a duration); "" is the daemon's default (always).
	Sync string
}

// PowerCutter is a cluster whose power can be cut: every node at one
// instant, every write it did not fsync lost, then restarted on what was
// durable.
type PowerCutter interface {
	// PowerLossAvailable is nil when PowerLoss can run, else why not.
	PowerLossAvailable() error
	// PowerLoss cuts the power of every node and brings them back.
	PowerLoss(ctx context.Context) error
}

// StoreInspector is implemented by targets that can list what JetStream
// has written to a node's disk.
type StoreInspector interface {
	// StreamDirs lists the stream directories in node n's JetStream store.
	StreamDirs(n Node) ([]string, error)
}

// TLSFiles are the files a client of the cluster needs.
type TLSFiles struct {
	ClientCA string // verifies data-plane and HTTPS server certs
	RouteCA  string // verifies route certs
	// The CA keys, for specs that mint rogue certificates. Only targets
	// whose controller minted the CAs (all of them, today) fill these.
	ClientCAKey, RouteCAKey string
	OperatorCert            string // a client certificate signed by the client CA
	OperatorKey             string
	// Node certificates, by node name; a CLI on a node uses its server cert.
	ServerCert, ServerKey, RouteCert, RouteKey map[string]string
	RouteSecretFile                            string
	// InternalID is each node's internal service identity file, where the
	// controller can read it (in-process and subprocess targets).
	InternalID map[string]string
}

// CLIResult is the outcome of running the membershipd CLI.
type CLIResult struct {
	Stdout, Stderr string
	ExitCode       int
}

// Cluster is a running (or startable) cluster of membershipd nodes.
type Cluster interface {
	// Target names the implementation ("inproc", "process", "ssh").
	Target() string
	Nodes() []Node
	Node(name string) Node
	TLS() TLSFiles
	// CLI runs `membershipd ARGS...` as an operator would on node n
	// (connection flags pointing at that node are added by the target).
	CLI(ctx context.Context, n Node, args ...string) (CLIResult, error)
	// Close stops every node and releases everything the target made.
	Close() error
}

// Partitioner is implemented by targets that can cut routes.
type Partitioner interface {
	// CanPartition is false where this particular cluster cannot (an ssh
	// target on real hosts: only the simulated hosts have a controllable
	// network).
	CanPartition() bool
	// Isolate cuts every route to and from n ("cut" resets connections,
	// "blackhole" silently drops them).
	Isolate(n Node, mode string) error
	// HealAll restores every route.
	HealAll() error
}

// Killer is a node whose process can crash: SIGKILL, no raft step-down,
// nothing flushed. The node stays down until Start; a node on a remote host
// starts by itself after lease if the controller never does (a fault must
// not outlive the controller that installed it).
type Killer interface {
	Kill(ctx context.Context, lease time.Duration) error
}

// Pauser is a node whose process can be frozen (SIGSTOP: a GC or VM stall)
// and thawed (SIGCONT). A node on a remote host thaws by itself after
// lease if the controller never resumes it.
type Pauser interface {
	Pause(ctx context.Context, lease time.Duration) error
	Resume(ctx context.Context) error
}

// LinkKind is a kind of link fault.
type LinkKind string

// The link faults. Each is named for what the packets see, never swapped
// for another: a target that cannot do one says so (LinkFaulter.CanFaultLinks).
const (
	// LinkRST resets every connection, live and new, like a REJECT rule
	// with tcp-reset or a crashed peer.
	LinkRST LinkKind = "rst"
	// LinkDrop silently loses every packet both ways (a blackhole).
	LinkDrop LinkKind = "drop"
	// LinkOneWay loses side A's packets to side B; B's reach A.
	LinkOneWay LinkKind = "one-way"
	// LinkLatency delays every packet both ways by LinkFault.Latency.
	LinkLatency LinkKind = "latency"
)

// LinkFault is what FaultLinks applies.
type LinkFault struct {
	Kind    LinkKind
	Latency time.Duration // LinkLatency only
	// ClientPort also faults the client (data-plane) port between the
	// sides, not only the route port. Targets whose nodes only talk over
	// routes ignore it.
	ClientPort bool
	// Lease: a fault installed on a remote host removes itself after Lease
	// even if the controller disappears. Local targets ignore it.
	Lease time.Duration
}

// LinkFaulter is a cluster that can fault the links between sets of its
// nodes (the cluster's own ports only, never other traffic).
type LinkFaulter interface {
	// CanFaultLinks is nil when this cluster can apply kind, else it says
	// why not.
	CanFaultLinks(kind LinkKind) error
	// FaultLinks applies f to every link between a node of a and a node of
	// b (for LinkOneWay: a's packets to b are lost). heal undoes exactly
	// this fault and nothing else.
	FaultLinks(ctx context.Context, a, b []Node, f LinkFault) (heal func(context.Context) error, err error)
}

// DefaultLease is how long a fault on a remote host lasts if the controller
// disappears without healing it.
const DefaultLease = 2 * time.Minute

// Majority is the quorum size for n nodes.
func Majority(n int) int { return n/2 + 1 }

// Poll is the interval wait helpers use.
const Poll = 100 * time.Millisecond

// StartNodes starts nodes concurrently, as the runbook's quorum-forming
// start does (never one node gated on another's health).
func StartNodes(ctx context.Context, nodes ...Node) error {
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() { errs <- n.Start(ctx) }()
	}
	var first error
	for range nodes {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// StopNodes stops nodes concurrently.
func StopNodes(ctx context.Context, nodes ...Node) error {
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() { errs <- n.Stop(ctx) }()
	}
	var first error
	for range nodes {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// TLSFromLayout fills TLSFiles from a pki layout; internalID gives a node's
// internal identity file, or "" where the controller cannot use it.
func TLSFromLayout(l *pki.Layout, internalID func(node string) string) TLSFiles {
	t := TLSFiles{
		ClientCA: l.ClientCACert, RouteCA: l.RouteCACert,
		ClientCAKey: l.ClientCAKey, RouteCAKey: l.RouteCAKey,
		OperatorCert: l.OperatorCert, OperatorKey: l.OperatorKey,
		ServerCert: map[string]string{}, ServerKey: map[string]string{},
		RouteCert: map[string]string{}, RouteKey: map[string]string{},
		RouteSecretFile: l.RouteSecret,
		InternalID:      map[string]string{},
	}
	for name, nf := range l.Nodes {
		t.ServerCert[name], t.ServerKey[name] = nf.ServerCert, nf.ServerKey
		t.RouteCert[name], t.RouteKey[name] = nf.RouteCert, nf.RouteKey
		if f := internalID(name); f != "" {
			t.InternalID[name] = f
		}
	}
	return t
}

// AsNodes converts a target's concrete node list.
func AsNodes[T Node](ns []T) []Node {
	out := make([]Node, len(ns))
	for i, n := range ns {
		out[i] = n
	}
	return out
}

// FindNode returns the node named name, or nil.
func FindNode[T Node](ns []T, name string) Node {
	for _, n := range ns {
		if n.Name() == name {
			return n
		}
	}
	return nil
}

// TalksToNode reports whether `membershipd ARGS...` connects to a live node,
// so a local target must add the connection flags a real node's defaults
// would supply (loopback URL, /opt/unibus/tls, the internal identity).
func TalksToNode(args []string) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0] {
	case "cluster", "kv", "user", "migrate-to-kv":
		return true
	}
	return false
}

// MintLocal names size loopback nodes n1..nN and mints their certificates
// under dir/tls: what every local target starts from.
func MintLocal(dir string, size int) ([]string, *pki.Layout, error) {
	names := make([]string, size)
	specs := make([]pki.NodeSpec, size)
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i+1)
		specs[i] = pki.NodeSpec{Name: names[i], Hosts: []string{"127.0.0.1"}}
	}
	layout, err := pki.MintCluster(filepath.Join(dir, "tls"), specs, false)
	if err != nil {
		return nil, nil, fmt.Errorf("mint certificates: %w", err)
	}
	return names, layout, nil
}
