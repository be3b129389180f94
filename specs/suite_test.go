// Package specs is the runbook as executable Ginkgo specs: one file per
// runbook section, one It per claim (labelled claim:<id>, see CLAIMS.md).
// Specs only compose the chaos framework; they observe the cluster from
// outside (healthz, real clients, the CLI's exit status and output).
package specs

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/unibus/clusterkit/chaos/report"
)

var (
	flagTarget    = flag.String("target", "inproc", "cluster target: inproc (nodes in the test process), process (membershipd subprocesses), or ssh (a deployed cluster: --nodes, --certs, --ssh-config)")
	flagSize      = flag.Int("size", 3, "inproc and process targets: nodes per cluster, for specs that do not ask for a size")
	flagNodes     = flag.String("nodes", "", "ssh target: nodes.env"+relNote)
	flagCerts     = flag.String("certs", "out/certs", "ssh target: the controller's certificates (runbook certs; default: out/certs of the repository)"+relNote)
	flagSSHConfig = flag.String("ssh-config", "", "ssh target: ssh_config file (default ~/.ssh/config)"+relNote)
	flagDisrupt   = flag.Bool("allow-disruptive", false, "ssh target: run specs that stop nodes or cut routes")
	flagWipe      = flag.Bool("allow-wipe", false, "ssh target: run specs that need a fresh cluster by deleting every node's JetStream data (simulated hosts only)")
	flagSimDir    = flag.String("sim-dir", "", "ssh target: the simulated hosts' state dir (enables partition specs)")
	flagRunbook   = flag.String("runbook", "", "prebuilt runbook tool (deploy specs; default: bin/runbook next to --membershipd)"+relNote)
	flagBinary    = flag.String("membershipd", "", "prebuilt membershipd binary (default: build it into the report dir)"+relNote)
	flagReportDir = flag.String("report-dir", "../out/specs", "where the checklist and evidence go")
	flagKeep      = flag.Bool("keep-clusters", false, "keep every cluster's data dir, not only those of failed specs")
	flagVerbose   = flag.Bool("node-logs", false, "stream node logs (nats-server and membershipd) to the spec output")
)

// relNote is how the input-file flags read a relative path: the Ginkgo CLI
// runs the suite's binary inside specs/, not where the user typed the
// command, so a path relative to the repository root must work too.
const relNote = "; relative: to the current directory, else to the repository root"

// inputPaths makes the input-file flags absolute, in place, so that every
// spec (and every tool a spec runs) gets the same file. It runs first in
// BeforeSuite; an error names each absolute path it tried.
func inputPaths() error {
	cwd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("input paths: %w", err)
	}
	dirs := []string{cwd}
	if root, ok := moduleRoot(cwd); ok && root != cwd {
		dirs = append(dirs, root)
	}
	flags := []struct {
		name string
		v    *string
	}{{"membershipd", flagBinary}, {"runbook", flagRunbook}}
	if *flagTarget == "ssh" {
		if *flagNodes == "" {
			return errors.New("--target=ssh needs --nodes FILE (the cluster's nodes.env; make specs-live NODES=FILE)")
		}
		flags = append(flags, []struct {
			name string
			v    *string
		}{{"nodes", flagNodes}, {"certs", flagCerts}, {"ssh-config", flagSSHConfig}}...)
	}
	for _, f := range flags {
		if *f.v == "" {
			continue
		}
		p, err := resolveInput(f.name, *f.v, dirs)
		if err != nil {
			return err
		}
		*f.v = p
	}
	return nil
}

// resolveInput returns the absolute path of an existing file or directory
// named by flag --name: ~/ is the home directory; a relative path is tried
// against each of dirs in order.
func resolveInput(name, v string, dirs []string) (string, error) {
	if rest, ok := strings.CutPrefix(v, "~/"); ok {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("--%s %s: %w", name, v, err)
		}
		v = filepath.Join(home, rest)
	}
	var tried []string
	if filepath.IsAbs(v) {
		tried = []string{filepath.Clean(v)}
	} else {
		for _, d := range dirs {
			tried = append(tried, filepath.Join(d, v))
		}
	}
	for _, p := range tried {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	hint := "give an absolute path, or one relative to the repository root"
	if filepath.IsAbs(v) {
		hint = "check the path"
	}
	if name == "certs" {
		hint += " (`runbook certs --dir DIR` makes them; make specs-live takes CERTS=DIR)"
	}
	return "", fmt.Errorf("--%s %s: no such file or directory (tried %s); %s", name, v, strings.Join(tried, ", "), hint)
}

