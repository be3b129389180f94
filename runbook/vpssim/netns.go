package vpssim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// partitionChain is the iptables chain, inside a host's namespace, that
// Partition fills and Heal flushes. It is jumped to from INPUT and OUTPUT.
const partitionChain = "UNIBUS-PARTITION"

// accessChain holds, in a jump-only host's namespace, the rules that let
// SSH in only from its jump host. Partition and Heal never touch it.
const accessChain = "UNIBUS-SSH-ACCESS"

// iptables runs iptables inside host's network namespace.
func iptables(host string, args ...string) error {
	return run(context.Background(), "nsenter", append([]string{"--net=/run/netns/" + netnsName(host), "iptables", "-w"}, args...)...)
}

// restrictSSH makes every jump-only host refuse SSH from anywhere but its
// jump host (TCP reset, as a firewall that rejects would), the controller
// included. Only the sshd port is filtered: the cluster's ports and
// /healthz stay reachable from the controller and the other hosts.
func (s *Sim) restrictSSH() error {
	for _, h := range s.Hosts {
		if h.JumpVia == "" {
			continue
		}
		via, err := s.mustHost(h.JumpVia)
		if err != nil {
			return err
		}
		port := strconv.Itoa(h.Port())
		for _, rule := range [][]string{
			{"-N", accessChain},
			{"-A", accessChain, "-p", "tcp", "--dport", port, "-s", via.IP, "-j", "ACCEPT"},
			{"-A", accessChain, "-p", "tcp", "--dport", port, "-j", "REJECT", "--reject-with", "tcp-reset"},
			{"-A", "INPUT", "-j", accessChain},
		} {
			if err := iptables(h.Name, rule...); err != nil {
				return fmt.Errorf("%w (SSH only via %s for %s)", err, via.Name, h.Name)
			}
		}
	}
	return nil
}

// sshPorts lists the sim's sshd ports, each once.
func (s *Sim) sshPorts() []string {
	var ports []string
	for _, h := range s.Hosts {
		if p := strconv.Itoa(h.Port()); !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports
}

// checkLeftovers refuses to build over the remains of another sim: the
// bridge, namespace names and subnet are machine-wide.
func checkLeftovers(prevOwner string) error {
	var found []string
	if _, err := net.InterfaceByName(Bridge); err == nil {
		found = append(found, "bridge "+Bridge)
	}
	if m, _ := filepath.Glob("/run/netns/" + netnsPrefix + "*"); len(m) > 0 {
		found = append(found, "network namespaces "+strings.Join(m, " "))
	}
	_, subnet, _ := net.ParseCIDR(Subnet)
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && subnet.Contains(ipn.IP) {
				found = append(found, "address "+ipn.String()+" already in use")
			}
		}
	}
	if len(found) == 0 {
		return nil
	}
	if prevOwner == "" {
		prevOwner = DefaultDir
	}
	return fmt.Errorf("vpssim: leftovers of a previous sim (%s); run `go run ./runbook vps-sim down --dir %s` first", strings.Join(found, "; "), prevOwner)
}

