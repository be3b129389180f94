// Package fault is the catalogue of faults the specs inject: one file per
// fault, each registered in All. A fault names itself, says whether a
// cluster can take it (Available: a target that cannot do a fault says
// why, and the spec is skipped with that reason; a fault is never swapped
// for another), and injects with typed Args. An Injection carries the
// observers that prove, from outside the cluster, that the fault took
// effect and that it was healed.
//
// Specs go through a Runner: it guards the lifecycle (no double inject,
// recovery guaranteed through the caller's cleanup) and records every
// injection as Evidence.
//
// Adding a fault is one file with a type implementing Fault, plus one line
// in All.
package fault

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/unibus/clusterkit/chaos"
)

// Fault is one kind of fault.
type Fault interface {
	// Name is the fault's registry name ("kill", "partition", ...).
	Name() string
	// Available is nil when c can take this fault with these args, else an
	// error wrapping ErrUnavailable that says why not.
	Available(c chaos.Cluster, a Args) error
	// Inject starts the fault. It returns once the fault is installed, not
	// once it has taken effect: Injection.WaitInjected observes that.
	Inject(ctx context.Context, c chaos.Cluster, a Args) (Injection, error)
}

// Injection is one injected fault.
type Injection interface {
	// Nodes are the nodes the fault acts on, resolved (isolate-leader's
	// leader, a partition's side A).
	Nodes() []string
	// WaitInjected returns once the fault is visible from outside the
	// cluster (a killed node's port refuses, a paused node stops answering,
	// a partitioned node stops reaching the other side), or ctx ends. It
	// only looks, so it may be called again.
	WaitInjected(ctx context.Context) error
	// Heal undoes the fault (restart a killed node, SIGCONT, restore links).
	Heal(ctx context.Context) error
	// WaitHealed returns once every node is running, healthy and reaches
	// every other, or ctx ends. It only looks.
	WaitHealed(ctx context.Context) error
}

// Mode is a partition's kind.
type Mode string

// The partition kinds, named for what the packets see.
const (
	// RST resets every connection across the partition, live and new
	// (REJECT with tcp-reset; a crashed peer).
	RST Mode = "rst"
	// Drop silently loses every packet across it (a blackhole).
	Drop Mode = "drop"
)

func (m Mode) linkKind() (chaos.LinkKind, error) {
	switch m {
	case RST:
		return chaos.LinkRST, nil
	case Drop, "":
		return chaos.LinkDrop, nil
	}
	return "", fmt.Errorf("unknown partition mode %q (want rst or drop)", m)
}

// Args are a fault's typed arguments. Each fault documents the fields it
// reads and refuses the ones it cannot honour.
type Args struct {
	// Nodes are the victims: the node(s) killed, stopped, paused or
	// restarted, a partition's or one-way fault's side A. part-kill takes
	// two: the node to kill, then the node to partition.
	Nodes []string `json:"nodes,omitempty"`
	// Rest is side B of a partition, one-way or latency fault; empty means
	// every node not in Nodes.
	Rest []string `json:"rest,omitempty"`
	// Mode is the partition kind (partition, isolate-leader, part-kill);
	// default drop.
	Mode Mode `json:"mode,omitempty"`
	// Stream is isolate-leader's stream: "meta", a KV bucket
	// ("UNIBUS_users") or any stream name (a room's).
	Stream string `json:"stream,omitempty"`
	// Latency is the delay the latency fault adds each way.
	Latency time.Duration `json:"latency_ns,omitempty"`
	// ClientPort also cuts the client (data-plane) port between the sides
	// where the target's network can tell the ports apart (ssh).
	ClientPort bool `json:"client_port,omitempty"`
	// Lease: a fault installed on a remote host undoes itself after Lease
	// if the controller never heals it. Default chaos.DefaultLease.
	Lease time.Duration `json:"lease_ns,omitempty"`
}

func (a Args) lease() time.Duration {
	if a.Lease > 0 {
		return a.Lease
	}
	return chaos.DefaultLease
}

