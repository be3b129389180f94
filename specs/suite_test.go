// Package specs is the runbook as executable Ginkgo specs: one file per
// runbook section, one It per claim (labelled claim:<id>, see CLAIMS.md).
// Specs only compose the chaos framework; they observe the cluster from
// outside (healthz, real clients, the CLI's exit status and output).
package specs

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/unibus/clusterkit/chaos/report"
)

var (
	flagTarget    = flag.String("target", "inproc", "cluster target: inproc, or ssh (a deployed cluster: --nodes, --certs, --ssh-config)")
	flagNodes     = flag.String("nodes", "", "ssh target: nodes.env")
	flagCerts     = flag.String("certs", "out/certs", "ssh target: the controller's certificates (runbook certs)")
	flagSSHConfig = flag.String("ssh-config", "", "ssh target: ssh_config file (default ~/.ssh/config)")
	flagDisrupt   = flag.Bool("allow-disruptive", false, "ssh target: run specs that stop nodes or cut routes")
	flagWipe      = flag.Bool("allow-wipe", false, "ssh target: run specs that need a fresh cluster by deleting every node's JetStream data (simulated hosts only)")
	flagSimDir    = flag.String("sim-dir", "", "ssh target: the simulated hosts' state dir (enables partition specs)")
	flagRunbook   = flag.String("runbook", "", "prebuilt runbook tool (deploy specs; default: bin/runbook next to --membershipd)")
	flagBinary    = flag.String("membershipd", "", "prebuilt membershipd binary (default: build it into the report dir)")
	flagReportDir = flag.String("report-dir", "../out/specs", "where the checklist and evidence go")
	flagKeep      = flag.Bool("keep-clusters", false, "keep every cluster's data dir, not only those of failed specs")
	flagVerbose   = flag.Bool("node-logs", false, "stream node logs (nats-server and membershipd) to the spec output")
)

// suite holds what every spec shares.
var suite struct {
	binary    string
	reportDir string
	log       *slog.Logger
	failures  int // specs failed so far (counted in ReportAfterEach)
}

func TestSpecs(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "unibus runbook specs")
}

var _ = BeforeSuite(func() {
	dir, err := filepath.Abs(*flagReportDir)
	Expect(err).NotTo(HaveOccurred())
	Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
	suite.reportDir = dir
	lvl := slog.LevelWarn
	if *flagVerbose {
		lvl = slog.LevelInfo
	}
	suite.log = slog.New(slog.NewTextHandler(GinkgoWriter, &slog.HandlerOptions{Level: lvl}))
	if *flagTarget == "ssh" {
		Expect(*flagNodes).NotTo(BeEmpty(), "--target=ssh needs --nodes FILE")
		for _, f := range []string{*flagNodes, *flagCerts} {
			_, err := os.Stat(f)
			Expect(err).NotTo(HaveOccurred(), "--target=ssh")
		}
	}
	suite.binary = *flagBinary
	if suite.binary == "" {
		// The CLI specs run the real binary, as an operator would.
		suite.binary = filepath.Join(dir, "bin", "membershipd")
		start := time.Now()
		out, err := exec.Command("go", "build", "-o", suite.binary, "../membershipd").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "build membershipd: %s", out)
		AddReportEntry("build membershipd", time.Since(start).Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
	}
	if *flagTarget == "ssh" {
		guardHosts() // the live-run safety contract: snapshot now, restore at the end
	}
})

// Disruptive specs, and specs that write to the hosts, never run against
// a live cluster by accident: a run without --allow-disruptive is read-only.
var _ = BeforeEach(func() {
	if *flagTarget != "ssh" || *flagDisrupt {
		return
	}
	if labels := CurrentSpecReport().Labels(); slices.Contains(labels, "disruptive") {
		Skip("disruptive: stops nodes of the deployed cluster; opt in with --allow-disruptive (after the `--`)")
	} else if slices.Contains(labels, "writes-hosts") {
		Skip("writes-hosts: writes files on the deployed hosts; a run without --allow-disruptive is read-only")
	}
})

var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() {
		suite.failures++
	}
})

var _ = ReportAfterSuite("claim checklist", func(r Report) {
	rows := report.Checklist(r, *flagTarget)
	dir := suite.reportDir
	if dir == "" {
		dir, _ = filepath.Abs(*flagReportDir)
	}
	ms := report.Measurements(r)
	if err := report.WriteChecklistFiles(dir, *flagTarget, rows, ms); err != nil {
		fmt.Fprintf(os.Stderr, "write checklist: %v\n", err)
	}
	fmt.Println()
	_ = report.WriteChecklist(os.Stdout, *flagTarget, rows)
	_ = report.WriteMeasurements(os.Stdout, ms)
})