// setupNetwork creates the bridge and, per host, a namespace with a veth
// pair: eth0 inside (the host's IP, no default route), unibv-<name> on the
// bridge. IPv6 is off in the namespaces so that link-local addresses cannot
// bypass an (IPv4) partition.
func setupNetwork(hosts []Host) error {
	ctx := context.Background()
	if err := run(ctx, "ip", "link", "add", Bridge, "type", "bridge"); err != nil {
		return err
	}
	// The machine's iptables (br_netfilter) must not see bridged frames.
	_ = run(ctx, "ip", "link", "set", Bridge, "type", "bridge", "nf_call_iptables", "0")
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+Bridge+"/disable_ipv6", []byte("1"), 0o644)
	steps := [][]string{
		{"ip", "addr", "add", Controller + "/24", "dev", Bridge},
		{"ip", "link", "set", Bridge, "up"},
	}
	for _, h := range hosts {
		ns, veth := netnsName(h.Name), vethName(h.Name)
		steps = append(steps,
			[]string{"ip", "netns", "add", ns},
			[]string{"nsenter", "--net=/run/netns/" + ns, "/bin/sh", "-c",
				"echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6"},
			[]string{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "link", "set", veth, "master", Bridge, "up"},
			[]string{"ip", "-n", ns, "addr", "add", h.IP + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, st := range steps {
		if err := run(ctx, st[0], st[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// teardown kills the hosts and removes namespaces, veths, bridge and state
// files. hosts may be nil (no sim.json): the names then come from
// Dir/hosts and, when no other sim holds the machine, from /run/netns.
// duringUp says the caller (a failed Up) holds the machine lock itself.
func teardown(ctx context.Context, dir string, hosts []Host, duringUp bool) error {
	nss := map[string]bool{}
	for _, h := range hosts {
		nss[netnsName(h.Name)] = true
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "hosts")); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				nss[netnsName(e.Name())] = true
			}
		}
	}
	ours := duringUp
	owner := ""
	if b, err := os.ReadFile(lockPath); err == nil {
		owner = strings.TrimSpace(string(b))
	}
	if !ours {
		if lock, err := os.OpenFile(lockPath, os.O_RDWR, 0); err == nil {
			if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
				ours = true // nobody is up: whatever is left is garbage
				defer func() {
					_ = lock.Truncate(0)
					lock.Close()
				}()
			} else {
				lock.Close()
				ours = owner == dir
			}
		} else {
			ours = true // no lock file: no sim was ever up
		}
	}
	if !ours {
		// Another dir's sim is up. The namespace names are machine-wide, so
		// any namespace named after a host of ours is in fact one of its.
		if len(nss) == 0 {
			return nil // nothing of ours at all
		}
		return fmt.Errorf("vpssim: the sim that is up belongs to %s, not %s: run down --dir %s (the files in %s are stale)", owner, dir, owner, dir)
	}
	if m, _ := filepath.Glob("/run/netns/" + netnsPrefix + "*"); len(m) > 0 {
		for _, p := range m {
			nss[filepath.Base(p)] = true
		}
	}
	var list []string
	for ns := range nss {
		list = append(list, ns)
	}
	var errs []error
	// SIGKILL everything in the namespaces: PID 1 of each host takes its PID
	// namespace with it; the outer unshare process is in the namespace too.
	// Also the outer processes found by their command line (one still on
	// its way into the namespace); --kill-child takes their host along.
	for _, pid := range pidsNaming(filepath.Join(dir, "bin", "hostinit.sh")) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := killAll(ctx, list, 10*time.Second); err != nil {
		// Keep the namespaces' names: deleting them now would leave the
		// survivors in namespaces nobody can find any more.
		return fmt.Errorf("%w (namespaces kept; run down again)", err)
	}
	// Veths first, from the root side: deleting one end deletes the pair at
	// once, while a deleted namespace takes its end along only when the
	// kernel gets round to cleaning it up (seconds, on a busy machine).
	for _, v := range ourVeths() {
		if err := run(ctx, "ip", "link", "del", v); err != nil && slices.Contains(ourVeths(), v) {
			errs = append(errs, err)
		}
	}
	for _, ns := range list {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			if err := run(ctx, "ip", "netns", "del", ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if _, err := net.InterfaceByName(Bridge); err == nil {
		if err := run(ctx, "ip", "link", "del", Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := removeState(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pidsNaming lists the live processes whose command line contains s.
func pidsNaming(s string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), s) {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(p, "/proc/%d/cmdline", &pid); err == nil && pid != os.Getpid() && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func ourVeths() []string {
	var names []string
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			if strings.HasPrefix(i.Name, vethPrefix) {
				names = append(names, i.Name)
			}
		}
	}
	return names
}

// removeState deletes the files Up wrote, only in a directory that carries
// Up's marker, then the directory itself if it is empty.
func removeState(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
		return nil
	}
	var errs []error
	for _, name := range []string{stateFile, "ssh_config", "ssh_config.d", "known_hosts", "known_hosts.old", "id_ed25519", "id_ed25519.pub", "bin", "hosts", markerFile} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	_ = os.Remove(dir) // only if empty
	return errors.Join(errs...)
}

// Partition cuts host off from peers (names or aliases; none means every
// other host): iptables DROP rules inside host's namespace for the peers'
// addresses, on INPUT (-s peer) and OUTPUT (-d peer). Both directions are
// dropped: with a one-way rule the far side's retransmits and half-open
// connections leak through and a "partition" still carries data one way.
// The controller (10.77.0.1) stays reachable, and SSH between the hosts is
// never cut, so SSH to the host keeps working (also through a jump host).
// DROP, not REJECT: a partitioned peer looks like a dead network
// (timeouts), as on the real links. Partition adds to an existing cut.
func (s *Sim) Partition(host string, peers []string) error {
	h, err := s.mustHost(host)
	if err != nil {
		return err
	}
	var ips []string
	if len(peers) == 0 {
		for _, o := range s.Hosts {
			if o.Name != h.Name {
				ips = append(ips, o.IP)
			}
		}
	}
	for _, p := range peers {
		o, err := s.mustHost(p)
		if err != nil {
			return err
		}
		if o.Name == h.Name {
			return fmt.Errorf("vpssim: cannot partition %s from itself", h.Name)
		}
		ips = append(ips, o.IP)
	}
	ipt := func(args ...string) error { return iptables(h.Name, args...) }
	if ipt("-S", partitionChain) != nil {
		if err := ipt("-N", partitionChain); err != nil {
			return err
		}
	}
	for _, c := range []string{"INPUT", "OUTPUT"} {
		if ipt("-C", c, "-j", partitionChain) != nil {
			if err := ipt("-I", c, "1", "-j", partitionChain); err != nil {
				return err
			}
		}
	}
	// SSH between the hosts is the management path (a jump host carries
	// its neighbour's SSH), not cluster traffic: it is never cut, so the
	// controller reaches a partitioned jump-only host. These come first in
	// the chain (it is empty after Heal).
	var rules [][]string
	for _, p := range s.sshPorts() {
		rules = append(rules,
			[]string{"-p", "tcp", "--dport", p, "-j", "RETURN"},
			[]string{"-p", "tcp", "--sport", p, "-j", "RETURN"})
	}
	for _, ip := range ips {
		rules = append(rules, []string{"-s", ip, "-j", "DROP"}, []string{"-d", ip, "-j", "DROP"})
	}
	for _, rule := range rules {
		if ipt(append([]string{"-C", partitionChain}, rule...)...) != nil {
			if err := ipt(append([]string{"-A", partitionChain}, rule...)...); err != nil {
				return err
			}
		}
	}
	return nil
}

// Heal removes every partition rule of host (Partition's, both directions).
func (s *Sim) Heal(host string) error {
	h, err := s.mustHost(host)
	if err != nil {
		return err
	}
	if iptables(h.Name, "-S", partitionChain) != nil {
		return nil // never partitioned
	}
	return iptables(h.Name, "-F", partitionChain)
}
