package vpssim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/unibus/clusterkit/internal/cliflag"
)

const usage = `usage: runbook vps-sim COMMAND [--dir DIR] [ARGS]

Simulated hosts (magnus, homer, datardos alias dd) in network namespaces on
10.77.0.0/24, each running a real sshd: homer's on port 2222, datardos's
reachable only through magnus (ProxyJump). DIR/ssh_config reaches the hosts
through an Include of DIR/ssh_config.d/; DIR/known_hosts is hashed. Needs
root. DIR defaults to ` + DefaultDir + `.

  up                      create the hosts; prints the ssh_config to use
  down                    remove everything (namespaces, bridge, processes, files)
  status                  show each host and whether it is up
  exec HOST CMD...        run CMD as root inside HOST (debugging; not over SSH)
  partition HOST [PEER...] drop traffic between HOST and PEERs (default: all other hosts)
  heal HOST               remove HOST's partition rules
  kill HOST               crash HOST (SIGKILL to its PID 1: every process on it)
  boot HOST               start a crashed HOST again (enabled units start)
`

// Main is the vps-sim command line; args exclude the command's own name.
// The repo's runbook tool exposes it as `go run ./runbook vps-sim ...`.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	fs := flag.NewFlagSet("vps-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", DefaultDir, "state directory of the sim (not under /tmp)")
	// Flags go anywhere (`--dir D up`, `up --dir D`), except inside exec's
	// command: `exec HOST CMD ARGS` passes everything from CMD on untouched.
	// First the command word, then the rest by the command's rule.
	first, err := cliflag.Parse(fs, args, cliflag.Options{MaxPositional: 1})
	if err != nil {
		return cliflag.Report(fs, err, stderr)
	}
	if len(first) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := first[0]
	o := cliflag.Options{}
	if cmd == "exec" {
		o.MaxPositional = 2
	}
	rest, err := cliflag.Parse(fs, first[1:], o)
	if err != nil {
		return cliflag.Report(fs, err, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fail := func(err error) int {
		fmt.Fprintf(stderr, "vps-sim %s: %v\n", cmd, err)
		return 1
	}
	needArgs := func(n int, what string) bool {
		if len(rest) < n {
			fmt.Fprintf(stderr, "vps-sim %s: want %s\n%s", cmd, what, usage)
			return false
		}
		return true
	}

	switch cmd {
	case "up":
		start := time.Now()
		s, err := Up(ctx, *dir, DefaultHosts())
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "vps-sim: %d hosts up in %s (state in %s)\n", len(s.Hosts), time.Since(start).Round(time.Millisecond), s.Dir)
		printHosts(stdout, s)
		fmt.Fprintf(stdout, "\nssh config: %s\ntry:        ssh -F %s %s true\nstop with:  go run ./runbook vps-sim down --dir %s\n", s.SSHConfig, s.SSHConfig, s.Hosts[0].Alias, s.Dir)
		return 0
	case "down":
		start := time.Now()
		if err := Down(ctx, *dir); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "vps-sim: down in %s\n", time.Since(start).Round(time.Millisecond))
		return 0
	case "status":
		s, err := Load(*dir)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "vps-sim: state in %s, up since %s\n", s.Dir, s.StartedAt.Format(time.RFC3339))
		printHosts(stdout, s)
		fmt.Fprintf(stdout, "\nssh config: %s\n", s.SSHConfig)
		return 0
	case "exec":
		if !needArgs(2, "HOST CMD...") {
			return 2
		}
		s, err := Load(*dir)
		if err != nil {
			return fail(err)
		}
		o, e, err := s.Exec(ctx, rest[0], strings.Join(rest[1:], " "))
		fmt.Fprint(stdout, o)
		fmt.Fprint(stderr, e)
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode()
			}
			return fail(err)
		}
		return 0
	case "partition", "heal", "kill", "boot":
		if !needArgs(1, "HOST") {
			return 2
		}
		s, err := Load(*dir)
		if err != nil {
			return fail(err)
		}
		switch cmd {
		case "partition":
			err = s.Partition(rest[0], rest[1:])
		case "heal":
			err = s.Heal(rest[0])
		case "kill":
			err = s.Kill(rest[0])
		case "boot":
			err = s.Boot(ctx, rest[0])
		}
		if err != nil {
			return fail(err)
		}
		return 0
	default:
		fmt.Fprintf(stderr, "vps-sim: unknown command %q\n%s", cmd, usage)
		return 2
	}
}

func printHosts(w io.Writer, s *Sim) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tALIAS\tIP\tSSH\tLOGIN\tSTATE")
	for _, h := range s.Hosts {
		state := "down"
		if pid, err := s.InitPID(h.Name); err == nil {
			state = fmt.Sprintf("up (sshd pid %d)", pid)
		}
		ssh := fmt.Sprintf("port %d", h.Port())
		if h.JumpVia != "" {
			ssh += " via " + h.JumpVia
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Alias, h.IP, ssh, h.LoginUser, state)
	}
	tw.Flush()
}
