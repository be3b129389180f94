package sshx

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Three real sshd hosts; one known_hosts per host, so each can be broken
// alone.
func TestPreflight(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SSH_AUTH_SOCK", "")
	dir := t.TempDir()
	user := currentUser(t)
	key := newClientKey(t, dir, "id_test")
	var cfg strings.Builder
	var srvs []*testSSHD
	names := []string{"a", "b", "c"}
	kh := map[string]string{}
	for _, n := range names {
		s := startSSHD(t, key.pub)
		srvs = append(srvs, s)
		kh[n] = writeFile(t, filepath.Join(dir, "known_hosts_"+n), s.knownHostsLine("ed25519")+"\n")
		cfg.WriteString(s.hostBlock(n, user, key, kh[n]))
	}
	config := writeFile(t, filepath.Join(dir, "config"), cfg.String())
	hosts := func() []PreflightHost {
		var hs []PreflightHost
		for _, n := range names {
			hs = append(hs, PreflightHost{Name: "node-" + n, Alias: n, Options: Options{ConfigFile: config, ConnectTimeout: 5 * time.Second}})
		}
		return hs
	}

	if err := Preflight(ctxT(t), hosts()); err != nil {
		t.Fatalf("every host good: %v", err)
	}

	// b: known_hosts holds another host's key (changed); c: holds nothing
	// for it (unknown).
	writeFile(t, kh["b"], fmt.Sprintf("[127.0.0.1]:%d %s", srvs[1].port, strings.TrimPrefix(srvs[0].knownHostsLine("ed25519"), fmt.Sprintf("[127.0.0.1]:%d ", srvs[0].port)))+"\n")
	writeFile(t, kh["c"], "")
	err := Preflight(ctxT(t), hosts())
	var pe *PreflightError
	if !errors.As(err, &pe) {
		t.Fatalf("want *PreflightError, got %T %v", err, err)
	}
	t.Logf("operator sees: %v", err)
	if len(pe.Failed) != 2 || pe.Failed[0].Name != "node-b" || pe.Failed[1].Name != "node-c" || pe.Total != 3 {
		t.Fatalf("failed hosts = %+v, want node-b and node-c of 3", pe.Failed)
	}
	if !errors.Is(err, ErrHostKeyChanged) || !errors.Is(err, ErrUnknownHost) {
		t.Fatalf("want both host-key kinds in %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"preflight failed on node-b, node-c (2 of 3 hosts); nothing was changed on any host",
		fmt.Sprintf("ssh-keygen -R '[127.0.0.1]:%d'", srvs[1].port),
		fmt.Sprintf("[node-c] fix: verify the host's key out of band, remove the stale entry with `ssh-keygen -R '[127.0.0.1]:%d'`", srvs[2].port),
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("preflight error does not say %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "[node-a]") {
		t.Errorf("the good host is reported as failed:\n%s", msg)
	}
}

func TestKnownHostsFixPort22(t *testing.T) {
	err := &Error{Kind: ErrHostKeyChanged, Alias: "magnus", Addr: "10.77.0.11:22", Msg: "x"}
	if got := KnownHostsFix(err); !strings.Contains(got, "`ssh-keygen -R '10.77.0.11'`") {
		t.Fatalf("KnownHostsFix = %q", got)
	}
	if got := KnownHostsFix(&Error{Kind: ErrAuth, Addr: "10.77.0.11:22"}); got != "" {
		t.Fatalf("auth error got a known_hosts fix: %q", got)
	}
}

// The topology's login user is used when ssh_config names none, and a
// different ssh_config User is refused naming both.
func TestOptionsUser(t *testing.T) {
	e := newEnv(t)
	noUser := writeFile(t, filepath.Join(e.dir, "config-nouser"), strings.Replace(e.srv.hostBlock("box", e.user, e.key, e.knownHosts), "  User "+e.user+"\n", "", 1))
	tg, err := Resolve("box", Options{ConfigFile: noUser, User: "deployer"})
	if err != nil || tg.User != "deployer" {
		t.Fatalf("Resolve with Options.User and no ssh_config User = %+v, %v", tg, err)
	}
	tg, err = Resolve("box", Options{ConfigFile: e.config, User: e.user})
	if err != nil || tg.User != e.user {
		t.Fatalf("agreeing users: %+v, %v", tg, err)
	}
	_, err = Dial(ctxT(t), "box", Options{ConfigFile: e.config, User: "someone-else"})
	wantKind(t, err, ErrUserConflict, `"someone-else"`, "User "+e.user, e.config)
	// Real connection with the topology's user when ssh_config has none.
	c, err := Dial(ctxT(t), "box", Options{ConfigFile: noUser, User: e.user, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
}
