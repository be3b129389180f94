package specs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/sshtarget"
	"github.com/unibus/clusterkit/runbook/deploy"
)

// Runbook sections "Stage the nodes" and the rolling upgrade: the deploy
// tool against real hosts over SSH (ssh target only).
var _ = Describe("Stage the nodes and roll upgrades", Ordered, func() {
	var (
		env   *Env
		hosts *sshtarget.Cluster
		files []string
	)

	BeforeAll(func() {
		if *flagTarget != "ssh" {
			Skip("the deploy tool works on SSH hosts: run with --target=ssh (make test-vps)")
		}
		env = NewEnv("deploy", chaos.ClusterSpec{})
		hosts = env.Cluster.(*sshtarget.Cluster)
		plans, err := deploy.BuildPlans(hosts.Topology(), deploy.Material{CertsDir: *flagCerts})
		Expect(err).NotTo(HaveOccurred())
		for _, f := range plans[0].Files {
			files = append(files, f.Path)
		}
	})

	// runbook runs the deploy tool from the repository root.
	runbook := func(ctx context.Context, args ...string) chaos.CLIResult {
		GinkgoHelper()
		bin := *flagRunbook
		if bin == "" {
			bin = filepath.Join(filepath.Dir(suite.binary), "runbook")
		}
		args = append(args, "--nodes", abs(*flagNodes), "--certs", abs(*flagCerts))
		if *flagSSHConfig != "" {
			args = append(args, "-F", *flagSSHConfig)
		}
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = ".." // the repository root: deploy cross-builds ./membershipd
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		r := chaos.CLIResult{Stdout: out.String(), Stderr: errb.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.ExitCode = ee.ExitCode()
		} else {
			Expect(err).NotTo(HaveOccurred())
		}
		GinkgoWriter.Printf("$ runbook %v -> exit %d\n%s%s", args, r.ExitCode, r.Stdout, r.Stderr)
		return r
	}

	// snapshot is every deployed file's mode, owner, mtime and checksum,
	// plus the service's main PID, on every host.
	snapshot := func(ctx context.Context) map[string]string {
		GinkgoHelper()
		out := map[string]string{}
		for _, n := range env.Cluster.Nodes() {
			sn := n.(*sshtarget.Node)
			cmd := "for f in " + strings.Join(files, " ") + "; do stat -c '%n %a %U:%G %Y' \"$f\"; sha256sum \"$f\"; done; systemctl show -p MainPID " + deploy.UnitName
			r, err := sn.Sudo(ctx, cmd)
			Expect(err).NotTo(HaveOccurred())
			Expect(r.ExitCode).To(Equal(0), r.Stderr)
			out[n.Name()] = r.Stdout
		}
		return out
	}

	It("prints the full plan without --yes and changes nothing; refuses placeholders", Claim("claim:deploy-dry-run"), func(ctx SpecContext) {
		before := snapshot(ctx)
		r := runbook(ctx, "deploy")
		Expect(r.ExitCode).To(Equal(0), r.Stderr)
		for _, n := range env.Cluster.Nodes() {
			Expect(r.Stdout).To(ContainSubstring("== " + n.Name() + " "))
		}
		for _, f := range files {
			Expect(strings.Count(r.Stdout, "write  "+f)).To(Equal(len(env.Cluster.Nodes())), f)
		}
		Expect(r.Stdout).To(MatchRegexp(`server\.key\s+mode 0600`))
		Expect(r.Stdout).To(ContainSubstring("dry run: nothing was changed"))
		Expect(snapshot(ctx)).To(Equal(before), "the dry run changed a host")

		By("a nodes.env with a placeholder left is refused, naming it")
		bad := filepath.Join(env.Dir, "nodes.env")
		raw, err := os.ReadFile(*flagNodes)
		Expect(err).NotTo(HaveOccurred())
		lines := strings.Split(string(raw), "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, "NODE_1=") {
				f := strings.Fields(strings.TrimPrefix(l, "NODE_1="))
				lines[i] = fmt.Sprintf("NODE_1=%s %s <%s_PUBLIC_IP> %s", f[0], f[1], strings.ToUpper(f[0]), f[3])
			}
		}
		Expect(os.WriteFile(bad, []byte(strings.Join(lines, "\n")), 0o644)).To(Succeed())
		for _, cmd := range []string{"deploy", "start", "verify"} {
			bin := filepath.Join(filepath.Dir(suite.binary), "runbook")
			res, err := exec.CommandContext(ctx, bin, cmd, "--nodes", bad, "--certs", abs(*flagCerts)).CombinedOutput()
			Expect(err).To(HaveOccurred(), "runbook %s with a placeholder", cmd)
			Expect(string(res)).To(ContainSubstring("placeholder"))
			Expect(string(res)).To(ContainSubstring("_PUBLIC_IP>"))
		}
		Expect(snapshot(ctx)).To(Equal(before))
	})

	It("stages everything atomically with secrets 0600, starts nothing, and a second run changes nothing", Claim("claim:deploy-apply"), WritesHosts, func(ctx SpecContext) {
		first := env.Cluster.Nodes()[0].(*sshtarget.Node)
		By("converging every host first (the binary built here may be newer)")
		conv := runbook(ctx, "deploy", "--yes")
		Expect(conv.ExitCode).To(Equal(0), conv.Stderr)
		By("drifting one file on one host")
		r, err := first.Sudo(ctx, "echo '# drift' >> "+deploy.EnvPath)
		Expect(err).NotTo(HaveOccurred())
		Expect(r.ExitCode).To(Equal(0))
		before := snapshot(ctx)

		out := runbook(ctx, "deploy", "--yes")
		Expect(out.ExitCode).To(Equal(0), out.Stderr)
		Expect(out.Stdout).To(ContainSubstring("[" + first.Name() + "] wrote " + deploy.EnvPath))
		for _, n := range Others(env.Cluster, first) {
			Expect(out.Stdout).To(ContainSubstring("[" + n.Name() + "] up to date: nothing changed"))
		}
		after := snapshot(ctx)
		pid := func(s string) string { return s[strings.LastIndex(s, "MainPID="):] }
		for _, n := range env.Cluster.Nodes() {
			Expect(pid(after[n.Name()])).To(Equal(pid(before[n.Name()])), "deploy restarted %s", n.Name())
		}

		By("secrets 0600, owned by the service user; no temporary file left")
		for _, n := range env.Cluster.Nodes() {
			sn := n.(*sshtarget.Node)
			r, err := sn.Sudo(ctx, "stat -c '%n %a %U' /opt/unibus/tls/server.key /opt/unibus/tls/route.key "+deploy.RouteSecretPath+"; ls -a /opt/unibus /opt/unibus/tls /opt/unibus/secrets")
			Expect(err).NotTo(HaveOccurred())
			for _, f := range []string{"/opt/unibus/tls/server.key", "/opt/unibus/tls/route.key", deploy.RouteSecretPath} {
				Expect(r.Stdout).To(ContainSubstring(f+" 600 "+deploy.ServiceUser), n.Name())
			}
			Expect(r.Stdout).NotTo(ContainSubstring(".tmp"), "leftover temp file on %s", n.Name())
		}

		By("a second run changes nothing")
		out = runbook(ctx, "deploy", "--yes")
		Expect(out.ExitCode).To(Equal(0), out.Stderr)
		Expect(out.Stdout).To(ContainSubstring("every host already up to date; nothing changed"))
		Expect(snapshot(ctx)).To(Equal(after))
	})

	It("rolls a new binary one node at a time with a backup, and stops at the first node that does not return to health",
		Claim("claim:rolling-upgrade"), Disruptive, WritesHosts, Slow, func(ctx SpecContext) {
			// Whatever happens below, the operator's binary goes back on
			// every node (the suite's snapshot), one node at a time.
			DeferCleanup(func(ctx SpecContext) { restoreHosts(ctx) }, NodeTimeout(time.Duration(len(env.Cluster.Nodes())+1)*(restartBudget+30*time.Second)))
			version := "spec-upgrade-" + randomHex(4)
			newBin := filepath.Join(env.Dir, "membershipd-new")
			build := exec.CommandContext(ctx, "go", "build", "-o", newBin, "-ldflags", "-X github.com/unibus/clusterkit/membershipd/node.Version="+version, "./membershipd")
			build.Dir = ".."
			build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
			b, err := build.CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), string(b))

			r := runbook(ctx, "rollout", "--binary", newBin)
			Expect(r.ExitCode).To(Equal(0), r.Stderr)
			for _, n := range env.Cluster.Nodes() {
				p := env.Health.Get(ctx, n.HealthzURL())
				Expect(p.Code).To(Equal(200), p.String())
				Expect(p.Health.Version).To(Equal(version), n.Name())
				res, err := n.(*sshtarget.Node).Sudo(ctx, "test -x "+deploy.BinaryPath+".bak")
				Expect(err).NotTo(HaveOccurred())
				Expect(res.ExitCode).To(Equal(0), "backup on %s", n.Name())
			}
			order := strings.Index(r.Stdout, "["+env.Cluster.Nodes()[0].Name()+"] healthy") < strings.Index(r.Stdout, "["+env.Cluster.Nodes()[1].Name()+"] rollout")
			Expect(order).To(BeTrue(), "one node at a time: the second starts after the first is healthy")

			By("a binary that never becomes healthy stops the roll at the first node")
			broken := filepath.Join(env.Dir, "membershipd-broken")
			Expect(os.WriteFile(broken, []byte("#!/bin/sh\necho broken build >&2\nexit 1\n"), 0o755)).To(Succeed())
			first := env.Cluster.Nodes()[0]
			r = runbook(ctx, "rollout", "--binary", broken, "--wait", "20s")
			Expect(r.ExitCode).To(Equal(1))
			Expect(r.Stderr).To(ContainSubstring("stopped at " + first.Name()))
			Expect(r.Stderr).To(ContainSubstring(".bak"), "says how to roll back")
			for _, n := range Others(env.Cluster, first) {
				p := env.Health.Get(ctx, n.HealthzURL())
				Expect(p.Code).To(Equal(200), "%s untouched and serving: %s", n.Name(), p)
				Expect(p.Health.Version).To(Equal(version), "%s kept its binary", n.Name())
			}

			By("restoring the operator's binary: every node healthy on the operator's version, the backup the operator's")
			res := restoreHosts(ctx)
			AddReportEntry("rolling upgrade: restore the operator's binary (nodes restarted one at a time)",
				fmt.Sprintf("%s, restarted %v", res.Took.Round(time.Millisecond), res.Restarted))
			Expect(res.Restarted).To(HaveLen(len(env.Cluster.Nodes())), "every node ran the spec's build")
			expectOperatorsVersion(ctx, env)
		})
})

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}