// moduleRoot is the nearest directory at or above dir holding go.mod.
func moduleRoot(dir string) (string, bool) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, true
		}
		if filepath.Dir(d) == d {
			return "", false
		}
	}
}

// Labels of what only the simulated hosts may do; make test-vps runs the
// specs with either label in a run of their own there, and a live run skips
// them. Wipe: needs a fresh cluster (ssh target: --allow-wipe deletes every
// node's data; NewEnv fails a fresh-cluster spec without it). Partition:
// cuts routes with iptables (ssh target: the simulated hosts, --sim-dir).
var (
	Wipe      = Label("wipe")
	Partition = Label("partition")
)

// suite holds what every spec shares.
var suite struct {
	binary    string
	reportDir string
	log       *slog.Logger
	failed    bool
}

func TestSpecs(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "unibus runbook specs")
}

var _ = BeforeSuite(func() {
	Expect(inputPaths()).To(Succeed())
	dir, err := filepath.Abs(*flagReportDir)
	Expect(err).NotTo(HaveOccurred())
	Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
	suite.reportDir = dir
	lvl := slog.LevelWarn
	if *flagVerbose {
		lvl = slog.LevelInfo
	}
	suite.log = slog.New(slog.NewTextHandler(GinkgoWriter, &slog.HandlerOptions{Level: lvl}))
	suite.binary = *flagBinary
	if suite.binary == "" {
		// The CLI specs run the real binary, as an operator would.
		suite.binary = filepath.Join(dir, "bin", "membershipd")
		start := time.Now()
		out, err := exec.Command("go", "build", "-o", suite.binary, "../membershipd").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "build membershipd: %s", out)
		AddReportEntry("build membershipd", time.Since(start).Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
	}
})

// Disruptive specs never run against a live cluster by accident.
var _ = BeforeEach(func() {
	if *flagTarget == "ssh" && !*flagDisrupt && slices.Contains(CurrentSpecReport().Labels(), "disruptive") {
		Skip("disruptive: stops nodes of the deployed cluster; opt in with --allow-disruptive (after the `--`)")
	}
})

var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() {
		suite.failed = true
	}
})

var _ = ReportAfterSuite("claim checklist", func(r Report) {
	c := report.NewChecklist(r, *flagTarget)
	dir := suite.reportDir
	if dir == "" {
		dir, _ = filepath.Abs(*flagReportDir)
	}
	ms := report.Measurements(r)
	if err := report.WriteChecklistFiles(dir, c, ms); err != nil {
		fmt.Fprintf(os.Stderr, "write checklist: %v\n", err)
	}
	fmt.Println()
	_ = report.WriteChecklist(os.Stdout, c)
	_ = report.WriteMeasurements(os.Stdout, ms)
})

// TestInputPaths: a relative input path is found from specs/ (where the
// Ginkgo CLI runs the binary) when it is relative to the repository root,
// and a missing one names every absolute path tried.
func TestInputPaths(t *testing.T) {
	root := t.TempDir()
	specs := filepath.Join(root, "specs")
	for _, d := range []string{specs, filepath.Join(root, "out", "certs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	nodes := filepath.Join(root, "out", "nodes.env")
	if err := os.WriteFile(nodes, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dirs := []string{specs, root}
	for in, want := range map[string]string{
		"out/nodes.env": nodes, "out/certs": filepath.Join(root, "out", "certs"), nodes: nodes, "../out/nodes.env": nodes,
	} {
		if got, err := resolveInput("nodes", in, dirs); err != nil || got != want {
			t.Errorf("resolveInput(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := resolveInput("nodes", "runbook/nodes.env", dirs)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(root, "runbook", "nodes.env")) || !strings.Contains(err.Error(), filepath.Join(specs, "runbook", "nodes.env")) {
		t.Errorf("missing file: %v, want both absolute paths tried", err)
	}
	if r, ok := moduleRoot(mustGetwd(t)); !ok || filepath.Base(mustGetwd(t)) != "specs" || r != filepath.Dir(mustGetwd(t)) {
		t.Errorf("moduleRoot from %s = %q, %v", mustGetwd(t), r, ok)
	}
}

func mustGetwd(t *testing.T) string {
	d, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return d
}
