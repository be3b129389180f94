package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// Bad input must give one clear line on stderr and exit 2, before anything
// starts or is written.
func TestServeBadInput(t *testing.T) {
	dir := t.TempDir()
	l, err := pki.MintCluster(filepath.Join(dir, "tls"), []pki.NodeSpec{{Name: "n1"}, {Name: "n2"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	n1, n2 := l.Nodes["n1"], l.Nodes["n2"]
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)
	loose := filepath.Join(dir, "loose.pass")
	if err := os.WriteFile(loose, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	good := func(over ...string) []string {
		args := map[string]string{
			"--node-name": "n1", "--nats-store": filepath.Join(dir, "js"),
			"--client-port": "24250", "--route-port": "26250", "--http-port": "28470",
			"--routes":   "nats-route://127.0.0.1:26251,nats-route://127.0.0.1:26252",
			"--tls-cert": n1.ServerCert, "--tls-key": n1.ServerKey, "--ca": l.ClientCACert,
			"--route-cert": n1.RouteCert, "--route-key": n1.RouteKey, "--route-ca": l.RouteCACert,
			"--route-secret-file": l.RouteSecret,
			"--internal-id-file":  filepath.Join(dir, "secrets", "internal.id"),
		}
		for i := 0; i+1 < len(over); i += 2 {
			args[over[i]] = over[i+1]
		}
		var out []string
		for k, v := range args {
			out = append(out, k, v)
		}
		return append([]string{"serve"}, out...)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"serve", "--bogus"}, "flag provided but not defined: -bogus"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"missing node name", good("--node-name", ""), "--node-name is required"},
		{"bad node name", good("--node-name", "a b"), `--node-name "a b"`},
		{"missing certificate", good("--tls-cert", filepath.Join(dir, "nope.crt")), "nope.crt"},
		{"server cert not signed by the client CA", good("--tls-cert", n2.RouteCert, "--tls-key", n2.RouteKey), "not signed by CA"},
		{"route cert not signed by the route CA", good("--route-cert", n1.ServerCert, "--route-key", n1.ServerKey), "not signed by CA"},
		{"route secret missing", good("--route-secret-file", filepath.Join(dir, "missing.pass")), "route secret file"},
		{"route secret readable by others", good("--route-secret-file", loose), "readable by others"},
		{"port in use", good("--client-port", busyPort), "client port 127.0.0.1:" + busyPort + " is not available"},
		{"credentials in routes", good("--routes", "nats-route://u:p@127.0.0.1:26251"), "carries credentials"},
		{"bad route url", good("--routes", "127.0.0.1:26251"), "want nats-route://HOST:PORT"},
		{"replicas above cluster size", good("--kv-replicas", "5"), "--kv-replicas 5"},
		{"bad store", good("--store", "mysql"), `--store "mysql"`},
		{"sqlite without db", good("--store", "sqlite"), "--store sqlite needs --db FILE"},
		{"bus-auth off on a public bind", good("--bus-auth", "off", "--bind", "0.0.0.0"), "--bus-auth off is refused unless --bind is a loopback address"},
		{"unknown bus-auth", good("--bus-auth", "maybe"), `--bus-auth "maybe"`},
		{"js-max-store not a size", good("--js-max-store", "lots"), "js-max-store"},
		{"js-max-store zero", good("--js-max-store", "0"), "js-max-store"},
		{"no room left for rooms", good("--js-max-store", "1GiB", "--control-reserve", "1GiB"), "leaves room for no room"},
		{"room message larger than the room", good("--room-max-bytes", "1MiB", "--room-max-msg-size", "2MiB"), "no message would fit"},
		{"room message size over int32", good("--room-max-msg-size", "4GiB"), "--room-max-msg-size"},
		{"bad sync", good("--sync", "sometimes"), `--sync "sometimes": want always, default or a positive duration`},
		{"negative sync interval", good("--sync", "-5s"), `--sync "-5s"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(c.args, &stdout, &stderr)
			if code != exitBadArgs {
				t.Fatalf("exit %d, want %d; stderr: %s", code, exitBadArgs, stderr.String())
			}
			msg := strings.TrimSpace(stderr.String())
			if strings.Count(msg, "\n") != 0 {
				t.Errorf("want one line, got:\n%s", msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("stderr %q does not mention %q", msg, c.want)
			}
			if strings.Contains(msg, "goroutine") || strings.Contains(msg, "panic") {
				t.Errorf("stack trace in %q", msg)
			}
			if _, err := os.Stat(filepath.Join(dir, "js")); err == nil {
				t.Errorf("store dir created despite bad input")
			}
		})
	}
}

func TestVersionFeatures(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"version", "--features"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, f := range []string{"route-pool-off", "no-advertise", "kv-open-retry"} {
		if !strings.Contains(stdout.String(), f) {
			t.Errorf("version --features lacks %s: %s", f, stdout.String())
		}
	}
}

// validPub is a valid ed25519 public key (of a fixed seed).
var validPub = func() string {
	id, err := identity.FromSeed(make([]byte, 32))
	if err != nil {
		panic(err)
	}
	return id.SignPub()
}()

func TestClientCommandsBadInput(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"kv", "scale", "--replicas", "0"}, "--replicas 0"},
		{[]string{"kv", "frob"}, "kv scale --replicas N"},
		{[]string{"cluster", "report", "--ca", "/nonexistent/ca.crt"}, "/nonexistent/ca.crt"},
		{[]string{"user", "add", "--store", "kv", "--handle", "x", "--role", "member", "--sign-pub", validPub, "--internal-id-file", "/nonexistent/internal.id"}, "/nonexistent/internal.id"},
		{[]string{"user", "list", "--store", "kv", "--internal-id-file", "/nonexistent/internal.id"}, "/nonexistent/internal.id"},
		{[]string{"user", "add", "--store", "kv", "--handle", "x", "--role", "owner", "--sign-pub", validPub}, `unknown role "owner"`},
		{[]string{"user", "add", "--store", "kv", "--handle", "", "--role", "member", "--sign-pub", validPub}, "--handle"},
		{[]string{"user", "add", "--store", "kv", "--handle", "x", "--role", "member", "--sign-pub", "abc"}, "--sign-pub"},
		{[]string{"migrate-to-kv", "--db", "x.db", "--nats-url", "tls://0.0.0.0:1"}, "refusing non-loopback"},
		// Flags after positional words are parsed, not ignored: a bad one is
		// named wherever it is.
		{[]string{"user", "revoke", validPub, "--store", "kv", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"user", "revoke", validPub, "--store", "kv", "--internal-id-file", "/nonexistent/internal.id"}, "/nonexistent/internal.id"},
		{[]string{"user", "revoke", validPub, validPub}, "unexpected argument"},
		{[]string{"user", "list", "extra", "--store", "kv"}, `unexpected argument "extra"`},
		{[]string{"cluster", "report", "extra", "--ca", "/nonexistent/ca.crt"}, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		if code := run(c.args, &stdout, &stderr); code != exitBadArgs {
			t.Errorf("%v: exit %d, want 2 (%s)", c.args, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: stderr %q lacks %q", c.args, stderr.String(), c.want)
		}
	}
}
