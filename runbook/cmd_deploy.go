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
	"slices"
	"strings"
	"time"

	"github.com/unibus/clusterkit/membershipd/identity"
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
	fs.StringVar(&c.certs, "certs", "out/certs", "certificates directory (made by runbook certs)")
	fs.StringVar(&c.sshConfig, "F", "", "ssh_config file (default ~/.ssh/config)")
	fs.StringVar(&c.knownHosts, "known-hosts", "", "known_hosts file (default from ssh_config, else ~/.ssh/known_hosts)")
	fs.StringVar(&c.identity, "identity", "", "extra private key file (ssh_config IdentityFile and the agent are used too)")
	return c
}

// load reads the topology and checks each node's login user against
// ssh_config (no network). ok false means: exit with code 2.
func (c *common) load(name string, stderr io.Writer) (deploy.Topology, int, bool) {
	t, err := deploy.ParseNodesEnv(c.nodes)
	if err == nil {
		err = c.ssh().CheckUsers(t)
	}
	if err != nil {
		fmt.Fprintf(stderr, "runbook %s: %v\n", name, err)
		return deploy.Topology{}, 2, false
	}
	return t, 0, true
}

// preflight connects to every host (host key, auth, sudo -n) before a
// command changes any; ok false means nothing was changed and the command
// exits with code (1, or 2 for a login-user conflict).
func (c *common) preflight(ctx context.Context, name string, t deploy.Topology, stdout, stderr io.Writer) (int, bool) {
	began := time.Now()
	if err := c.ssh().Preflight(ctx, t); err != nil {
		fmt.Fprintf(stderr, "runbook %s: %v\n", name, err)
		if errors.Is(err, sshx.ErrUserConflict) {
			return 2, false
		}
		return 1, false
	}
	fmt.Fprintf(stdout, "preflight: all %d hosts reachable (host key, login, sudo -n) in %s\n", len(t.Nodes), time.Since(began).Round(time.Millisecond))
	return 0, true
}

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
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
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
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	t, code, ok := c.load("deploy", stderr)
	if !ok {
		return code
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
	if code, ok := c.preflight(ctx, "deploy", t, stdout, stderr); !ok {
		return code
	}
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
		if code, ok := parseFlags(fs, args, stderr); !ok {
			return code
		}
		t, code, ok := c.load(name, stderr)
		if !ok {
			return code
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		if code, ok := c.preflight(ctx, name, t, stdout, stderr); !ok {
			return code
		}
		cmd := "systemctl stop " + deploy.UnitName
		if start {
			// All together: a lone node never serves, so no node's start
			// waits on another's health.
			cmd = "systemctl enable --now " + deploy.UnitName
		}
		err := deploy.Parallel(ctx, t, stdout, func(ctx context.Context, n deploy.NodeRow) (string, error) {
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
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	t, code, ok := c.load("verify", stderr)
	if !ok {
		return code
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

// cmdScaleR3 raises every control-plane bucket to R3 from one node.
func cmdScaleR3(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbook scale-r3", flag.ContinueOnError)
	c := addCommon(fs)
	on := fs.String("on", "", "node to run it on (default: the first that answers)")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	return onNode(c, "scale-r3", *on, []string{"kv", "scale", "--replicas", "3"}, true, stdout, stderr)
}

// userSubFlags are the flags each `user` subcommand takes besides the host
// flags; they are checked here, before any host is contacted.
var userSubFlags = map[string][]string{
	"add":    {"handle", "role", "sign-pub"},
	"list":   {"json", "all"},
	"revoke": {},
}

// cmdUser runs `membershipd user add|list|revoke --store kv` on a node.
func cmdUser(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbook user", flag.ContinueOnError)
	c := addCommon(fs)
	on := fs.String("on", "", "node to run it on (default: the first that answers)")
	handle := fs.String("handle", "", "add: the user's handle")
	role := fs.String("role", "member", "add: admin or member")
	signPub := fs.String("sign-pub", "", "add: the user's ed25519 public key, 64 hex (membershipd key new --out FILE makes one)")
	asJSON := fs.Bool("json", false, "list: print JSON")
	all := fs.Bool("all", false, "list: also show revoked spec-* users (hidden by default)")
	pos, code, ok := parseArgs(fs, args, stderr)
	if !ok {
		return code
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "runbook user: "+format+"\n", a...)
		return 2
	}
	if len(pos) == 0 {
		return bad("want add, list or revoke (runbook user add --handle H --role R --sign-pub HEX)")
	}
	sub := pos[0]
	own, known := userSubFlags[sub]
	if !known {
		return bad("unknown subcommand %q (want add, list or revoke)", sub)
	}
	hostFlags := map[string]bool{"nodes": true, "certs": true, "F": true, "known-hosts": true, "identity": true, "on": true}
	var misplaced string
	fs.Visit(func(f *flag.Flag) {
		if misplaced == "" && !hostFlags[f.Name] && !slices.Contains(own, f.Name) {
			misplaced = f.Name
		}
	})
	if misplaced != "" {
		return bad("flag -%s does not apply to `user %s` (its flags: %s)", misplaced, sub, flagList(own))
	}
	margs := []string{"user", sub, "--store", "kv"}
	switch sub {
	case "add":
		if len(pos) > 1 {
			return bad("add: unexpected argument %q", pos[1])
		}
		// Bad input is exit 2 before any host is contacted.
		if _, err := identity.ParseRole(*role); err != nil {
			return bad("add: --role: %v", err)
		}
		if err := identity.ValidateHandle(*handle); err != nil {
			return bad("add: --handle: %v", err)
		}
		if _, err := identity.ParseSignPub(*signPub); err != nil {
			return bad("add: --sign-pub: %v (make a key with: membershipd key new --out FILE)", err)
		}
		margs = append(margs, "--handle", *handle, "--role", *role, "--sign-pub", *signPub)
	case "list":
		if len(pos) > 1 {
			return bad("list: unexpected argument %q", pos[1])
		}
		if *asJSON {
			margs = append(margs, "--json")
		}
		if *all {
			margs = append(margs, "--all")
		}
	case "revoke":
		if len(pos) != 2 {
			return bad("revoke: want exactly one 64-hex sign key (runbook user revoke HEX)")
		}
		if _, err := identity.ParseSignPub(pos[1]); err != nil {
			return bad("revoke: %v", err)
		}
		margs = append(margs, pos[1])
	}
	return onNode(c, "user "+sub, *on, margs, sub != "list", stdout, stderr)
}

func flagList(names []string) string {
	if len(names) == 0 {
		return "none besides the host flags"
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "--" + n
	}
	return strings.Join(out, " ")
}

// onNode runs membershipd with margs on node on, or on the first node that
// answers. A command that changes the cluster (mutating) first passes the
// preflight on every host.
func onNode(c *common, name, on string, margs []string, mutating bool, stdout, stderr io.Writer) int {
	t, code, ok := c.load(name, stderr)
	if !ok {
		return code
	}
	if on != "" {
		if _, found := t.Node(on); !found {
			fmt.Fprintf(stderr, "runbook %s: --on %s: no such node in %s\n", name, on, c.nodes)
			return 2
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if mutating {
		if code, ok := c.preflight(ctx, name, t, stdout, stderr); !ok {
			return code
		}
	}
	quoted := make([]string, len(margs))
	for i, a := range margs {
		quoted[i] = deploy.Quote(a)
	}
	cmd := deploy.BinaryPath + " " + strings.Join(quoted, " ")
	var last error
	for _, n := range t.Nodes {
		if on != "" && n.Name != on {
			continue
		}
		r, err := c.ssh().OnNode(ctx, n, cmd)
		if err != nil {
			last = err
			fmt.Fprintf(stderr, "[%s] %v\n", n.Name, err)
			continue
		}
		fmt.Fprintf(stdout, "[%s] $ membershipd %s\n%s", n.Name, strings.Join(margs, " "), r.Stdout)
		fmt.Fprint(stderr, r.Stderr)
		return r.ExitCode
	}
	if last == nil {
		last = errors.New("no such node")
	}
	return fail(stderr, name, last)
}

func cmdRollout(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbook rollout", flag.ContinueOnError)
	c := addCommon(fs)
	binary := fs.String("binary", "", "new membershipd binary (default: cross-build)")
	wait := fs.Duration("wait", 2*time.Minute, "how long each node gets to return to /healthz 200")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	t, code, ok := c.load("rollout", stderr)
	if !ok {
		return code
	}
	bin, err := loadBinary(*binary)
	if err != nil {
		return fail(stderr, "rollout", err)
	}
	pctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	code, ok = c.preflight(pctx, "rollout", t, stdout, stderr)
	cancel()
	if !ok {
		return code
	}
	return deploy.Rollout(context.Background(), t, c.ssh(), c.ca(), bin, *wait, stdout, stderr)
}
