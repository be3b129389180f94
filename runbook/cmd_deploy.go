package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/runbook/deploy"
	"github.com/unibus/clusterkit/runbook/sshx"
)

//go:embed membershipd-cluster.service
var unitFile []byte

// common are the flags every host command takes.
type common struct {
	nodes, certs, sshConfig, knownHosts, identity string
}

func addCommon(fs *flag.FlagSet) *common {
	c := &common{}
	fs.StringVar(&c.nodes, "nodes", "runbook/nodes.env", "topology file")
	fs.StringVar(&c.certs, "certs", "out/certs", "certificates made by `runbook certs`")
	fs.StringVar(&c.sshConfig, "F", "", "ssh_config file (default ~/.ssh/config)")
	fs.StringVar(&c.knownHosts, "known-hosts", "", "known_hosts file (default from ssh_config, else ~/.ssh/known_hosts)")
	fs.StringVar(&c.identity, "identity", "", "extra private key file (ssh_config IdentityFile and the agent are used too)")
	return c
}

func (c *common) topology() (deploy.Topology, error) { return deploy.ParseNodesEnv(c.nodes) }

func (c *common) ssh() deploy.SSH {
	o := sshx.Options{ConfigFile: c.sshConfig, Agent: true}
	if c.knownHosts != "" {
		o.KnownHosts = []string{c.knownHosts}
	}
	if c.identity != "" {
		o.IdentityFiles = []string{c.identity}
	}
	return deploy.SSH{Options: o}
}

func (c *common) ca() string { return filepath.Join(c.certs, "client-ca.crt") }

func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) bool {
	fs.SetOutput(stderr)
	return fs.Parse(args) == nil
}

func fail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "runbook %s: %v\n", cmd, err)
	return 1
}

func cmdCerts(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbook certs", flag.ContinueOnError)
	nodes := fs.String("nodes", "runbook/nodes.env", "topology file")
	dir := fs.String("dir", "out/certs", "where the CAs and node certificates go (keep it on the operator's machine)")
	force := fs.Bool("force", false, "rotate the route CA (redeploy every node together afterwards)")
	clientCA := fs.String("client-ca", "", "existing client CA certificate to reuse (clients keep trusting the bus)")
	clientKey := fs.String("client-ca-key", "", "its key")
	if !parseFlags(fs, args, stderr) {
		return 2
	}
	t, err := deploy.ParseNodesEnv(*nodes)
	if err != nil {
		fmt.Fprintf(stderr, "runbook certs: %v\n", err)
		return 2
	}
	if _, err := os.Stat(filepath.Join(*dir, "route-ca.crt")); err == nil && !*force {
		fmt.Fprintf(stderr, "runbook certs: certificates already exist in %s; refusing to overwrite (--force rotates the route CA; every node must then get the new cluster-ca.crt together)\n", *dir)
		return 2
	}
	if (*clientCA == "") != (*clientKey == "") {
		fmt.Fprintln(stderr, "runbook certs: --client-ca and --client-ca-key go together")
		return 2
	}
	if *clientCA != "" {
		ca, err := pki.LoadCA(*clientCA, *clientKey)
		if err != nil {
			fmt.Fprintf(stderr, "runbook certs: %v\n", err)
			return 2
		}
		if _, _, err := pki.WriteFiles(*dir, "client-ca", ca.CertPEM, ca.KeyPEM); err != nil {
			return fail(stderr, "certs", err)
		}
	}
	var specs []pki.NodeSpec
	for _, n := range t.Nodes {
		specs = append(specs, pki.NodeSpec{Name: n.Name, Hosts: []string{n.Address}})
	}
	l, err := pki.MintCluster(*dir, specs, *force)
	if err != nil {
		return fail(stderr, "certs", err)
	}
	fmt.Fprintf(stdout, "client CA  %s\nroute CA   %s (separate)\nsecret     %s (0600)\noperator   %s\n", l.ClientCACert, l.RouteCACert, l.RouteSecret, l.OperatorCert)
	for _, n := range t.Nodes {
		nf := l.Nodes[n.Name]
		fmt.Fprintf(stdout, "%-10s route %s, data plane %s (SANs 127.0.0.1, %s)\n", n.Name, nf.RouteCert, nf.ServerCert, n.Address)
	}
	return 0
}

