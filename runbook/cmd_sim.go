package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/unibus/clusterkit/runbook/vpssim"
)

// cmdSimNodesEnv prints a nodes.env for a running simulated-host set, so
// every runbook command and the ssh-target specs run against it unchanged.
func cmdSimNodesEnv(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbook sim-nodes-env", flag.ContinueOnError)
	dir := fs.String("dir", vpssim.DefaultDir, "simulation state dir")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	sim, err := vpssim.Load(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "runbook sim-nodes-env: %v (is the simulation up? make vps-sim-up)\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "# Simulated hosts (runbook/vpssim); generated, do not edit.")
	fmt.Fprintf(stdout, "# The aliases resolve through the sim's ssh config: -F %s (make ... SSH_CONFIG=%s)\n", sim.SSHConfig, sim.SSHConfig)
	fmt.Fprintln(stdout, "CLUSTER_NAME=unibus-sim\nROUTE_NETWORK=public\nCLIENT_PORT=4250\nROUTE_PORT=6250\nHTTP_PORT=8470\nKV_REPLICAS=3")
	for i, h := range sim.Hosts {
		fmt.Fprintf(stdout, "NODE_%d=%s %s %s %s\n", i+1, h.Name, h.Alias, h.IP, h.LoginUser)
	}
	return 0
}
