// Command nemesis runs a seeded fault schedule against a local cluster
// while workloads record a history, then judges it (see chaos/nemesis).
//
//	go run ./chaos/nemesis/cmd/nemesis --seed 7 --duration 60s --faults kill,pause
//	bin/nemesis --target=ssh --allow-disruptive --nodes nodes.env --certs out/certs --ssh-config FILE
//
// Exit status: 0 green, 1 red (an anomaly), 2 bad input, 3 invalid run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/unibus/clusterkit/chaos/nemesis"
)

// Exit statuses the command decides itself; a judged run exits with its
// verdict's (0 green, 1 red, 3 invalid).
const (
	exitBad     = 2
	exitInvalid = 3
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nemesis", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seedS := fs.String("seed", "", "seed (unsigned integer; empty: random, printed)")
	dur := fs.Duration("duration", 5*time.Minute, "how long the nemesis runs faults")
	faults := fs.String("faults", "", "comma-separated faults to draw from (empty: every fault the target can take)")
	target := fs.String("target", "process", "cluster target: process (local membershipd processes) or ssh (the deployed cluster of --nodes; needs --allow-disruptive)")
	var st nemesis.SSHTarget
	fs.StringVar(&st.NodesFile, "nodes", "", "ssh target: nodes.env")
	fs.StringVar(&st.CertsDir, "certs", "out/certs", "ssh target: the controller's certificates (runbook certs)")
	fs.StringVar(&st.SSHConfig, "ssh-config", "", "ssh target: ssh_config file (default ~/.ssh/config)")
	fs.StringVar(&st.SimDir, "sim-dir", "", "ssh target: the simulated hosts' state dir, when they are the hosts")
	disrupt := fs.Bool("allow-disruptive", false, "ssh target: opt in to faults on the deployed cluster (every fault carries a lease: it heals itself if this controller disappears)")
	replay := fs.String("replay", "", "schedule.json of an earlier run to replay (its seed, duration and faults)")
	sync := fs.String("sync", "", "serve --sync for every node (always, default, or a duration; empty: the binary's default)")
	binary := fs.String("membershipd", "bin/membershipd", "membershipd binary")
	out := fs.String("out", "out/nemesis", "directory for run directories")
	probes := fs.Int("probes", 3, "concurrent clientcheck probes")
	rate := fs.Float64("probe-rate", 8, "messages per second per probe")
	verbose := fs.Bool("v", false, "log the workloads and the cluster target")
	if err := fs.Parse(args); err != nil {
		return exitBad
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nemesis: unexpected argument %q (flags only)\n", fs.Arg(0))
		return exitBad
	}
	cfg := nemesis.Config{Duration: *dur, Target: *target, SSH: st, AllowDisruptive: *disrupt, Sync: *sync, Binary: *binary, OutRoot: *out, Probes: *probes, ProbeRate: *rate, Out: stdout}
	switch *seedS {
	case "":
		cfg.Seed = rand.Uint64() % 1_000_000
	default:
		s, err := strconv.ParseUint(*seedS, 10, 64)
		if err != nil {
			fmt.Fprintf(stderr, "nemesis: --seed %q: want an unsigned integer\n", *seedS)
			return exitBad
		}
		cfg.Seed = s
	}
	for _, f := range strings.Split(*faults, ",") {
		if f = strings.TrimSpace(f); f != "" {
			cfg.Faults = append(cfg.Faults, f)
		}
	}
	if *replay != "" {
		s, err := nemesis.LoadSchedule(*replay)
		if err != nil {
			fmt.Fprintf(stderr, "nemesis: %v (give REPLAY=out/nemesis/<run>/schedule.json)\n", err)
			return exitBad
		}
		// A replay runs with the recorded seed (so the traffic mix too).
		cfg.Replay, cfg.ReplayPath, cfg.Seed = s, *replay, s.Seed
	}
	lvl := slog.LevelError
	if *verbose {
		lvl = slog.LevelInfo
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	fmt.Fprintf(stdout, "nemesis: seed %d\n", cfg.Seed)
	res, err := nemesis.Run(ctx, cfg)
	if errors.Is(err, nemesis.ErrBadInput) {
		fmt.Fprintf(stderr, "nemesis: %v\n", err)
		return exitBad
	}
	if err != nil {
		fmt.Fprintf(stderr, "nemesis: invalid run: %v (seed %d, dir %s)\n", err, cfg.Seed, res.Dir)
		return exitInvalid
	}
	v := res.Verdict
	fmt.Fprintf(stdout, "nemesis: %d ops in %.0f s (%.1f ops/s; %.1f ops/s before the first fault); by kind %v; by outcome %v\n",
		v.Stats.Ops, float64(v.Stats.DurationMS)/1000, v.Stats.OpsPerSecond, v.Stats.PreFaultOpsPerSecond, v.Stats.ByKind, v.Stats.ByOutcome)
	if cfg.Replay != nil {
		fmt.Fprintf(stdout, "nemesis: replay of %s: %s\n", cfg.ReplayPath, nemesis.ReplayDrift(cfg.Replay.Steps, res.Schedule.Steps))
		fmt.Fprintf(stdout, "nemesis: a replay reproduces %s\nnemesis: it cannot reproduce %s\n", res.Schedule.Reproduces, res.Schedule.CannotReproduce)
	}
	fmt.Fprintf(stdout, "nemesis: seed %d, %d faults, wall %s\n", cfg.Seed, len(res.Schedule.Steps), time.Since(start).Round(time.Second))
	if err := v.Report.WriteSummary(stdout); err != nil {
		fmt.Fprintf(stderr, "nemesis: %v\n", err)
	}
	fmt.Fprintf(stdout, "nemesis: %s (seed %d) -> %s\n", strings.ToUpper(string(v.Status)), cfg.Seed, filepath.Join(res.Dir, "report.html"))
	return v.ExitCode()
}
