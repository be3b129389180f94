package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/unibus/clusterkit/membershipd/pki"
)

// fixture is a topology on loopback addresses (nothing is dialled by these
// tests), one with a placeholder, certificates and an ssh_config whose
// User disagrees with nodes.env.
type fixture struct {
	dir, good, bad, certs, conflict, agree, bin string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	t.Setenv("HOME", t.TempDir()) // never the operator's ~/.ssh
	dir := t.TempDir()
	f := fixture{dir: dir}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	head := "CLUSTER_NAME=t\nKV_REPLICAS=3\n"
	f.good = write("good.env", head+"NODE_1=n1 h1 127.0.0.1 root\nNODE_2=n2 h2 127.0.0.2 ubuntu\nNODE_3=n3 h3 127.0.0.3 -\n")
	f.bad = write("bad.env", head+"NODE_1=n1 h1 <N1_PUBLIC_IP> root\nNODE_2=n2 h2 127.0.0.2 root\nNODE_3=n3 h3 127.0.0.3 root\n")
	f.conflict = write("ssh_config_conflict", "Host h2\n  User admin\n")
	f.agree = write("ssh_config_agree", "Host h2\n  User ubuntu\nHost h3\n  User deployer\n")
	f.bin = write("membershipd", "not really a binary")
	f.certs = filepath.Join(dir, "certs")
	if _, err := pki.MintCluster(f.certs, []pki.NodeSpec{{Name: "n1", Hosts: []string{"127.0.0.1"}}, {Name: "n2", Hosts: []string{"127.0.0.2"}}, {Name: "n3", Hosts: []string{"127.0.0.3"}}}, false); err != nil {
		t.Fatal(err)
	}
	return f
}

func runbook(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// Flags are honoured before and after the subcommand and positional words.
// Each case points --nodes or -F at a file that makes the command stop
// with exit 2 naming that file, before any host is contacted: a flag that
// was dropped (the old behaviour after `user add`) falls back to
// runbook/nodes.env or ~/.ssh/config and names another file.
func TestFlagsInAnyPosition(t *testing.T) {
	f := newFixture(t)
	add := []string{"--handle", "h", "--role", "admin", "--sign-pub", hex64}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	l := func(s ...string) []string { return s }
	cases := []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{"user add: flags after the words (the issue's order)", cat(l("user", "add"), add, l("--nodes", f.bad, "-F", f.conflict)), l(f.bad, "<N1_PUBLIC_IP>")},
		{"user add: host flags between user and add", cat(l("user", "--nodes", f.bad, "add"), add), l(f.bad)},
		{"user add: host flags before the command", cat(l("--nodes", f.bad, "user", "add"), add), l(f.bad)},
		{"user add: -F after the words", cat(l("user", "add"), add, l("--nodes", f.good, "-F", f.conflict)), l(f.conflict, `"ubuntu"`, "User admin")},
		{"user list: -F after", l("user", "list", "--nodes", f.good, "-F", f.conflict), l(f.conflict)},
		{"user list: -F before", l("user", "-F", f.conflict, "--nodes", f.good, "list", "--all"), l(f.conflict)},
		{"user revoke: flags after the key", l("user", "revoke", hex64, "--nodes", f.bad), l(f.bad)},
		{"user revoke: flags before the key", l("user", "revoke", "--nodes", f.bad, hex64), l(f.bad)},
		{"scale-r3", l("scale-r3", "--nodes", f.bad), l(f.bad)},
		{"deploy", l("deploy", "--yes", "--nodes", f.bad), l(f.bad)},
		{"start", l("start", "--timeout", "1s", "--nodes", f.bad), l(f.bad)},
		{"stop", l("--nodes", f.bad, "stop"), l(f.bad)},
		{"verify", l("verify", "-F", f.conflict, "--nodes", f.good), l(f.conflict)},
		{"rollout", l("rollout", "--binary", f.bin, "--nodes", f.bad), l(f.bad)},
		{"certs", l("certs", "--dir", f.certs, "--nodes", f.good), l("already exist in " + f.certs)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runbook(c.args...)
			if code != 2 {
				t.Fatalf("runbook %q: exit %d, want 2; stderr:\n%s", c.args, code, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("runbook %q: stderr does not name %q:\n%s", c.args, w, stderr)
				}
			}
		})
	}
}

