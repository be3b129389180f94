package specs

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/sshtarget"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/runbook/deploy"
	"github.com/unibus/clusterkit/runbook/sshx"
)

// Runbook sections "Stage the nodes" to "Add users": every command that
// changes hosts connects to all of them first (ssh target only).
var _ = Describe("Preflight before changing any host", Ordered, func() {
	var env *Env

	BeforeAll(func() {
		if *flagTarget != "ssh" {
			Skip("the preflight is about SSH hosts: run with --target=ssh (make test-vps)")
		}
		env = NewEnv("preflight", chaos.ClusterSpec{})
	})

	// runbookWith runs the deploy tool from the repository root with the
	// suite's topology, certificates and ssh config, plus extra.
	runbookWith := func(ctx context.Context, args ...string) chaos.CLIResult {
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
		cmd.Dir = ".."
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

	// snapshot is, per host over the good ssh config: the sha256 of every
	// file under /opt/unibus but the JetStream data (which changes every
	// heartbeat), the unit file's, the service's state and main PID; plus
	// the user list.
	snapshot := func(ctx context.Context) map[string]string {
		GinkgoHelper()
		out := map[string]string{}
		for _, n := range env.Cluster.Nodes() {
			sn := n.(*sshtarget.Node)
			cmd := "find " + deploy.Root + " -path " + deploy.Root + "/local_files -prune -o -type f -print0 | sort -z | xargs -0 sha256sum; sha256sum " +
				deploy.UnitPath + "; systemctl show -p ActiveState -p MainPID " + deploy.UnitName
			r, err := sn.Sudo(ctx, cmd)
			Expect(err).NotTo(HaveOccurred())
			Expect(r.ExitCode).To(Equal(0), r.Stderr)
			Expect(r.Stdout).To(ContainSubstring(deploy.BinaryPath))
			out[n.Name()] = r.Stdout
		}
		first := env.Cluster.Nodes()[0]
		r, err := env.Cluster.CLI(ctx, first, "user", "list", "--store", "kv", "--json")
		Expect(err).NotTo(HaveOccurred())
		Expect(r.ExitCode).To(Equal(0), r.Stderr)
		out["users"] = r.Stdout
		return out
	}

	It("connects to every host first and changes nothing anywhere if one fails", Claim("claim:deploy-preflight"), func(ctx SpecContext) {
		hosts := env.Cluster.(*sshtarget.Cluster)
		topo := hosts.Topology()
		// The victim: a host off port 22 when there is one (the
		// [host]:port form of the fix), else the last.
		victim := topo.Nodes[len(topo.Nodes)-1]
		var name string
		var files []string
		offPort22 := false
		for _, n := range topo.Nodes {
			t, err := sshx.Resolve(n.Alias, sshx.Options{ConfigFile: *flagSSHConfig, User: n.User})
			Expect(err).NotTo(HaveOccurred())
			files = append(files, t.KnownHosts...)
			host := t.HostName
			if t.HostKeyAlias != "" {
				host = t.HostKeyAlias
			}
			if !offPort22 && (t.Port != 22 || n.Name == victim.Name) {
				victim = n
				name = knownhosts.Normalize(net.JoinHostPort(host, strconv.Itoa(t.Port)))
				offPort22 = t.Port != 22
			}
		}

		By("a temp copy of known_hosts with a wrong key for " + victim.Name + " (" + name + "); the real one is never touched")
		var all []byte
		seen := map[string]bool{}
		for _, f := range files {
			if seen[f] {
				continue
			}
			seen[f] = true
			b, err := os.ReadFile(f)
			if err == nil {
				all = append(append(all, b...), '\n')
			}
		}
		kh := filepath.Join(env.Dir, "known_hosts")
		Expect(os.WriteFile(kh, all, 0o600)).To(Succeed())
		// ssh-keygen -R also removes hashed entries.
		out, err := exec.CommandContext(ctx, "ssh-keygen", "-R", name, "-f", kh).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		Expect(err).NotTo(HaveOccurred())
		wrong, err := ssh.NewPublicKey(pub)
		Expect(err).NotTo(HaveOccurred())
		f, err := os.OpenFile(kh, os.O_APPEND|os.O_WRONLY, 0o600)
		Expect(err).NotTo(HaveOccurred())
		_, err = f.WriteString(knownhosts.Line([]string{name}, wrong) + "\n")
		Expect(err).NotTo(HaveOccurred())
		Expect(f.Close()).To(Succeed())

		id, err := identity.Generate()
		Expect(err).NotTo(HaveOccurred())
		handle := SpecHandle("preflight")
		DeferCleanup(func(ctx SpecContext) {
			// Only if the preflight let the add through: leave no user behind.
			_, _ = env.Cluster.CLI(ctx, env.Cluster.Nodes()[0], "user", "revoke", "--store", "kv", id.SignPub())
		})

		before := snapshot(ctx)
		for _, args := range [][]string{
			{"deploy", "--yes", "--binary", suite.binary},
			{"start"},
			{"rollout", "--binary", suite.binary, "--wait", "30s"},
			{"user", "add", "--handle", handle, "--role", "member", "--sign-pub", id.SignPub()},
		} {
			By("runbook " + args[0] + " with " + victim.Name + "'s key wrong")
			r := runbookWith(ctx, append(args, "--known-hosts", kh)...)
			Expect(r.ExitCode).To(Equal(1), "runbook %v must fail the preflight", args)
			Expect(r.Stderr).To(ContainSubstring("preflight failed on " + victim.Name + " "))
			Expect(r.Stderr).To(ContainSubstring("nothing was changed on any host"))
			Expect(r.Stderr).To(ContainSubstring("HOST KEY CHANGED"))
			Expect(r.Stderr).To(ContainSubstring("ssh-keygen -R '" + name + "'"))
			for _, n := range topo.Nodes {
				if n.Name != victim.Name {
					Expect(r.Stderr).NotTo(ContainSubstring("["+n.Name+"]"), "a good host reported as failed")
				}
			}
			Expect(r.Stdout).NotTo(ContainSubstring("wrote"))
			Expect(snapshot(ctx)).To(Equal(before), "runbook %v changed a host", args)
		}

		By("the same commands with the real known_hosts pass the preflight (the check is the key, not the flag)")
		r := runbookWith(ctx, "start")
		Expect(r.ExitCode).To(Equal(0), r.Stderr)
		Expect(r.Stdout).To(ContainSubstring(fmt.Sprintf("preflight: all %d hosts reachable", len(topo.Nodes))))
	})
})
