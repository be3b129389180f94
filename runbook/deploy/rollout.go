package deploy

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Rollout installs bin on one node at a time: back up the running binary,
// install atomically, restart, wait for /healthz 200. It stops at the first
// node that does not come back and says how to roll that node back; nodes
// after it keep the old binary. Exit status 1 on a stop.
func Rollout(ctx context.Context, t Topology, s SSH, caFile string, bin []byte, wait time.Duration, stdout, stderr io.Writer) int {
	for i, n := range t.Nodes {
		fmt.Fprintf(stdout, "[%s] rollout %d/%d\n", n.Name, i+1, len(t.Nodes))
		c, err := s.Client(ctx, n)
		if err != nil {
			fmt.Fprintf(stderr, "runbook rollout: stopped at %s: %v (nodes after it were not touched)\n", n.Name, err)
			return 1
		}
		step := func(cmd string) error {
			r, err := c.Sudo(ctx, cmd, nil)
			if err != nil {
				return err
			}
			if r.ExitCode != 0 {
				return fmt.Errorf("%s: exit %d: %s", cmd, r.ExitCode, strings.TrimSpace(r.Stderr))
			}
			return nil
		}
		err = step("cp -a " + BinaryPath + " " + BinaryPath + ".bak")
		if err == nil {
			var changed bool
			changed, err = c.WriteFile(ctx, BinaryPath, bin, 0o755, "root:root")
			if err == nil && !changed {
				fmt.Fprintf(stdout, "[%s] binary already current; restarting anyway to prove health\n", n.Name)
			}
		}
		if err == nil {
			err = step("systemctl restart " + UnitName)
		}
		_ = c.Close()
		if err != nil {
			fmt.Fprintf(stderr, "runbook rollout: stopped at %s: %v\n%s", n.Name, err, rollbackHint(n))
			return 1
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		single := Topology{HTTPPort: t.HTTPPort, Nodes: []NodeRow{n}}
		err = WaitHealthy(wctx, single, caFile, io.Discard)
		cancel()
		if err != nil {
			fmt.Fprintf(stderr, "runbook rollout: stopped at %s: /healthz did not return to 200 within %s (%v)\n%s", n.Name, wait, err, rollbackHint(n))
			return 1
		}
		fmt.Fprintf(stdout, "[%s] healthy on the new binary (backup in %s.bak)\n", n.Name, BinaryPath)
	}
	fmt.Fprintln(stdout, "rollout: every node runs the new binary and is healthy")
	return 0
}

func rollbackHint(n NodeRow) string {
	return fmt.Sprintf("roll %s back: ssh %s 'sudo cp -a %s.bak %s && sudo systemctl restart %s'; the nodes after it still run the old binary\n",
		n.Name, n.Alias, BinaryPath, BinaryPath, UnitName)
}
