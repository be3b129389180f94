package fault

import (
	"context"

	"github.com/unibus/clusterkit/chaos"
)

// OneWay loses the packets Args.Nodes (side A) send to Args.Rest (side B,
// default every other node); B's packets to A arrive. Observed like a
// partition: a request from A never reaches B, and B's requests reach A
// but the answers are lost, so neither side hears the other. Healed: links
// restored, cluster recovered.
type OneWay struct{}

// Name implements Fault.
func (OneWay) Name() string { return "one-way" }

// Available implements Fault.
func (f OneWay) Available(c chaos.Cluster, _ Args) error {
	return linkAvailable(c, f.Name(), chaos.LinkOneWay)
}

// Inject implements Fault.
func (f OneWay) Inject(ctx context.Context, c chaos.Cluster, a Args) (Injection, error) {
	if a.Stream != "" || a.Latency != 0 || a.Mode != "" {
		return nil, badArgs(f.Name(), "takes Nodes (side A), Rest (side B), ClientPort, Lease")
	}
	sa, sb, err := sides(c, f.Name(), a)
	if err != nil {
		return nil, err
	}
	return cutLinks(ctx, c, sa, sb, chaos.LinkFault{Kind: chaos.LinkOneWay, ClientPort: a.ClientPort, Lease: a.lease()})
}
