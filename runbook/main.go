// Command runbook is the operator's tool for the runbook's steps: certs,
// deploy, start, stop, verify, scale-r3, rollout and user, against the hosts
// in nodes.env over SSH; local-cluster and vps-sim for trying it locally.
// Every command takes its flags before or after its other words.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/process"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/runbook/vpssim"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	args = commandFirst(args)
	switch args[0] {
	case "local-cluster":
		return localCluster(args[1:], stdout, stderr)
	case "vps-sim":
		return vpssim.Main(args[1:], stdout, stderr)
	case "sim-nodes-env":
		return cmdSimNodesEnv(args[1:], stdout, stderr)
	case "certs":
		return cmdCerts(args[1:], stdout, stderr)
	case "deploy":
		return cmdDeploy(args[1:], stdout, stderr)
	case "start":
		return cmdStartStop(true)(args[1:], stdout, stderr)
	case "stop":
		return cmdStartStop(false)(args[1:], stdout, stderr)
	case "verify":
		return cmdVerify(args[1:], stdout, stderr)
	case "scale-r3":
		return cmdScaleR3(args[1:], stdout, stderr)
	case "rollout":
		return cmdRollout(args[1:], stdout, stderr)
	case "user":
		return cmdUser(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "runbook: unknown command %q (run `runbook help`)\n", args[0])
		return 2
	}
}

// commands are runbook's command words.
var commands = []string{"local-cluster", "vps-sim", "sim-nodes-env", "certs", "deploy", "start", "stop", "verify", "scale-r3", "rollout", "user"}

// commandFirst moves the command word to the front when flags come before
// it (`runbook --nodes X deploy --yes`): every flag then goes to the
// command, which parses flags in any position.
func commandFirst(args []string) []string {
	if !strings.HasPrefix(args[0], "-") {
		return args
	}
	for i, a := range args {
		if slices.Contains(commands, a) {
			out := append([]string{a}, args[:i]...)
			return append(out, args[i+1:]...)
		}
	}
	return args
}

func localCluster(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbook local-cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "out/cluster", "where certificates, data and logs go")
	bin := fs.String("binary", "bin/membershipd", "membershipd binary (make cluster builds it)")
	fresh := fs.Bool("fresh", false, "delete --dir first (certificates, data, logs)")
	nodes := fs.Int("nodes", 3, "cluster size")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	absBin, err := filepath.Abs(*bin)
	if err == nil {
		_, err = os.Stat(absBin)
	}
	if err != nil {
		fmt.Fprintf(stderr, "runbook local-cluster: membershipd binary %s: %v (build it: go build -o bin/membershipd ./membershipd)\n", *bin, err)
		return 2
	}
	if *fresh {
		if err := os.RemoveAll(*dir); err != nil {
			fmt.Fprintf(stderr, "runbook local-cluster: remove %s: %v\n", *dir, err)
			return 1
		}
	}
	absDir, _ := filepath.Abs(*dir)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := process.New(process.Options{
		Size: *nodes, Dir: absDir, Binary: absBin, Log: log,
		ClientBase: 4251, RouteBase: 6251, HTTPBase: 8471,
	})
	if err != nil {
		fmt.Fprintf(stderr, "runbook local-cluster: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	if err := chaos.StartNodes(ctx, c.Nodes()...); err != nil {
		fmt.Fprintf(stderr, "runbook local-cluster: %v\n", err)
		_ = c.Close()
		return 1
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		fmt.Fprintf(stderr, "runbook local-cluster: %v\n", err)
		_ = c.Close()
		return 1
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = hc.WaitHealthy(wctx, c.Nodes()...)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "runbook local-cluster: %v (logs: %s/n*.log)\n", err, absDir)
		_ = c.Close()
		return 1
	}
	t := c.TLS()
	fmt.Fprintf(stdout, "local cluster healthy after %s (%d nodes)\n\n", time.Since(start).Round(time.Millisecond), *nodes)
	for _, n := range c.Nodes() {
		pn := n.(*process.Node)
		fmt.Fprintf(stdout, "  %s  client %s  healthz %s  log %s\n", n.Name(), n.ClientURL(), n.HealthzURL(), pn.LogPath())
	}
	first := c.Nodes()[0]
	fmt.Fprintf(stdout, "\n  client CA      %s\n  operator cert  %s\n  operator key   %s\n\n", t.ClientCA, t.OperatorCert, t.OperatorKey)
	fmt.Fprintf(stdout, "Try:\n  curl --cacert %s %s\n", t.ClientCA, first.HealthzURL())
	fmt.Fprintf(stdout, "  %s cluster report --nats-url %s --ca %s --cert %s --key %s --internal-id-file %s --http-port %s\n", absBin, first.ClientURL(), t.ClientCA, t.OperatorCert, t.OperatorKey, t.InternalID[first.Name()], strings.TrimSuffix(strings.TrimPrefix(first.HealthzURL(), "https://127.0.0.1:"), "/healthz"))
	fmt.Fprintf(stdout, "  %s user add --store kv --handle alice --role member --sign-pub <64 hex> (same connection flags)\n\n", absBin)
	// A registered identity for clientcheck, so the data plane can be tried
	// by hand at once.
	idFile := filepath.Join(absDir, "clientcheck.id")
	id, _, err := identity.LoadOrCreate(idFile)
	if err == nil {
		res, rerr := c.CLI(ctx, first, "user", "add", "--store", "kv", "--handle", "clientcheck", "--role", "member", "--sign-pub", id.SignPub())
		if rerr == nil && (res.ExitCode == 0 || strings.Contains(res.Stderr, "already registered")) {
			var servers, apis []string
			for _, n := range c.Nodes() {
				servers = append(servers, n.ClientURL())
				apis = append(apis, strings.TrimSuffix(n.HealthzURL(), "/healthz"))
			}
			fmt.Fprintf(stdout, "  bin/clientcheck --servers %s --api %s \\\n    --ca %s --cert %s --key %s --identity %s --count 1000\n\n",
				strings.Join(servers, ","), strings.Join(apis, ","), t.ClientCA, t.OperatorCert, t.OperatorKey, idFile)
		}
	}
	fmt.Fprintln(stdout, "Ctrl-C stops all nodes.")
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping...")
	if err := c.Close(); err != nil {
		fmt.Fprintf(stderr, "runbook local-cluster: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "all nodes stopped")
	return 0
}

const usage = `usage: runbook COMMAND [flags] [ARGS]   (every command takes -h; flags go before or after ARGS)

  certs    [--force]            route CA, node route and data-plane certificates (out/certs)
  deploy   [--yes]              dry run by default: every file and command per host; --yes applies, starts nothing
  start                         start every node together, then wait for quorum
  stop                          stop every node
  verify                        posture from every node's /healthz and the cluster report
  scale-r3                      raise every control-plane bucket to R3 in place
  rollout  [--binary B]         one node at a time, backup + restart + healthz 200; stops at the first failure
  user add --handle H --role R --sign-pub HEX | list [--all] [--json] | revoke HEX
                                membershipd user ... --store kv, on a node over SSH
  local-cluster [--fresh]       three local processes on loopback (make cluster)
  vps-sim up|down|status        three simulated hosts on this machine (root)
  sim-nodes-env                 nodes.env for the simulated hosts

Host commands read --nodes (runbook/nodes.env) and ssh aliases from -F (~/.ssh/config).
Every command that changes hosts (deploy --yes, start, stop, rollout, scale-r3,
user add|revoke) first connects to every host (host key, login, sudo -n) and
changes nothing anywhere when one fails.
`