// loadBinary reads the binary to ship, or cross-builds it when path is "".
func loadBinary(path string) ([]byte, error) {
	if path != "" {
		return os.ReadFile(path)
	}
	return crossBuild("out/build/membershipd-linux-amd64")
}

// crossBuild builds the linux/amd64 binary the hosts run.
func crossBuild(out string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./membershipd")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cross-build membershipd: %v: %s", err, b)
	}
	return os.ReadFile(out)
}

func cmdDeploy(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbook deploy", flag.ContinueOnError)
	c := addCommon(fs)
	yes := fs.Bool("yes", false, "apply (without it: a dry run that prints the plan and changes nothing)")
	binary := fs.String("binary", "", "membershipd binary to ship (default: cross-build linux/amd64, CGO_ENABLED=0)")
	if !parseFlags(fs, args, stderr) {
		return 2
	}
	t, err := c.topology()
	if err != nil {
		fmt.Fprintf(stderr, "runbook deploy: %v\n", err)
		return 2
	}
	bin, err := loadBinary(*binary)
	if err != nil {
		return fail(stderr, "deploy", err)
	}
	plans, err := deploy.BuildPlans(t, deploy.Material{Binary: bin, Unit: unitFile, CertsDir: c.certs})
	if err != nil {
		fmt.Fprintf(stderr, "runbook deploy: %v\n", err)
		return 2
	}
	if !*yes {
		deploy.PrintPlan(stdout, plans)
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	results := deploy.Apply(ctx, plans, c.ssh().Dialer(), stdout)
	changed, failed := 0, 0
	for _, r := range results {
		changed += len(r.Changed)
		if r.Err != nil {
			failed++
		}
	}
	switch {
	case failed > 0:
		fmt.Fprintf(stderr, "runbook deploy: %d of %d hosts failed (see above); nothing was started\n", failed, len(results))
		return 1
	case changed == 0:
		fmt.Fprintf(stdout, "deploy: every host already up to date; nothing changed\n")
	default:
		fmt.Fprintf(stdout, "deploy: %d files changed on %d hosts; nothing was started (next: runbook start)\n", changed, len(results))
	}
	return 0
}

func cmdStartStop(start bool) func(args []string, stdout, stderr io.Writer) int {
	name := "stop"
	if start {
		name = "start"
	}
	return func(args []string, stdout, stderr io.Writer) int {
		fs := flag.NewFlagSet("runbook "+name, flag.ContinueOnError)
		c := addCommon(fs)
		timeout := fs.Duration("timeout", 3*time.Minute, "how long to wait for quorum")
		if !parseFlags(fs, args, stderr) {
			return 2
		}
		t, err := c.topology()
		if err != nil {
			fmt.Fprintf(stderr, "runbook %s: %v\n", name, err)
			return 2
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		cmd := "systemctl stop " + deploy.UnitName
		if start {
			// All together: a lone node never serves, so no node's start
			// waits on another's health.
			cmd = "systemctl enable --now " + deploy.UnitName
		}
		err = deploy.Parallel(ctx, t, stdout, func(ctx context.Context, n deploy.NodeRow) (string, error) {
			r, err := c.ssh().OnNode(ctx, n, cmd)
			if err != nil {
				return "", err
			}
			if r.ExitCode != 0 {
				return "", fmt.Errorf("%s: exit %d: %s", cmd, r.ExitCode, strings.TrimSpace(r.Stderr))
			}
			return cmd, nil
		})
		if err != nil {
			return fail(stderr, name, err)
		}
		if !start {
			return 0
		}
		began := time.Now()
		if err := deploy.WaitHealthy(ctx, t, c.ca(), io.Discard); err != nil {
			return fail(stderr, name, err)
		}
		fmt.Fprintf(stdout, "quorum: every node healthy %s after the start\n", time.Since(began).Round(time.Millisecond))
		return 0
	}
}

func cmdVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbook verify", flag.ContinueOnError)
	c := addCommon(fs)
	if !parseFlags(fs, args, stderr) {
		return 2
	}
	t, err := c.topology()
	if err != nil {
		fmt.Fprintf(stderr, "runbook verify: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bad := 0
	for _, n := range t.Nodes {
		code, h, err := deploy.Healthz(ctx, c.ca(), t.HealthzURL(n))
		if err != nil {
			fmt.Fprintf(stdout, "[%s] healthz: %v\n", n.Name, err)
			bad++
			continue
		}
		p := h.Posture
		ok := code == 200 && p.BusAuth == "enforce" && p.ACL && p.TLS && p.Cluster && p.Store == "kv"
		if !ok {
			bad++
		}
		fmt.Fprintf(stdout, "[%s] %d bus_auth=%s acl=%t tls=%t cluster=%t store=%s meta_leader=%s %s\n",
			n.Name, code, p.BusAuth, p.ACL, p.TLS, p.Cluster, p.Store, h.MetaLeader, h.Reason)
	}
	r, err := c.ssh().OnNode(ctx, t.Nodes[0], deploy.BinaryPath+" cluster report --nodes "+fmt.Sprint(len(t.Nodes)))
	if err != nil {
		return fail(stderr, "verify", err)
	}
	fmt.Fprint(stdout, r.Stdout)
	if r.ExitCode != 0 || bad > 0 {
		fmt.Fprintf(stderr, "runbook verify: %d nodes not healthy with the full posture; cluster report exit %d: %s\n", bad, r.ExitCode, strings.TrimSpace(r.Stderr))
		return 1
	}
	return 0
}

// onFirstNode runs membershipd with args on the first node that answers.
func onFirstNode(name string, build func(args []string) ([]string, error)) func(args []string, stdout, stderr io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int {
		fs := flag.NewFlagSet("runbook "+name, flag.ContinueOnError)
		c := addCommon(fs)
		on := fs.String("on", "", "node to run it on (default: the first that answers)")
		if !parseFlags(fs, args, stderr) {
			return 2
		}
		rest, err := build(fs.Args())
		if err != nil {
			fmt.Fprintf(stderr, "runbook %s: %v\n", name, err)
			return 2
		}
		t, err := c.topology()
		if err != nil {
			fmt.Fprintf(stderr, "runbook %s: %v\n", name, err)
			return 2
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		quoted := make([]string, len(rest))
		for i, a := range rest {
			quoted[i] = deploy.Quote(a)
		}
		cmd := deploy.BinaryPath + " " + strings.Join(quoted, " ")
		var last error
		for _, n := range t.Nodes {
			if *on != "" && n.Name != *on {
				continue
			}
			r, err := c.ssh().OnNode(ctx, n, cmd)
			if err != nil {
				last = err
				fmt.Fprintf(stderr, "[%s] %v\n", n.Name, err)
				continue
			}
			fmt.Fprintf(stdout, "[%s] $ membershipd %s\n%s", n.Name, strings.Join(rest, " "), r.Stdout)
			fmt.Fprint(stderr, r.Stderr)
			return r.ExitCode
		}
		if last == nil {
			last = errors.New("no such node")
		}
		return fail(stderr, name, last)
	}
}

func cmdRollout(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbook rollout", flag.ContinueOnError)
	c := addCommon(fs)
	binary := fs.String("binary", "", "new membershipd binary (default: cross-build)")
	wait := fs.Duration("wait", 2*time.Minute, "how long each node gets to return to /healthz 200")
	if !parseFlags(fs, args, stderr) {
		return 2
	}
	t, err := c.topology()
	if err != nil {
		fmt.Fprintf(stderr, "runbook rollout: %v\n", err)
		return 2
	}
	bin, err := loadBinary(*binary)
	if err != nil {
		return fail(stderr, "rollout", err)
	}
	return deploy.Rollout(context.Background(), t, c.ssh(), c.ca(), bin, *wait, stdout, stderr)
}
