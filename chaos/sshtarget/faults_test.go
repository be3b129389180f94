package sshtarget

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/runbook/deploy"
	"github.com/unibus/clusterkit/runbook/sshx"
)

// TestLinkRulesMatchOnlyClusterPorts: the rules name only the cluster's
// ports and the peers' addresses, in a chain of the fault's own.
func TestLinkRulesMatchOnlyClusterPorts(t *testing.T) {
	chain := chainName(newFaultID("one-way"))
	if len(chain) > 28 {
		t.Fatalf("chain %q longer than iptables allows", chain)
	}
	for _, kind := range []chaos.LinkKind{chaos.LinkDrop, chaos.LinkRST, chaos.LinkOneWay} {
		sh := linkRules(chain, kind, []string{"10.77.0.11", "10.77.0.12"}, []int{6250})
		for _, rule := range strings.Split(sh, " && ") {
			if !strings.Contains(rule, " -A ") {
				continue
			}
			if !strings.Contains(rule, "-p tcp") || !strings.Contains(rule, "port 6250") || !strings.Contains(rule, "10.77.0.1") {
				t.Errorf("%s: rule %q is not limited to a peer's route port", kind, rule)
			}
			if kind == chaos.LinkOneWay && strings.Contains(rule, " -s ") {
				t.Errorf("one-way: rule %q matches the peers' packets", rule)
			}
			if kind == chaos.LinkRST && !strings.Contains(rule, "tcp-reset") {
				t.Errorf("rst: rule %q does not reset", rule)
			}
		}
		if strings.Contains(sh, "-F INPUT") || strings.Contains(sh, "-P ") {
			t.Errorf("%s touches built-in chains beyond one jump: %s", kind, sh)
		}
	}
	// The shells parse.
	for _, sh := range []string{leaseCmd("x", 5*time.Second, undoChain(chain)), cancelLeaseCmd("x"), undoChain(chain)} {
		if out, err := exec.Command("sh", "-n", "-c", sh).CombinedOutput(); err != nil {
			t.Errorf("shell does not parse: %v %s\n%s", err, out, sh)
		}
	}
}

// TestLeaseHealsWithoutController proves the leases on the simulated hosts
// (or any hosts the operator allows): kill one node, pause another,
// partition the third (drop), then drop every SSH connection without
// healing. Each host undoes its fault by lease + 5 s, and the cluster is
// healthy again. It needs a deployed, running cluster:
//
//	UNIBUS_FAULT_NODES=out/vps/nodes.env UNIBUS_FAULT_CERTS=out/vps/certs \
//	UNIBUS_FAULT_SSH_CONFIG=/run/unibus-vpssim/ssh_config go test -run TestLeaseHeals ./chaos/sshtarget
//
// (one simulated cluster per machine: a second `vps-sim up` is refused).
func TestLeaseHealsWithoutController(t *testing.T) {
	nodes := os.Getenv("UNIBUS_FAULT_NODES")
	if nodes == "" {
		t.Skip("needs a deployed cluster: UNIBUS_FAULT_NODES, UNIBUS_FAULT_CERTS, UNIBUS_FAULT_SSH_CONFIG")
	}
	o := Options{NodesFile: nodes, CertsDir: os.Getenv("UNIBUS_FAULT_CERTS"),
		SSH: sshx.Options{ConfigFile: os.Getenv("UNIBUS_FAULT_SSH_CONFIG"), Agent: false}}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c1, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := chaos.NewHealthClient(c1.TLS().ClientCA)
	if err != nil {
		t.Fatal(err)
	}
	healthy := func(d time.Duration) {
		t.Helper()
		w, done := context.WithTimeout(ctx, d)
		defer done()
		if _, err := hc.WaitHealthy(w, c1.Nodes()...); err != nil {
			t.Fatal(err)
		}
	}
	healthy(60 * time.Second)
	if len(c1.nodes) < 3 {
		t.Fatalf("need 3 nodes, have %d", len(c1.nodes))
	}
	killed, paused, parted := c1.nodes[0], c1.nodes[1], c1.nodes[2]
	const lease = 10 * time.Second
	start := time.Now()
	if err := killed.Kill(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if err := paused.Pause(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.FaultLinks(ctx, []chaos.Node{parted}, []chaos.Node{killed, paused}, chaos.LinkFault{Kind: chaos.LinkDrop, Lease: lease}); err != nil {
		t.Fatal(err)
	}
	// The faults took effect, seen from outside and on the hosts.
	if p := hc.Get(ctx, killed.HealthzURL()); p.Err == nil {
		t.Fatalf("killed %s answers healthz: %s", killed.Name(), p)
	}
	if p := hc.Get(ctx, paused.HealthzURL()); p.Err == nil {
		t.Fatalf("paused %s answers healthz: %s", paused.Name(), p)
	}
	state := func(c *Cluster, n *Node) (active, stopped bool, chains string) {
		sn := c.Node(n.Name()).(*Node)
		r, err := sn.sudo(ctx, fmt.Sprintf(`systemctl is-active %[1]s; ps -o stat= -p "$(systemctl show -p MainPID --value %[1]s)" 2>/dev/null; echo; iptables -w -S | grep -c UNIBUS-F- || true`, deploy.UnitName))
		if err != nil {
			t.Fatalf("look at %s: %v", n.Name(), err)
		}
		lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
		return lines[0] == "active", strings.Contains(r.Stdout, "\nT"), strings.TrimSpace(lines[len(lines)-1])
	}
	if a, _, _ := state(c1, killed); a {
		t.Fatalf("killed %s's unit is active", killed.Name())
	}
	if _, s, _ := state(c1, paused); !s {
		t.Fatalf("paused %s's process is not stopped", paused.Name())
	}
	if _, _, ch := state(c1, parted); ch == "0" {
		t.Fatalf("no fault chain on %s", parted.Name())
	}

	// The controller disappears without healing.
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	c2, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	// Generous: the lease's own restart (systemctl start, then the unit
	// reporting active) took over 5 s on a loaded 2-core machine.
	deadline := start.Add(lease + 20*time.Second)
	for {
		ka, _, _ := state(c2, killed)
		_, ps, _ := state(c2, paused)
		_, _, ch := state(c2, parted)
		if ka && !ps && ch == "0" {
			t.Logf("every host healed itself %s after the inject (lease %s)", time.Since(start).Round(time.Millisecond), lease)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healed by lease + 20 s: killed active=%v, paused stopped=%v, partition rules=%s", ka, ps, ch)
		}
		time.Sleep(500 * time.Millisecond)
	}
	healthy(90 * time.Second)
	for _, n := range c2.Nodes() {
		if p := hc.Get(ctx, n.HealthzURL()); p.Code != http.StatusOK {
			t.Fatalf("%s: %s", n.Name(), p)
		}
	}
}
