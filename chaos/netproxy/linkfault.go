package netproxy

import (
	"context"
	"fmt"

	"github.com/unibus/clusterkit/chaos"
)

// CanFault says whether a mesh can apply kind: every chaos.LinkKind maps to
// a proxy mode or delay.
func CanFault(kind chaos.LinkKind) error {
	switch kind {
	case chaos.LinkRST, chaos.LinkDrop, chaos.LinkOneWay, chaos.LinkLatency:
		return nil
	}
	return fmt.Errorf("netproxy: unknown link fault %q", kind)
}

// FaultMesh applies f between node groups a and b of m, for the local
// targets' chaos.LinkFaulter: rst is Cut, drop is Blackhole (both
// directions), one-way loses a's bytes to b (Mesh.OneWay), latency delays
// both directions. The returned heal restores exactly those links. The
// mesh carries routes only, so f.ClientPort has nothing more to fault
// (clients reach nodes directly), and f.Lease is moot (the proxies live in
// the controller).
func FaultMesh(m *Mesh, a, b []int, f chaos.LinkFault) (func(context.Context) error, error) {
	for _, i := range a {
		for _, j := range b {
			if i == j {
				return nil, fmt.Errorf("netproxy: node %s is on both sides of the %s fault", m.names[i], f.Kind)
			}
		}
	}
	switch f.Kind {
	case chaos.LinkRST:
		m.Partition(a, b, Cut)
	case chaos.LinkDrop:
		m.Partition(a, b, Blackhole)
	case chaos.LinkOneWay:
		m.OneWay(a, b)
	case chaos.LinkLatency:
		if f.Latency <= 0 {
			return nil, fmt.Errorf("netproxy: latency fault needs a positive latency, got %s", f.Latency)
		}
		m.SetLatency(a, b, f.Latency)
	default:
		return nil, CanFault(f.Kind)
	}
	return func(context.Context) error { m.Heal(a, b); return nil }, nil
}
