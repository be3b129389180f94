// Command bench is `make bench`: it measures a membershipd cluster and a
// plain nats-server cluster side by side (chaos/bench), prints the table
// and writes bench.json and bench.svg (and, with -cpuprofile, a CPU
// profile) into -out.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/unibus/clusterkit/chaos/bench"
	"github.com/unibus/clusterkit/chaos/report"
)

func main() { os.Exit(run()) }

func run() int {
	var (
		quick   = flag.Bool("short", false, "small workloads: a smoke check in well under a minute")
		out     = flag.String("out", "out/bench", "where bench.json, bench.svg and the profile go")
		mbin    = flag.String("membershipd", "bin/membershipd", "membershipd binary for the process rows")
		nbin    = flag.String("nats-server", "bin/nats-server", "nats-server binary for the plain process rows")
		cpuprof = flag.Bool("cpuprofile", false, "write CPU profiles of each cluster's pub-recv + throughput workloads (cpu-membershipd.pprof, cpu-plain.pprof) into -out")
		verbose = flag.Bool("v", false, "log progress to stderr")
		rows    = flag.String("rows", "", "comma-separated row names: run only the workloads behind them (e.g. -rows quorum-s); the other rows stay null")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected argument %q (flags only; see -h)\n", flag.Arg(0))
		return 2
	}
	for _, b := range []string{*mbin, *nbin} {
		if _, err := os.Stat(b); err != nil {
			fmt.Fprintf(os.Stderr, "bench: binary %s: %v (build it first: make build, or pass -membershipd / -nats-server)\n", b, err)
			return 2
		}
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	dir, err := os.MkdirTemp("", "unibus-bench-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()

	var profile func(string) func()
	if *cpuprof {
		profile = func(name string) func() {
			pf, err := report.CreateBenchFile(*out, name)
			if err == nil {
				err = pprof.StartCPUProfile(pf)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: cpu profile %s: %v\n", name, err)
				return func() {}
			}
			return func() { pprof.StopCPUProfile(); _ = pf.Close() }
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	var only []string
	if *rows != "" {
		only = strings.Split(*rows, ",")
	}
	res, err := bench.Run(ctx, bench.Options{Quick: *quick, Membershipd: *mbin, NatsServer: *nbin, Dir: dir, Log: log, Profile: profile, Rows: only})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	res.Table.Notes = append(res.Table.Notes, fmt.Sprintf("run took %s", time.Since(start).Round(time.Second)))
	if err := report.WriteBenchText(os.Stdout, res.Table); err != nil {
		return 1
	}
	if err := report.WriteBench(*out, res.Table, map[string][]byte{"bench.svg": res.SVG()}); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	fmt.Printf("wrote %s/bench.json and %s/bench.svg\n", *out, *out)
	return 0
}
