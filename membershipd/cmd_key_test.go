package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/unibus/clusterkit/chaos/clustertest"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
)

func membershipd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestKeyNew(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "alice.id")
	code, stdout, stderr := membershipd("key", "new", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	pub := strings.TrimSpace(stdout)
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(pub) {
		t.Fatalf("stdout %q: want exactly the 64-hex public key", stdout)
	}
	st, err := os.Stat(out)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v mode %v, want 0600", err, st.Mode())
	}
	id, err := identity.LoadFile(out)
	if err != nil || id.SignPub() != pub {
		t.Fatalf("the file's key %v does not match the printed one (%v)", id, err)
	}
	// Nothing secret on either stream: not the seed, not the file content.
	raw, _ := os.ReadFile(out)
	for _, s := range []string{strings.TrimSpace(string(raw)), string(id.Seed())} {
		if strings.Contains(stdout+stderr, s) {
			t.Fatal("key new printed the secret")
		}
	}

	// Never overwrites: exit 2, file unchanged.
	code, _, stderr = membershipd("key", "new", "--out", out)
	after, _ := os.ReadFile(out)
	if code != exitBadArgs || !strings.Contains(stderr, "refusing to overwrite") || !bytes.Equal(raw, after) {
		t.Fatalf("second key new: exit %d, stderr %q, file changed %t", code, stderr, !bytes.Equal(raw, after))
	}
	for _, args := range [][]string{{"key", "new"}, {"key", "new", "--bogus"}, {"key"}, {"key", "new", "--out", filepath.Join(dir, "b.id"), "extra"}} {
		if code, _, stderr := membershipd(args...); code != exitBadArgs {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, stderr)
		}
	}

	// The printed key is what user add --sign-pub takes (real SQLite store,
	// flags after the subcommand words in both orders).
	db := filepath.Join(dir, "users.db")
	if code, stdout, stderr := membershipd("user", "add", "--handle", "alice", "--role", "member", "--sign-pub", pub, "--db", db); code != 0 {
		t.Fatalf("user add --sign-pub <key new output>: exit %d: %s%s", code, stdout, stderr)
	}
	code, stdout, stderr = membershipd("user", "list", "--db", db, "--json")
	var users []store.User
	if code != 0 || json.Unmarshal([]byte(stdout), &users) != nil || len(users) != 1 || users[0].SignPub != pub {
		t.Fatalf("user list: exit %d %s %s", code, stdout, stderr)
	}
}