// A command that succeeds offline, in both orders: the dry run reads
// --nodes, --certs and --binary wherever they are, and shows the login user
// it will use.
func TestDeployDryRunBothOrders(t *testing.T) {
	f := newFixture(t)
	for _, args := range [][]string{
		{"deploy", "--nodes", f.good, "--certs", f.certs, "--binary", f.bin, "-F", f.agree},
		{"--nodes", f.good, "deploy", "--binary", f.bin, "-F", f.agree, "--certs", f.certs},
	} {
		code, stdout, stderr := runbook(args...)
		if code != 0 {
			t.Fatalf("runbook %q: exit %d:\n%s", args, code, stderr)
		}
		for _, w := range []string{"== n1 (ssh h1 as root, 127.0.0.1)", "== n2 (ssh h2 as ubuntu, 127.0.0.2)", "== n3 (ssh h3 as ssh_config's User, 127.0.0.3)", "dry run: nothing was changed"} {
			if !strings.Contains(stdout, w) {
				t.Errorf("runbook %q: no %q in:\n%s", args, w, stdout)
			}
		}
	}
}

// Unknown flags, flags of another subcommand and stray words are exit 2
// naming them, in every position, before anything is contacted.
func TestBadFlagsExit2(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"certs", "--bogus"}, "-bogus"},
		{[]string{"deploy", "--yes", "--bogus"}, "-bogus"},
		{[]string{"start", "--bogus"}, "-bogus"},
		{[]string{"stop", "--bogus", "1"}, "-bogus"},
		{[]string{"verify", "--bogus"}, "-bogus"},
		{[]string{"scale-r3", "--bogus"}, "-bogus"},
		{[]string{"rollout", "--bogus"}, "-bogus"},
		{[]string{"user", "add", "--handle", "h", "--bogus"}, "-bogus"},
		{[]string{"user", "list", "--bogus"}, "-bogus"},
		{[]string{"user", "revoke", hex64, "--bogus"}, "-bogus"},
		{[]string{"local-cluster", "--bogus"}, "-bogus"},
		{[]string{"sim-nodes-env", "--bogus"}, "-bogus"},
		{[]string{"vps-sim", "status", "--bogus"}, "-bogus"},
		{[]string{"user", "list", "--handle", "h", "--nodes", f.good}, "flag -handle does not apply to `user list`"},
		{[]string{"user", "revoke", hex64, "--sign-pub", hex64}, "flag -sign-pub does not apply to `user revoke`"},
		{[]string{"user", "add", "--handle", "h", "--sign-pub", "xyz", "--nodes", f.good}, "--sign-pub"},
		{[]string{"user", "add", "extra", "--handle", "h", "--sign-pub", hex64}, `unexpected argument "extra"`},
		{[]string{"user", "revoke", "--nodes", f.good}, "want exactly one 64-hex sign key"},
		{[]string{"user", "frob"}, `unknown subcommand "frob"`},
		{[]string{"deploy", "extra"}, `unexpected argument "extra"`},
		{[]string{"user", "add", "--handle", "h", "--sign-pub", hex64, "--on", "n9", "--nodes", f.good}, "--on n9: no such node"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, _, stderr := runbook(c.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, c.want) {
				t.Fatalf("stderr does not name %q:\n%s", c.want, stderr)
			}
		})
	}
}

// Go's flag package takes a `quoted` word in a usage string as the flag's
// argument name: "-certs runbook certs". Every -h shows one-word names.
func TestUsageNamesNotMangled(t *testing.T) {
	flagLine := regexp.MustCompile(`^  -[A-Za-z][\w-]*( [a-z]+)?$`)
	for _, cmd := range [][]string{{"certs"}, {"deploy"}, {"start"}, {"stop"}, {"verify"}, {"scale-r3"}, {"rollout"}, {"user"}, {"local-cluster"}, {"sim-nodes-env"}} {
		code, _, stderr := runbook(append(cmd, "-h")...)
		if code != 0 {
			t.Fatalf("%v -h: exit %d", cmd, code)
		}
		n := 0
		for _, line := range strings.Split(stderr, "\n") {
			if strings.HasPrefix(line, "  -") {
				n++
				if !flagLine.MatchString(line) {
					t.Errorf("%v -h: mangled flag line %q", cmd, line)
				}
			}
		}
		if n == 0 {
			t.Errorf("%v -h printed no flags:\n%s", cmd, stderr)
		}
	}
}

// The built binary, as the operator runs it: flags after `user add` are
// honoured, and an unknown one is exit 2 naming it.
func TestBinaryFlagOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	// Built before newFixture moves HOME (the go build cache lives there).
	bin := filepath.Join(t.TempDir(), "runbook")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f := newFixture(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"user", "add", "--handle", "h", "--role", "admin", "--sign-pub", hex64, "--nodes", f.bad, "-F", f.conflict}, f.bad},
		{[]string{"user", "add", "--handle", "h", "--role", "admin", "--sign-pub", hex64, "--nodes", f.good, "-F", f.conflict}, f.conflict},
		{[]string{"user", "add", "--handle", "h", "--nodes", f.good, "--frob"}, "flag provided but not defined: -frob"},
	} {
		out, err := exec.Command(bin, c.args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("runbook %q: %v, want exit 2 naming %q:\n%s", c.args, err, c.want, out)
		}
	}
}
