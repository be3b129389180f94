package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
)

type files struct{ ca, cert, key, id, dir string }

func fixture(t testing.TB) files {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("test client CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueClient("clientcheck", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := files{ca: filepath.Join(dir, "ca.crt"), dir: dir, id: filepath.Join(dir, "me.id")}
	if err := os.WriteFile(f.ca, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if f.cert, f.key, err = pki.WriteFiles(dir, "client", leaf.CertPEM, leaf.KeyPEM); err != nil {
		t.Fatal(err)
	}
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.WriteFile(f.id, id); err != nil {
		t.Fatal(err)
	}
	return f
}

// deadPort is a loopback port nothing listens on.
func deadPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return port
}

func TestBadInput(t *testing.T) {
	f := fixture(t)
	worldReadable := filepath.Join(f.dir, "open.id")
	seed, _ := os.ReadFile(f.id)
	if err := os.WriteFile(worldReadable, seed, 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(f.dir, "garbage.id")
	if err := os.WriteFile(garbage, []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := func(extra ...string) []string {
		return append([]string{"--servers", "tls://127.0.0.1:4251,tls://127.0.0.1:4252",
			"--ca", f.ca, "--cert", f.cert, "--key", f.key, "--identity", f.id}, extra...)
	}
	with := func(flag, value string) []string {
		a := good()
		i := slices.Index(a, flag)
		a[i+1] = value
		return a
	}
	missing := filepath.Join(f.dir, "missing")
	cases := []struct {
		name string
		args []string
		want string // in the one stderr line
	}{
		{"no args", nil, "--servers is required"},
		{"unknown flag", good("--bogus"), "bogus"},
		{"positional", good("extra"), "unexpected argument"},
		{"nats scheme", with("--servers", "nats://127.0.0.1:4222"), "tls://HOST:PORT"},
		{"no port", with("--servers", "tls://127.0.0.1"), "tls://HOST:PORT"},
		{"bad port", with("--servers", "tls://127.0.0.1:99999"), "bad port"},
		{"only commas", with("--servers", ", ,"), "no tls://"},
		{"one bad seed", with("--servers", "tls://127.0.0.1:4251,127.0.0.1:4252"), "tls://HOST:PORT"},
		{"missing ca", with("--ca", missing), "--ca"},
		{"missing cert", with("--cert", missing), "--cert"},
		{"missing key", with("--key", missing), "--key"},
		{"no cert flag", with("--cert", ""), "--cert is required"},
		{"cert is not a cert", with("--cert", f.ca), ""},
		{"missing identity", with("--identity", missing), "identity file"},
		{"world-readable identity", with("--identity", worldReadable), "readable by others"},
		{"garbage identity", with("--identity", garbage), "not an nkey user seed"},
		{"count 0", good("--count", "0"), "--count 0"},
		{"count negative", good("--count", "-5"), "--count -5"},
		{"rate negative", good("--rate", "-1"), "--rate"},
		{"rate NaN", good("--rate", "NaN"), "--rate NaN"},
		{"rate Inf", good("--rate", "+Inf"), "--rate +Inf"},
		{"rate -Inf", good("--rate", "-Inf"), "--rate -Inf"},
		{"count 1e12 spelt out", good("--count", "1000000000000"), "at most 10000000"},
		{"count 1e12", good("--count", "1e12"), "-count"},
		{"count just over", good("--count", "10000001"), "at most"},
		{"timeout zero", good("--timeout", "0s"), "--timeout"},
		{"api and api-port", good("--api", "https://127.0.0.1:8471", "--api-port", "8471"), "not both"},
		{"api http", good("--api", "http://127.0.0.1:8471"), "https://HOST:PORT"},
		{"api-port range", good("--api-port", "0"), "--api-port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(c.args, &out, &errb)
			if code != exitBadInput {
				t.Fatalf("exit %d, want %d; stderr %q", code, exitBadInput, errb.String())
			}
			msg := errb.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "clientcheck: ") {
				t.Fatalf("stderr is not one line: %q", msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Fatalf("stderr %q lacks %q", msg, c.want)
			}
			if out.Len() != 0 {
				t.Fatalf("stdout %q", out.String())
			}
			if strings.Contains(msg, "SU") && strings.Contains(msg, string(seed[:10])) {
				t.Fatal("stderr shows the seed")
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != exitOK || !strings.Contains(errb.String(), "--servers") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}

// TestRunFailsOnUnreachableCluster: good input, nothing listening: the run
// fails (exit 1), it is not bad input, and the report is still printed.
func TestRunFailsOnUnreachableCluster(t *testing.T) {
	f := fixture(t)
	p := deadPort(t)
	var out, errb bytes.Buffer
	code := run([]string{"--servers", "tls://127.0.0.1:" + p, "--api-port", deadPort(t),
		"--ca", f.ca, "--cert", f.cert, "--key", f.key, "--identity", f.id, "--count", "3", "--json", "--timeout", "10s"}, &out, &errb)
	if code != exitFailed {
		t.Fatalf("exit %d, want 1; stderr %q", code, errb.String())
	}
	if !strings.Contains(out.String(), `"ok": false`) || !strings.Contains(out.String(), "connection refused") {
		t.Fatalf("stdout %s", out.String())
	}
}

func TestAPIURLsFor(t *testing.T) {
	servers, err := parseServers(" tls://127.0.0.1:4251, tls://[::1]:4252,tls://n3.example:4250 ")
	if err != nil {
		t.Fatal(err)
	}
	got := apiURLsFor(servers, 8470)
	want := []string{"https://127.0.0.1:8470", "https://[::1]:8470", "https://n3.example:8470"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	apis, err := parseAPIURLs("https://127.0.0.1:8471/,https://127.0.0.1:8472")
	if err != nil || !slices.Equal(apis, []string{"https://127.0.0.1:8471", "https://127.0.0.1:8472"}) {
		t.Fatalf("%v %v", apis, err)
	}
}
