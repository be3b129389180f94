package sshtarget

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/runbook/deploy"
)

// Faults on real hosts. Every fault acts only on the cluster's own unit
// and ports: signals go to the unit's processes (systemctl kill), and
// iptables rules match only the route port (and the client port when the
// fault says so) between the cluster's nodes, in a chain of the fault's
// own, so no other service on the host is touched.
//
// Every fault installed on a host carries a lease: a detached timer on the
// host that undoes it after the lease (removes the chain, sends SIGCONT,
// starts the unit) even if the controller vanishes mid-spec. The timer is
// a transient systemd timer where systemd runs the host (outside the SSH
// session, so a logind that kills user processes at logout cannot take it
// down), else a setsid'd shell. Healing cancels the lease and undoes the
// fault at once.

var (
	_ chaos.LinkFaulter = (*Cluster)(nil)
	_ chaos.Killer      = (*Node)(nil)
	_ chaos.Pauser      = (*Node)(nil)
)

// leaseDir holds the lease pid files of the setsid fallback.
const leaseDir = "/run/unibus-fault"

// leasePrefix names every fault's chain, timer unit and pid file.
const leasePrefix = "unibus-fault-"

func newFaultID(kind string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return leasePrefix + kind + "-" + hex.EncodeToString(b)
}

// leaseCmd returns the shell that arms a lease named id: after d, run undo
// as root on the host.
func leaseCmd(id string, d time.Duration, undo string) string {
	secs := int(d.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	// systemd-run only where systemd is PID 1 (sd_booted's test).
	return fmt.Sprintf(`if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then `+
		`systemd-run --quiet --unit=%[1]s --on-active=%[2]ds --timer-property=AccuracySec=1s /bin/sh -c %[3]s; `+
		`else mkdir -p %[4]s; setsid nohup /bin/sh -c %[5]s </dev/null >/dev/null 2>&1 & echo $! > %[4]s/%[1]s.pid; fi`,
		id, secs, deploy.Quote(undo), leaseDir, deploy.Quote(fmt.Sprintf("sleep %d; %s; rm -f %s/%s.pid", secs, undo, leaseDir, id)))
}

// cancelLeaseCmd disarms lease id (either kind); harmless if it fired.
func cancelLeaseCmd(id string) string {
	return fmt.Sprintf(`systemctl stop %[1]s.timer >/dev/null 2>&1; `+
		`if [ -f %[2]s/%[1]s.pid ]; then kill $(cat %[2]s/%[1]s.pid) 2>/dev/null; rm -f %[2]s/%[1]s.pid; fi; true`, id, leaseDir)
}

// run runs a root shell command on the node and turns a non-zero exit into
// an error naming what failed.
func (n *Node) run(ctx context.Context, what, cmd string) error {
	r, err := n.sudo(ctx, cmd)
	if err != nil {
		return fmt.Errorf("%s on %s: %w", what, n.row.Name, err)
	}
	if r.ExitCode != 0 {
		return fmt.Errorf("%s on %s: exit %d: %s", what, n.row.Name, r.ExitCode, strings.TrimSpace(r.Stderr+" "+r.Stdout))
	}
	return nil
}

// nodeLeases tracks a node's armed leases so Start/Resume can cancel them.
type nodeLeases struct {
	mu    sync.Mutex
	pause string // lease that sends SIGCONT
	kill  string // lease that starts the unit
}

var leases sync.Map // *Node → *nodeLeases

func (n *Node) leases() *nodeLeases {
	l, _ := leases.LoadOrStore(n, &nodeLeases{})
	return l.(*nodeLeases)
}

// Kill implements chaos.Killer: SIGKILL to the unit's processes, then stop
// the unit so its Restart= does not bring it back before the spec says so.
// A lease starts it after lease if the controller never does.
func (n *Node) Kill(ctx context.Context, lease time.Duration) error {
	id := newFaultID("kill")
	unit := deploy.UnitName
	cmd := fmt.Sprintf("systemctl kill --signal=SIGKILL %[1]s && systemctl stop %[1]s && %[2]s", unit, leaseCmd(id, lease, "systemctl start "+unit))
	if err := n.run(ctx, "kill", cmd); err != nil {
		return err
	}
	l := n.leases()
	l.mu.Lock()
	l.kill = id
	l.mu.Unlock()
	return nil
}

// Pause implements chaos.Pauser: SIGSTOP to the unit's processes, with a
// lease that sends SIGCONT.
func (n *Node) Pause(ctx context.Context, lease time.Duration) error {
	id := newFaultID("pause")
	unit := deploy.UnitName
	cmd := fmt.Sprintf("systemctl kill --signal=SIGSTOP %s && %s", unit, leaseCmd(id, lease, "systemctl kill --signal=SIGCONT "+unit))
	if err := n.run(ctx, "pause", cmd); err != nil {
		return err
	}
	l := n.leases()
	l.mu.Lock()
	l.pause = id
	l.mu.Unlock()
	return nil
}

// Resume implements chaos.Pauser: cancel the lease, SIGCONT.
func (n *Node) Resume(ctx context.Context) error {
	l := n.leases()
	l.mu.Lock()
	id := l.pause
	l.pause = ""
	l.mu.Unlock()
	cmd := "systemctl kill --signal=SIGCONT " + deploy.UnitName
	if id != "" {
		cmd = cancelLeaseCmd(id) + "; " + cmd
	}
	return n.run(ctx, "resume", cmd)
}

// cancelKillLease is called by Start: the controller restarts the node.
func (n *Node) cancelKillLease(ctx context.Context) {
	l := n.leases()
	l.mu.Lock()
	id := l.kill
	l.kill = ""
	l.mu.Unlock()
	if id != "" {
		_ = n.run(ctx, "cancel kill lease", cancelLeaseCmd(id))
	}
}

// CanFaultLinks implements chaos.LinkFaulter: rst, drop and one-way are
// iptables rules on the hosts; latency would need tc netem with per-port
// filters, which this target does not install.
func (c *Cluster) CanFaultLinks(kind chaos.LinkKind) error {
	switch kind {
	case chaos.LinkRST, chaos.LinkDrop, chaos.LinkOneWay:
	case chaos.LinkLatency:
		return errors.New("ssh target: latency needs tc netem on the hosts, which this target does not install")
	default:
		return fmt.Errorf("ssh target: unknown link fault %q", kind)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range c.nodes {
		if err := n.run(ctx, "look for iptables", "command -v iptables >/dev/null"); err != nil {
			return fmt.Errorf("ssh target: %s has no iptables: %w", n.row.Name, err)
		}
	}
	return nil
}

// FaultLinks implements chaos.LinkFaulter with iptables on the hosts of
// side a (enough: every packet between a and b passes a's INPUT or
// OUTPUT). Rules match only the route port (both TCP flows of a route:
// the one a dialled and the one b dialled) and, with f.ClientPort, the
// client port, and only between the two sides' addresses.
//
//   - rst: REJECT --reject-with tcp-reset both ways;
//   - drop: DROP both ways;
//   - one-way: DROP on a's OUTPUT only. b's packets arrive, but a's ACKs
//     for them are lost too, so b's streams to a stall once their window
//     fills: the real semantics of one-way loss (netproxy's one-way keeps
//     b's stream flowing; both end in dead routes).
func (c *Cluster) FaultLinks(ctx context.Context, a, b []chaos.Node, f chaos.LinkFault) (func(context.Context) error, error) {
	if err := c.CanFaultLinks(f.Kind); err != nil {
		return nil, err
	}
	sa, err := c.sshNodes(a)
	if err != nil {
		return nil, err
	}
	sb, err := c.sshNodes(b)
	if err != nil {
		return nil, err
	}
	lease := f.Lease
	if lease <= 0 {
		lease = chaos.DefaultLease
	}
	ports := []int{c.topo.RoutePort}
	if f.ClientPort {
		ports = append(ports, c.topo.ClientPort)
	}
	var peers []string
	for _, p := range sb {
		host, _, err := net.SplitHostPort(p.RouteAddr())
		if err != nil {
			return nil, err
		}
		peers = append(peers, host)
	}
	id := newFaultID(string(f.Kind))
	chain := chainName(id)
	install := linkRules(chain, f.Kind, peers, ports)
	undo := undoChain(chain)
	var done []*Node
	healAll := func(ctx context.Context) error {
		var errs []error
		for _, n := range done {
			errs = append(errs, n.run(ctx, "heal "+string(f.Kind), cancelLeaseCmd(id)+"; "+undo))
		}
		return errors.Join(errs...)
	}
	for _, n := range sa {
		for _, p := range sb {
			if p == n {
				return nil, errors.Join(fmt.Errorf("ssh target: node %s is on both sides", n.row.Name), healAll(ctx))
			}
		}
		done = append(done, n)
		// Arm the lease first: a controller that dies between the two
		// commands leaves no rule without a lease.
		if err := n.run(ctx, "fault links "+string(f.Kind), leaseCmd(id, lease, undo)+" && "+install); err != nil {
			return nil, errors.Join(err, healAll(ctx))
		}
	}
	return healAll, nil
}

// chainName fits iptables' 28-character chain names.
func chainName(id string) string {
	s := strings.ToUpper(strings.TrimPrefix(id, leasePrefix))
	return "UNIBUS-F-" + s[max(0, len(s)-19):]
}

// linkRules is the shell that creates chain with the fault's rules and
// hooks it first in INPUT and OUTPUT.
func linkRules(chain string, kind chaos.LinkKind, peers []string, ports []int) string {
	target := "DROP"
	if kind == chaos.LinkRST {
		target = "REJECT --reject-with tcp-reset"
	}
	var cmds []string
	ipt := func(args string) { cmds = append(cmds, "iptables -w "+args) }
	ipt("-N " + chain)
	for _, peer := range peers {
		for _, port := range ports {
			p := strconv.Itoa(port)
			for _, dir := range []string{"--dport", "--sport"} {
				if kind != chaos.LinkOneWay {
					ipt(fmt.Sprintf("-A %s -p tcp -s %s %s %s -j %s", chain, peer, dir, p, target))
				}
				ipt(fmt.Sprintf("-A %s -p tcp -d %s %s %s -j %s", chain, peer, dir, p, target))
			}
		}
	}
	ipt("-I INPUT 1 -j " + chain)
	ipt("-I OUTPUT 1 -j " + chain)
	return strings.Join(cmds, " && ")
}

// undoChain removes chain wherever it is hooked; safe to run twice.
func undoChain(chain string) string {
	return fmt.Sprintf("while iptables -w -D INPUT -j %[1]s 2>/dev/null; do :; done; "+
		"while iptables -w -D OUTPUT -j %[1]s 2>/dev/null; do :; done; "+
		"iptables -w -F %[1]s 2>/dev/null; iptables -w -X %[1]s 2>/dev/null; true", chain)
}

func (c *Cluster) sshNodes(ns []chaos.Node) ([]*Node, error) {
	out := make([]*Node, len(ns))
	for i, n := range ns {
		sn, ok := n.(*Node)
		if !ok || sn.c != c {
			return nil, fmt.Errorf("ssh target: node %v is not from this cluster", n)
		}
		out[i] = sn
	}
	return out, nil
}