// Errors a Runner and the faults return; match with errors.Is.
var (
	// ErrUnavailable: this cluster cannot take this fault (skip, with the
	// error's text as the reason).
	ErrUnavailable = errors.New("fault unavailable")
	// ErrUnknown: no fault of that name.
	ErrUnknown = errors.New("unknown fault")
	// ErrBadArgs: the args do not fit the fault.
	ErrBadArgs = errors.New("bad fault args")
)

// All is the registry: every fault, one line each.
var All = []Fault{
	Stop{},
	Kill{},
	Pause{},
	Restart{},
	Partition{},
	OneWay{},
	IsolateLeader{},
	Latency{},
	PartKill{},
	PowerLoss{},
}

// Lookup finds a registered fault by name.
func Lookup(name string) (Fault, error) {
	for _, f := range All {
		if f.Name() == name {
			return f, nil
		}
	}
	names := make([]string, len(All))
	for i, f := range All {
		names[i] = f.Name()
	}
	return nil, fmt.Errorf("%w %q (known: %v)", ErrUnknown, name, names)
}

// unavailable wraps ErrUnavailable with the target and the reason.
func unavailable(c chaos.Cluster, fault, why string) error {
	return fmt.Errorf("%w: %s on target %s: %s", ErrUnavailable, fault, c.Target(), why)
}

func badArgs(fault, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrBadArgs, fault, fmt.Sprintf(format, args...))
}

// resolve maps names to the cluster's nodes.
func resolve(c chaos.Cluster, fault string, names []string) ([]chaos.Node, error) {
	out := make([]chaos.Node, 0, len(names))
	for _, name := range names {
		n := c.Node(name)
		if n == nil {
			return nil, badArgs(fault, "no node %q in this cluster", name)
		}
		out = append(out, n)
	}
	return out, nil
}

// sides resolves side A (a.Nodes) and side B (a.Rest, default every other
// node) and checks they are disjoint and non-empty.
func sides(c chaos.Cluster, fault string, a Args) (sideA, sideB []chaos.Node, err error) {
	if len(a.Nodes) == 0 {
		return nil, nil, badArgs(fault, "needs Nodes (side A)")
	}
	sideA, err = resolve(c, fault, a.Nodes)
	if err != nil {
		return nil, nil, err
	}
	if len(a.Rest) > 0 {
		if sideB, err = resolve(c, fault, a.Rest); err != nil {
			return nil, nil, err
		}
	} else {
		for _, n := range c.Nodes() {
			if !slices.Contains(a.Nodes, n.Name()) {
				sideB = append(sideB, n)
			}
		}
	}
	for _, x := range sideB {
		if slices.Contains(a.Nodes, x.Name()) {
			return nil, nil, badArgs(fault, "node %s is on both sides", x.Name())
		}
	}
	if len(sideB) == 0 {
		return nil, nil, badArgs(fault, "side B is empty")
	}
	return sideA, sideB, nil
}

func names(ns []chaos.Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name()
	}
	return out
}

// linkAvailable is Available for the link faults.
func linkAvailable(c chaos.Cluster, fault string, kind chaos.LinkKind) error {
	lf, ok := c.(chaos.LinkFaulter)
	if !ok {
		return unavailable(c, fault, "the target cannot fault links between nodes")
	}
	if err := lf.CanFaultLinks(kind); err != nil {
		return unavailable(c, fault, err.Error())
	}
	return nil
}

// injection is the Injection every fault returns: its observers and heal
// as functions.
type injection struct {
	nodes      []string
	waitInj    func(ctx context.Context) error
	heal       func(ctx context.Context) error
	waitHealed func(ctx context.Context) error
}

func (i *injection) Nodes() []string                        { return i.nodes }
func (i *injection) WaitInjected(ctx context.Context) error { return i.waitInj(ctx) }
func (i *injection) Heal(ctx context.Context) error         { return i.heal(ctx) }
func (i *injection) WaitHealed(ctx context.Context) error   { return i.waitHealed(ctx) }