// user list hides revoked spec-* users unless --all, on the live KV of a
// real (3-node, in-process) cluster; flags after positional words are
// honoured (`user revoke HEX --store kv ...`).
func TestUserListHidesRevokedSpecUsers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	c, _ := clustertest.Inproc(t, inproc.Options{Size: 3, KVReplicas: 3})
	tf := c.TLS()
	n := c.Nodes()[0]
	port := strings.TrimSuffix(n.HealthzURL()[strings.LastIndex(n.HealthzURL(), ":")+1:], "/healthz")
	conn := []string{"--store", "kv", "--nats-url", n.ClientURL(), "--ca", tf.ClientCA, "--cert", tf.OperatorCert, "--key", tf.OperatorKey,
		"--internal-id-file", tf.InternalID[n.Name()], "--http-port", port}
	keys := map[string]string{}
	for _, h := range []string{"alice", "spec-old", "spec-live", "gone"} {
		id, err := identity.Generate()
		if err != nil {
			t.Fatal(err)
		}
		keys[h] = id.SignPub()
		if code, out, errs := membershipd(append([]string{"user", "add", "--handle", h, "--role", "member", "--sign-pub", id.SignPub()}, conn...)...); code != 0 {
			t.Fatalf("user add %s: exit %d %s%s", h, code, out, errs)
		}
	}
	for _, h := range []string{"spec-old", "gone"} {
		// The key first, the flags after it.
		if code, out, errs := membershipd(append([]string{"user", "revoke", keys[h]}, conn...)...); code != 0 {
			t.Fatalf("user revoke %s: exit %d %s%s", h, code, out, errs)
		}
	}
	list := func(extra ...string) (map[string]string, string) {
		t.Helper()
		code, out, errs := membershipd(append(append([]string{"user", "list", "--json"}, conn...), extra...)...)
		var users []store.User
		if code != 0 || json.Unmarshal([]byte(out), &users) != nil {
			t.Fatalf("user list %v: exit %d %s%s", extra, code, out, errs)
		}
		got := map[string]string{}
		for _, u := range users {
			got[u.Handle] = string(u.Status)
		}
		return got, errs
	}
	got, note := list()
	want := map[string]string{"alice": "active", "spec-live": "active", "gone": "revoked"}
	if len(got) != len(want) || got["alice"] != "active" || got["spec-live"] != "active" || got["gone"] != "revoked" {
		t.Fatalf("user list = %v, want %v (the revoked spec- user hidden, the operator's revoked user shown)", got, want)
	}
	if !strings.Contains(note, "1 revoked spec-* users hidden (--all shows them)") {
		t.Errorf("no note about the hidden user on stderr: %q", note)
	}
	got, _ = list("--all")
	if len(got) != 4 || got["spec-old"] != "revoked" {
		t.Fatalf("user list --all = %v, want all four", got)
	}

	// On the same cluster: `cluster stepdown` hands the users stream's
	// leadership to another replica, as `cluster report` then shows.
	cconn := conn[2:] // the cluster commands take no --store
	leader := func() string {
		t.Helper()
		_, out, errs := membershipd(append([]string{"cluster", "report", "--json"}, cconn...)...)
		var r clusterinfo.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("cluster report: %v: %s%s", err, out, errs)
		}
		for _, b := range r.Buckets {
			if b.Bucket == "UNIBUS_users" {
				return b.Leader
			}
		}
		return ""
	}
	before := leader()
	if code, out, errs := membershipd(append([]string{"cluster", "stepdown", "--stream", "KV_UNIBUS_users"}, cconn...)...); code != 0 || !strings.Contains(out, "stepped down") {
		t.Fatalf("cluster stepdown: exit %d %s%s", code, out, errs)
	}
	deadline := time.Now().Add(20 * time.Second)
	for now := leader(); now == "" || now == before; now = leader() {
		if time.Now().After(deadline) {
			t.Fatalf("the users stream is still led by %q (was %q) 20 s after the step-down", now, before)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, _, errs := membershipd(append([]string{"cluster", "stepdown", "--stream", "KV_NOPE"}, cconn...)...); code != 1 || !strings.Contains(errs, "KV_NOPE") {
		t.Fatalf("cluster stepdown of an unknown stream: exit %d %q, want 1 naming it", code, errs)
	}
	if code, _, errs := membershipd("cluster", "stepdown"); code != 2 || !strings.Contains(errs, "--stream is required") {
		t.Fatalf("cluster stepdown without --stream: exit %d %q, want 2", code, errs)
	}
}

// Go's flag package takes a `quoted` word in a usage string as the flag's
// argument name; every -h shows one-word names.
func TestUsageNamesNotMangled(t *testing.T) {
	flagLine := regexp.MustCompile(`^  -[A-Za-z][\w-]*( [a-z]+)?$`)
	for _, cmd := range [][]string{{"serve"}, {"version"}, {"cluster", "report"}, {"cluster", "stepdown"}, {"kv", "scale"}, {"user", "add"}, {"user", "list"}, {"user", "revoke"}, {"migrate-to-kv"}, {"key", "new"}} {
		code, stdout, stderr := membershipd(append(cmd, "-h")...)
		if code != 0 {
			t.Fatalf("%v -h: exit %d", cmd, code)
		}
		n := 0
		for _, line := range strings.Split(stdout+stderr, "\n") {
			if strings.HasPrefix(line, "  -") {
				n++
				if !flagLine.MatchString(line) {
					t.Errorf("%v -h: mangled flag line %q", cmd, line)
				}
			}
		}
		if n == 0 {
			t.Errorf("%v -h printed no flags", cmd)
		}
	}
}
