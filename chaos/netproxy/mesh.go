package netproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"
)

// Mesh is a full set of directed route proxies for N nodes plus one Sink per
// node. Node i dials its peers only through P(i→j).
//
// Faults are always applied to both directions of a link: a NATS route is a
// single TCP connection that either side may have dialled (both sides dial
// each other and one connection wins), so a one-way rule on P(i→j) alone
// would leave the route alive whenever j's dial via P(j→i) won.
type Mesh struct {
	names []string
	links [][]*Proxy // links[i][j] = P(i→j); nil on the diagonal
	sinks []*Sink
}

// NewMesh creates N*(N-1) directed proxies on 127.0.0.1, P(i→j) forwarding
// to routeAddrs[j]. If basePort > 0, P(i→j) listens on basePort+i*N+j so a
// restarted node keeps the same route URLs, and node i's sink takes the
// otherwise unused diagonal slot basePort+i*N+i so its advertise address is
// stable too. If basePort is 0 all ports are ephemeral.
func NewMesh(names []string, routeAddrs []string, basePort int, log *slog.Logger) (*Mesh, error) {
	n := len(names)
	if n == 0 || len(routeAddrs) != n {
		return nil, fmt.Errorf("netproxy mesh: need one route address per node, got %d names and %d addrs", n, len(routeAddrs))
	}
	if basePort < 0 || (basePort > 0 && basePort+n*n-1 > 65535) {
		return nil, fmt.Errorf("netproxy mesh: base port %d out of range for %d nodes", basePort, n)
	}
	addr := func(i, j int) string {
		if basePort == 0 {
			return "127.0.0.1:0"
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(basePort+i*n+j))
	}

	m := &Mesh{names: append([]string(nil), names...), links: make([][]*Proxy, n), sinks: make([]*Sink, n)}
	for i := range n {
		m.links[i] = make([]*Proxy, n)
		s, err := NewSink(addr(i, i))
		if err != nil {
			_ = m.Close()
			return nil, err
		}
		m.sinks[i] = s
		for j := range n {
			if j == i {
				continue
			}
			p, err := New(names[i]+"->"+names[j], addr(i, j), routeAddrs[j], log)
			if err != nil {
				_ = m.Close()
				return nil, err
			}
			m.links[i][j] = p
		}
	}
	return m, nil
}

// N returns the number of nodes.
func (m *Mesh) N() int { return len(m.names) }

// Link returns the directed proxy P(i→j) (nil if i == j), e.g. for Stats or
// a deliberately one-way fault.
func (m *Mesh) Link(i, j int) *Proxy { return m.links[i][j] }

// RouteURLsFor returns node i's cluster route URLs: one per peer j != i,
// pointing at P(i→j).
func (m *Mesh) RouteURLsFor(i int) []string {
	urls := make([]string, 0, len(m.names)-1)
	for j, p := range m.links[i] {
		if j != i {
			urls = append(urls, "nats-route://"+p.Addr())
		}
	}
	return urls
}

// AdvertiseFor returns the sink host:port to use as node i's Cluster.Advertise.
func (m *Mesh) AdvertiseFor(i int) string { return m.sinks[i].Addr() }

// Isolate sets mode on every link touching node i, both directions.
func (m *Mesh) Isolate(i int, mode Mode) {
	for j := range m.names {
		if j != i {
			m.setLink(i, j, mode)
		}
	}
}

// Partition sets mode on both directions of every link between groupA and
// groupB. Links within a group are untouched.
func (m *Mesh) Partition(groupA, groupB []int, mode Mode) {
	for _, a := range groupA {
		for _, b := range groupB {
			if a != b {
				m.setLink(a, b, mode)
			}
		}
	}
}

// OneWay loses every byte node a sends to node b, for every a in from and b
// in to, on both TCP flows between them (a dials b through P(a→b) and b
// dials a through P(b→a)): a one-way rule on only one flow would leave a
// route alive whenever the other flow's dial won. b's bytes to a still
// flow.
func (m *Mesh) OneWay(from, to []int) {
	for _, a := range from {
		for _, b := range to {
			if a != b {
				m.links[a][b].SetMode(DropToTarget)
				m.links[b][a].SetMode(DropToClient)
			}
		}
	}
}

// SetLatency adds d to both directions of every link between groupA and
// groupB (0 removes it).
func (m *Mesh) SetLatency(groupA, groupB []int, d time.Duration) {
	for _, a := range groupA {
		for _, b := range groupB {
			if a != b {
				m.links[a][b].SetLatency(d)
				m.links[b][a].SetLatency(d)
			}
		}
	}
}

// Heal restores every link between groupA and groupB, both directions:
// mode Pass and no latency. Other links are untouched.
func (m *Mesh) Heal(groupA, groupB []int) {
	for _, a := range groupA {
		for _, b := range groupB {
			if a != b {
				m.setLink(a, b, Pass)
				m.links[a][b].SetLatency(0)
				m.links[b][a].SetLatency(0)
			}
		}
	}
}

// HealAll sets every proxy back to Pass with no latency.
func (m *Mesh) HealAll() {
	for i := range m.links {
		for j, p := range m.links[i] {
			if j != i {
				p.SetMode(Pass)
				p.SetLatency(0)
			}
		}
	}
}

// Close closes every proxy and sink. Safe on a partially built mesh.
func (m *Mesh) Close() error {
	var errs []error
	for i := range m.links {
		for _, p := range m.links[i] {
			if p != nil {
				errs = append(errs, p.Close())
			}
		}
	}
	for _, s := range m.sinks {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

// setLink applies mode to P(i→j) and P(j→i).
func (m *Mesh) setLink(i, j int, mode Mode) {
	m.links[i][j].SetMode(mode)
	m.links[j][i].SetMode(mode)
}
