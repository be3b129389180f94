package sshx

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// env is one sshd plus a client key, an ssh_config and a known_hosts that
// holds ONLY the server's ed25519 key.
type env struct {
	srv        *testSSHD
	key        testKey
	user       string
	dir        string
	config     string
	knownHosts string
	opts       Options
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// Keep the operator's real ~/.ssh out of every test.
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SSH_AUTH_SOCK", "")
	dir := t.TempDir()
	e := &env{dir: dir, user: currentUser(t)}
	e.key = newClientKey(t, dir, "id_test")
	e.srv = startSSHD(t, e.key.pub)
	e.knownHosts = writeFile(t, filepath.Join(dir, "known_hosts"), e.srv.knownHostsLine("ed25519")+"\n")
	e.config = writeFile(t, filepath.Join(dir, "config"), e.srv.hostBlock("box", e.user, e.key, e.knownHosts))
	e.opts = Options{ConfigFile: e.config, ConnectTimeout: 5 * time.Second}
	return e
}

func (e *env) dial(t *testing.T, alias string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, alias, e.opts)
	if err != nil {
		t.Fatalf("Dial(%s): %v", alias, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantKind(t *testing.T, err, kind error, mustContain ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %v, got nil error", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("want errors.Is(err, %v); got %v", kind, err)
	}
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("want *sshx.Error, got %T", err)
	}
	for _, s := range mustContain {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not mention %q:\n%v", s, err)
		}
	}
	t.Logf("operator sees: %v", err)
}

// The golang/go#29286 trap: the server offers ECDSA and RSA host keys too,
// known_hosts holds only ed25519. A default x/crypto client fails; Dial works.
func TestDialHostKeyAlgorithmTrap(t *testing.T) {
	e := newEnv(t)

	// Control: plain x/crypto with the default algorithm preference.
	cb, err := knownhosts.New(e.knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	signer := mustSigner(t, e.key.path)
	_, err = ssh.Dial("tcp", e.srv.addr, &ssh.ClientConfig{
		User: e.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: cb, Timeout: 5 * time.Second,
	})
	if err == nil {
		t.Logf("note: default x/crypto now negotiates ed25519 first; the trap is gone upstream")
	} else if !strings.Contains(err.Error(), "key mismatch") {
		t.Fatalf("control dial failed unexpectedly: %v", err)
	} else {
		t.Logf("control (no HostKeyAlgorithms) fails as expected: %v", err)
	}

	c := e.dial(t, "box")
	res, err := c.Run(ctxT(t), "echo hello", nil)
	if err != nil || res.Stdout != "hello\n" || res.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if got := c.Target(); got.HostName != "127.0.0.1" || got.Port != e.srv.port || got.User != e.user {
		t.Fatalf("Target = %+v", got)
	}
}

func mustSigner(t *testing.T, path string) ssh.Signer {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRun(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "box")
	ctx := ctxT(t)

	res, err := c.Run(ctx, "echo out; echo err >&2; exit 3", nil)
	if err != nil {
		t.Fatalf("non-zero exit must be a Result, not an error: %v", err)
	}
	if res.Stdout != "out\n" || res.Stderr != "err\n" || res.ExitCode != 3 {
		t.Fatalf("Run = %+v", res)
	}

	res, err = c.Run(ctx, "cat; echo done", strings.NewReader("from stdin\n"))
	if err != nil || res.Stdout != "from stdin\ndone\n" {
		t.Fatalf("Run with stdin = %+v, %v", res, err)
	}

	res, err = c.Run(ctx, "kill -KILL $$", nil)
	if err != nil || res.Signal != "KILL" || res.ExitCode != 128+9 {
		t.Fatalf("killed command = %+v, %v", res, err)
	}

	t.Run("many sessions on one client", func(t *testing.T) {
		// Each subtest has its own deadline: on a loaded machine the 24
		// sessions alone took 27 s of one shared 30 s.
		ctx := ctxT(t)
		var wg sync.WaitGroup
		errs := make(chan error, 24)
		for i := range 24 {
			wg.Go(func() {
				res, err := c.Run(ctx, fmt.Sprintf("sleep 0.2; echo %d", i), nil)
				if err == nil && res.Stdout != fmt.Sprintf("%d\n", i) {
					err = fmt.Errorf("session %d got %q", i, res.Stdout)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("cancel signals the command", func(t *testing.T) {
		ctx := ctxT(t)
		marker := filepath.Join(e.dir, "cancelled")
		ready := filepath.Join(e.dir, "trap-set")
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			// sleep is the shell's last command; TERM reaches the trap.
			_, err := c.Run(cctx, "trap 'touch "+marker+"; exit 143' TERM; touch "+ready+"; sleep 30 & wait", nil)
			done <- err
		}()
		// Cancel only once the trap is set: on a loaded machine the session
		// and shell take longer to start than any fixed delay.
		waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil }, "remote command set its trap")
		start := time.Now()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("want Canceled, got %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("cancel took %v", d)
		}
		waitFor(t, func() bool { _, err := os.Stat(marker); return err == nil }, "remote command received SIGTERM")
		// The client stays usable.
		if res, err := c.Run(ctx, "true", nil); err != nil || res.ExitCode != 0 {
			t.Fatalf("Run after cancel = %+v, %v", res, err)
		}
	})
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUnknownHost(t *testing.T) {
	e := newEnv(t)
	other := newClientKey(t, e.dir, "other")
	t.Run("no entry for the host", func(t *testing.T) {
		kh := writeFile(t, filepath.Join(e.dir, "kh_other"), knownhosts.Line([]string{"127.0.0.1:1"}, other.pub)+"\n")
		e.opts.KnownHosts = []string{kh}
		_, err := Dial(ctxT(t), "box", e.opts)
		wantKind(t, err, ErrUnknownHost, kh, "ssh-keyscan -p "+strconv.Itoa(e.srv.port), ssh.FingerprintSHA256(e.srv.hostKeys["ed25519"]), "refusing")
	})
	t.Run("known_hosts file missing", func(t *testing.T) {
		missing := filepath.Join(e.dir, "does-not-exist")
		e.opts.KnownHosts = []string{missing}
		_, err := Dial(ctxT(t), "box", e.opts)
		wantKind(t, err, ErrUnknownHost, missing, "missing")
	})
}

func TestHostKeyChanged(t *testing.T) {
	e := newEnv(t)
	impostor := newClientKey(t, e.dir, "impostor") // an ed25519 key that is not the server's
	kh := writeFile(t, filepath.Join(e.dir, "kh_changed"), knownhosts.Line([]string{e.srv.addr}, impostor.pub)+"\n")
	e.opts.KnownHosts = []string{kh}
	_, err := Dial(ctxT(t), "box", e.opts)
	wantKind(t, err, ErrHostKeyChanged, "HOST KEY CHANGED", "refusing", kh+":1", ssh.FingerprintSHA256(e.srv.hostKeys["ed25519"]))
	if errors.Is(err, ErrUnknownHost) {
		t.Fatal("a changed key must not read as unknown")
	}
}

func TestUnreachable(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	dir := t.TempDir()
	key := newClientKey(t, dir, "id")
	kh := writeFile(t, filepath.Join(dir, "kh"), "")

	t.Run("nothing listening", func(t *testing.T) {
		port := freePort(t)
		cfg := writeFile(t, filepath.Join(dir, "cfg1"), fmt.Sprintf("Host dead\n HostName 127.0.0.1\n Port %d\n IdentityFile %s\n UserKnownHostsFile %s\n", port, key.path, kh))
		_, err := Dial(ctxT(t), "dead", Options{ConfigFile: cfg, ConnectTimeout: 2 * time.Second})
		wantKind(t, err, ErrUnreachable, fmt.Sprintf("127.0.0.1:%d", port))
	})
	t.Run("TCP accepted but no SSH handshake", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close() // hold it open, say nothing
			}
		}()
		cfg := writeFile(t, filepath.Join(dir, "cfg2"), fmt.Sprintf("Host mute\n HostName 127.0.0.1\n Port %d\n IdentityFile %s\n UserKnownHostsFile %s\n", l.Addr().(*net.TCPAddr).Port, key.path, kh))
		start := time.Now()
		_, err = Dial(ctxT(t), "mute", Options{ConfigFile: cfg, ConnectTimeout: 500 * time.Millisecond})
		wantKind(t, err, ErrUnreachable, l.Addr().String(), "handshake")
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("timeout not honoured: %v", d)
		}
	})
}

func TestAuthRefused(t *testing.T) {
	e := newEnv(t)
	wrong := newClientKey(t, e.dir, "id_wrong")
	cfg := writeFile(t, filepath.Join(e.dir, "cfg_wrong"), e.srv.hostBlock("box", e.user, wrong, e.knownHosts))
	missing := filepath.Join(e.dir, "id_missing")
	_, err := Dial(ctxT(t), "box", Options{ConfigFile: cfg, IdentityFiles: []string{missing}, ConnectTimeout: 5 * time.Second})
	wantKind(t, err, ErrAuth, wrong.path, ssh.FingerprintSHA256(wrong.pub), missing+" (missing)", "ssh-agent not used", e.user)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestWriteFile(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "box")
	ctx := ctxT(t)
	// sshd runs on this machine: the remote filesystem is the local one.
	dir := filepath.Join(e.dir, "etc")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "secret.env")
	if err := os.WriteFile(target, []byte("OLD=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	secret := []byte("CLUSTER_PASS=s3cr3t\n")

	// At the moment the first byte is about to be written, the temp file
	// must already be 0600 and empty, and the target must still be intact.
	hookCalls := 0
	beforeWriteHook = func(tmp string) {
		hookCalls++
		fi, err := os.Stat(tmp)
		if err != nil {
			t.Errorf("hook: %v", err)
			return
		}
		if fi.Mode().Perm() != 0o600 || fi.Size() != 0 {
			t.Errorf("temp file before write: mode %v size %d, want 0600 and empty", fi.Mode().Perm(), fi.Size())
		}
		if filepath.Dir(tmp) != dir {
			t.Errorf("temp file %s not in the target's directory", tmp)
		}
		if b, _ := os.ReadFile(target); string(b) != "OLD=1\n" {
			t.Errorf("target modified before the rename: %q", b)
		}
	}
	t.Cleanup(func() { beforeWriteHook = nil })

	changed, err := c.WriteFile(ctx, target, secret, 0o600, "")
	if err != nil || !changed {
		t.Fatalf("WriteFile = %v, %v", changed, err)
	}
	if hookCalls != 1 {
		t.Fatalf("hook ran %d times", hookCalls)
	}
	checkLocal(t, target, secret, 0o600)
	assertNoTemp(t, dir)

	fi, err := c.Stat(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Exists || fi.Mode != 0o600 || fi.Size != int64(len(secret)) || fi.SHA256 != sha(secret) || !strings.HasPrefix(fi.Owner, e.user+":") {
		t.Fatalf("Stat = %+v", fi)
	}
	got, err := c.ReadFile(ctx, target)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("ReadFile = %q, %v", got, err)
	}

	// Idempotent: identical content, mode and owner → nothing written.
	beforeWriteHook = func(string) { t.Error("second identical WriteFile wrote") }
	changed, err = c.WriteFile(ctx, target, secret, 0o600, "")
	if err != nil || changed {
		t.Fatalf("identical WriteFile = %v, %v; want false, nil", changed, err)
	}
	changed, err = c.WriteFile(ctx, target, secret, 0o600, e.user)
	if err != nil || changed {
		t.Fatalf("identical WriteFile with owner = %v, %v; want false, nil", changed, err)
	}
	beforeWriteHook = nil

	// A mode-only change is a change.
	changed, err = c.WriteFile(ctx, target, secret, 0o640, "")
	if err != nil || !changed {
		t.Fatalf("mode change = %v, %v", changed, err)
	}
	checkLocal(t, target, secret, 0o640)

	// New file, binary content, executable mode.
	bin := filepath.Join(dir, "tool")
	payload := bytes.Repeat([]byte{0, 1, 2, 255}, 100_000)
	if changed, err := c.WriteFile(ctx, bin, payload, 0o755, ""); err != nil || !changed {
		t.Fatalf("new file = %v, %v", changed, err)
	}
	checkLocal(t, bin, payload, 0o755)
	if fi, err := c.Stat(ctx, filepath.Join(dir, "absent")); err != nil || fi.Exists {
		t.Fatalf("Stat(absent) = %+v, %v", fi, err)
	}
	assertNoTemp(t, dir)

	if _, err := c.WriteFile(ctx, "relative/path", nil, 0o600, ""); err == nil {
		t.Fatal("relative path accepted")
	}
	if _, err := c.WriteFile(ctx, filepath.Join(e.dir, "no-such-dir", "f"), nil, 0o600, ""); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}

	t.Run("owner (root only)", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("chown to another user needs root")
		}
		u, g := nobody(t)
		f := filepath.Join(dir, "owned")
		if changed, err := c.WriteFile(ctx, f, []byte("x"), 0o4750, u+":"+g); err != nil || !changed {
			t.Fatalf("WriteFile(owner) = %v, %v", changed, err)
		}
		checkLocal(t, f, []byte("x"), 0o750|os.ModeSetuid)
		checkOwner(t, f, u)
		fi, err := c.Stat(ctx, f)
		if err != nil || fi.Owner != u+":"+g || fi.Mode != 0o750|os.ModeSetuid {
			t.Fatalf("Stat = %+v, %v", fi, err)
		}
		if changed, err := c.WriteFile(ctx, f, []byte("x"), 0o4750, u); err != nil || changed {
			t.Fatalf("identical WriteFile = %v, %v", changed, err)
		}
		if _, err := c.WriteFile(ctx, f, []byte("z"), 0o600, "no-such-user-sshx"); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("unknown owner: %v", err)
		}
		assertNoTemp(t, dir)
		// owner "" keeps the existing owner across a content change.
		if changed, err := c.WriteFile(ctx, f, []byte("y"), 0o640, ""); err != nil || !changed {
			t.Fatalf("WriteFile(keep owner) = %v, %v", changed, err)
		}
		checkOwner(t, f, u)
	})
}

func nobody(t *testing.T) (user, group string) {
	t.Helper()
	u, err := osuser.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	g, err := osuser.LookupGroupId(u.Gid)
	if err != nil {
		t.Skipf("no group for nobody: %v", err)
	}
	return u.Username, g.Name
}

func checkLocal(t *testing.T, p string, want []byte, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", p, fi.Mode(), mode)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, want) {
		t.Errorf("%s: content differs (%d bytes, want %d)", p, len(got), len(want))
	}
}

func checkOwner(t *testing.T, p, user string) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	u, err := osuser.Lookup(user)
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; strconv.Itoa(int(uid)) != u.Uid {
		t.Errorf("%s: uid %d, want %s (%s)", p, uid, u.Uid, user)
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".sshx-") {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}

func TestProxyJump(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SSH_AUTH_SOCK", "")
	dir := t.TempDir()
	user := currentUser(t)
	key := newClientKey(t, dir, "id")
	target := startSSHD(t, key.pub)
	jump := startSSHD(t, key.pub)
	// Both ed25519 keys, the jump host's hashed.
	kh := writeFile(t, filepath.Join(dir, "kh"), target.knownHostsLine("ed25519")+"\n"+jump.hashedKnownHostsLine("ed25519")+"\n")
	config := func(name, khFile, jumpSpec string) string {
		return writeFile(t, filepath.Join(dir, name), fmt.Sprintf(`Host target
  HostName 127.0.0.1
  Port %d
  ProxyJump %s
Host jump
  HostName 127.0.0.1
  Port %d
Host *
  User %s
  IdentityFile %s
  UserKnownHostsFile %s
`, target.port, jumpSpec, jump.port, user, key.path, khFile))
	}

	for _, spec := range []string{"jump", fmt.Sprintf("%s@127.0.0.1:%d", user, jump.port)} {
		t.Run("via "+spec, func(t *testing.T) {
			o := Options{ConfigFile: config("cfg", kh, spec), ConnectTimeout: 5 * time.Second}
			tg, err := Resolve("target", o)
			if err != nil || len(tg.ProxyJump) != 1 || tg.ProxyJump[0] != spec {
				t.Fatalf("Resolve = %+v, %v", tg, err)
			}
			c, err := Dial(ctxT(t), "target", o)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			res, err := c.Run(ctxT(t), "echo $SSH_CONNECTION", nil)
			if err != nil || !strings.HasSuffix(strings.TrimSpace(res.Stdout), fmt.Sprintf(" %d", target.port)) {
				t.Fatalf("Run through jump = %+v, %v", res, err)
			}
			// The jump sshd forwarded the connection to the target.
			want := fmt.Sprintf("target 127.0.0.1 port %d", target.port)
			waitFor(t, func() bool { return strings.Contains(jump.log(), want) }, "jump host log shows direct-tcpip to the target")
		})
	}

	t.Run("jump host key unknown", func(t *testing.T) {
		onlyTarget := writeFile(t, filepath.Join(dir, "kh_t"), target.knownHostsLine("ed25519")+"\n")
		_, err := Dial(ctxT(t), "target", Options{ConfigFile: config("cfg_t", onlyTarget, "jump"), ConnectTimeout: 5 * time.Second})
		wantKind(t, err, ErrUnknownHost, "jump host", fmt.Sprintf("[127.0.0.1]:%d", jump.port))
	})
	t.Run("target key changed behind a good jump", func(t *testing.T) {
		imp := newClientKey(t, dir, "impostor")
		bad := writeFile(t, filepath.Join(dir, "kh_bad"), knownhosts.Line([]string{target.addr}, imp.pub)+"\n"+jump.knownHostsLine("ed25519")+"\n")
		_, err := Dial(ctxT(t), "target", Options{ConfigFile: config("cfg_bad", bad, "jump"), ConnectTimeout: 5 * time.Second})
		wantKind(t, err, ErrHostKeyChanged, `"target"`, "HOST KEY CHANGED")
	})
	t.Run("target unreachable from the jump host", func(t *testing.T) {
		dead := freePort(t)
		cfg := writeFile(t, filepath.Join(dir, "cfg_dead"), fmt.Sprintf(`Host t2
  HostName 127.0.0.1
  Port %d
  ProxyJump jump
Host jump
  HostName 127.0.0.1
  Port %d
Host *
  User %s
  IdentityFile %s
  UserKnownHostsFile %s
`, dead, jump.port, user, key.path, kh))
		_, err := Dial(ctxT(t), "t2", Options{ConfigFile: cfg, ConnectTimeout: 5 * time.Second})
		wantKind(t, err, ErrUnreachable, fmt.Sprintf("127.0.0.1:%d", dead), "jump host cannot reach")
	})
}

func TestInclude(t *testing.T) {
	e := newEnv(t)
	inc := writeFile(t, filepath.Join(e.dir, "included.conf"), e.srv.hostBlock("inc-box", e.user, e.key, e.knownHosts))
	main := writeFile(t, filepath.Join(e.dir, "main.conf"), "Include "+inc+"\n")
	e.opts.ConfigFile = main
	tg, err := Resolve("inc-box", e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Port != e.srv.port || tg.HostName != "127.0.0.1" || tg.User != e.user ||
		len(tg.IdentityFiles) != 1 || tg.IdentityFiles[0] != e.key.path || len(tg.KnownHosts) != 1 || tg.KnownHosts[0] != e.knownHosts {
		t.Fatalf("Resolve via Include = %+v", tg)
	}
	c := e.dial(t, "inc-box")
	if res, err := c.Run(ctxT(t), "echo included", nil); err != nil || res.Stdout != "included\n" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unsupported Match": "Host box\n  HostName 127.0.0.1\nMatch user bob\n  Port 2222\n",
		"bad Port":          "Host box\n  Port twenty-two\n",
	} {
		t.Run(name, func(t *testing.T) {
			cfg := writeFile(t, filepath.Join(dir, strings.ReplaceAll(name, " ", "_")), body)
			_, err := Resolve("box", Options{ConfigFile: cfg})
			if err == nil || !strings.Contains(err.Error(), cfg) {
				t.Fatalf("Resolve: want a parse error naming %s, got %v", cfg, err)
			}
			t.Logf("operator sees: %v", err)
			if _, err := Dial(ctxT(t), "box", Options{ConfigFile: cfg}); err == nil {
				t.Fatal("Dial ignored the parse error")
			}
		})
	}
	t.Run("explicit config missing", func(t *testing.T) {
		if _, err := Resolve("box", Options{ConfigFile: filepath.Join(dir, "nope")}); err == nil {
			t.Fatal("missing explicit ConfigFile accepted")
		}
	})
}

func TestResolveDefaultsAndExpansion(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	me := currentUser(t)

	// No ~/.ssh/config at all: plain defaults.
	tg, err := Resolve("plainhost", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tg.HostName != "plainhost" || tg.Port != 22 || tg.User != me || len(tg.ProxyJump) != 0 ||
		len(tg.KnownHosts) != 1 || tg.KnownHosts[0] != filepath.Join(home, ".ssh", "known_hosts") ||
		len(tg.IdentityFiles) != 3 || tg.IdentityFiles[0] != filepath.Join(home, ".ssh", "id_ed25519") {
		t.Fatalf("defaults = %+v", tg)
	}

	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(home, ".ssh", "config"), `Host magnus
  HostName %h.example.invalid
  User root
  Port 2200
  IdentityFile ~/.ssh/id_%h_%r
  IdentityFile %d/keys/%u-%p
  UserKnownHostsFile ~/.ssh/kh_%n %d/.ssh/kh2
  ProxyJump ubuntu@bastion:2022,ssh://dd
Host *
  User ubuntu
`)
	tg, err = Resolve("magnus", Options{IdentityFiles: []string{"~/extra"}})
	if err != nil {
		t.Fatal(err)
	}
	want := Target{
		Alias: "magnus", HostName: "magnus.example.invalid", User: "root", Port: 2200,
		ProxyJump: []string{"ubuntu@bastion:2022", "ssh://dd"},
		IdentityFiles: []string{
			filepath.Join(home, "extra"),
			filepath.Join(home, ".ssh", "id_magnus.example.invalid_root"),
			filepath.Join(home, "keys", me+"-2200"),
		},
		KnownHosts: []string{filepath.Join(home, ".ssh", "kh_magnus"), filepath.Join(home, ".ssh", "kh2")},
	}
	if fmt.Sprint(tg) != fmt.Sprint(want) {
		t.Fatalf("Resolve =\n %+v\nwant\n %+v", tg, want)
	}
	if tg, err := Resolve("homer", Options{}); err != nil || tg.User != "ubuntu" {
		t.Fatalf("Host * default user: %+v, %v", tg, err)
	}

	// The chain: hop users/ports from the spec override the hop's config.
	o, explicit := Options{}.normalized()
	cfg, err := loadConfig(o, explicit)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := resolveChain(tg0(t, "magnus"), o, cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 3 || chain[0].HostName != "bastion" || chain[0].User != "ubuntu" || chain[0].Port != 2022 ||
		chain[1].HostName != "dd" || chain[1].Port != 22 || chain[2].Alias != "magnus" {
		t.Fatalf("chain = %+v", chain)
	}

	for _, bad := range []string{"IdentityFile ~/.ssh/id_%z", "ProxyJump host:notaport"} {
		writeFile(t, filepath.Join(home, ".ssh", "config"), "Host x\n  "+bad+"\n")
		_, err := Resolve("x", Options{})
		if err == nil && strings.HasPrefix(bad, "ProxyJump") {
			_, err = Dial(ctxT(t), "x", Options{})
		}
		if err == nil {
			t.Errorf("%q accepted", bad)
		} else {
			t.Logf("%q → %v", bad, err)
		}
	}
}

func tg0(t *testing.T, alias string) Target {
	t.Helper()
	tg, err := Resolve(alias, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestHostKeyAlgorithmsFromKnownHosts(t *testing.T) {
	mk := func(k ssh.PublicKey) knownhosts.KnownKey { return knownhosts.KnownKey{Key: k} }
	dir := t.TempDir()
	ed := newClientKey(t, dir, "ed").pub
	rk, err := rsaHostKey()
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, err := ssh.NewPublicKey(rk.Public())
	if err != nil {
		t.Fatal(err)
	}
	got := hostKeyAlgorithms([]knownhosts.KnownKey{mk(rsaPub), mk(ed)})
	want := []string{ssh.KeyAlgoED25519, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("algorithms = %v, want %v", got, want)
	}
	if got := hostKeyAlgorithms(nil); len(got) != 0 {
		t.Fatalf("no known keys → %v", got)
	}
}

func TestSudo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sudo tests need root")
	}
	if _, err := exec.LookPath("sudo"); err != nil {
		t.Skip("sudo not installed")
	}
	e := newEnv(t)
	c := e.dial(t, "box")
	ctx := ctxT(t)

	// Logged in as root: no sudo at all.
	res, err := c.Sudo(ctx, "id -u; echo ${SUDO_USER:-none}", nil)
	if err != nil || res.Stdout != "0\nnone\n" {
		t.Fatalf("root Sudo = %+v, %v", res, err)
	}

	// Behave like the ubuntu logins: every Sudo goes through `sudo -n sh -c`.
	c.forceSudo = true
	defer func() { c.forceSudo = false }()
	res, err = c.Sudo(ctx, `echo "$SUDO_USER" "it's" $((1+1)); cat; exit 4`, strings.NewReader("in\n"))
	if err != nil || res.Stdout != "root it's 2\nin\n" || res.ExitCode != 4 {
		t.Fatalf("sudo Sudo = %+v, %v", res, err)
	}

	// Files through `sudo -n /usr/lib/openssh/sftp-server`.
	p := filepath.Join(e.dir, "elevated.conf")
	if changed, err := c.WriteFile(ctx, p, []byte("k=v\n"), 0o600, "root:root"); err != nil || !changed {
		t.Fatalf("elevated WriteFile = %v, %v", changed, err)
	}
	checkLocal(t, p, []byte("k=v\n"), 0o600)
	if changed, err := c.WriteFile(ctx, p, []byte("k=v\n"), 0o600, "root"); err != nil || changed {
		t.Fatalf("elevated identical WriteFile = %v, %v", changed, err)
	}
	if b, err := c.ReadFile(ctx, p); err != nil || string(b) != "k=v\n" {
		t.Fatalf("elevated ReadFile = %q, %v", b, err)
	}

	// A real sudo refusal: root asks sudo to act as nobody, who then asks
	// sudo again and is refused. The refusal text must be recognised.
	res, err = c.Run(ctx, "sudo -n -u nobody sudo -n true", nil)
	if err != nil || res.ExitCode == 0 {
		t.Fatalf("nested sudo = %+v, %v", res, err)
	}
	serr := c.sudoRefused(res.ExitCode, res.Stderr)
	wantKind(t, serr, ErrSudo, "NOPASSWD", e.user, `"box"`)
}

func TestSudoRefusalMessages(t *testing.T) {
	c := &Client{target: Target{Alias: "homer", User: "ubuntu", HostName: "127.0.0.1", Port: 22}}
	for stderr, exit := range map[string]int{
		"sudo: a password is required\n":                   1,
		"ubuntu is not in the sudoers file.\n":             1,
		"sh: 1: sudo: not found\n":                         127,
		"Sorry, user ubuntu is not allowed to execute ...": 1,
	} {
		wantKind(t, c.sudoRefused(exit, stderr), ErrSudo, "NOPASSWD", "ubuntu", "homer")
	}
	if err := c.sudoRefused(1, "grep: no match\n"); err != nil {
		t.Fatalf("a command's own failure read as a sudo refusal: %v", err)
	}
	if got := shellQuote(`a'b "c" $x`); got != `'a'\''b "c" $x'` {
		t.Fatalf("shellQuote = %s", got)
	}
}

func TestHostKeyAlias(t *testing.T) {
	e := newEnv(t)
	aliased := writeFile(t, filepath.Join(e.dir, "kh_alias"),
		knownhosts.Line([]string{fmt.Sprintf("box-key:%d", e.srv.port)}, e.srv.hostKeys["ed25519"])+"\n")
	cfg := writeFile(t, filepath.Join(e.dir, "cfg_alias"), e.srv.hostBlock("box", e.user, e.key, aliased)+"  HostKeyAlias box-key\n")
	c, err := Dial(ctxT(t), "box", Options{ConfigFile: cfg})
	if err != nil {
		t.Fatalf("Dial with HostKeyAlias: %v", err)
	}
	c.Close()
	// Without the alias, the same known_hosts knows nothing about 127.0.0.1.
	noAlias := writeFile(t, filepath.Join(e.dir, "cfg_noalias"), e.srv.hostBlock("box", e.user, e.key, aliased))
	_, err = Dial(ctxT(t), "box", Options{ConfigFile: noAlias})
	wantKind(t, err, ErrUnknownHost)
}

func TestAgentAndPassphraseKeys(t *testing.T) {
	e := newEnv(t)
	// A passphrase-protected key cannot be used without an agent: it is
	// skipped, and the error says so.
	blk, err := ssh.MarshalPrivateKeyWithPassphrase(newEd25519(t), "", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	locked := writeFile(t, filepath.Join(e.dir, "id_locked"), string(pemEncode(blk)))
	cfg := writeFile(t, filepath.Join(e.dir, "cfg_locked"), e.srv.hostBlock("box", e.user, testKey{path: locked}, e.knownHosts))
	_, err = Dial(ctxT(t), "box", Options{ConfigFile: cfg})
	wantKind(t, err, ErrAuth, locked+" (passphrase-protected")

	// The right key, served by an in-process ssh-agent on a unix socket.
	sock := filepath.Join(e.dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	kr := agent.NewKeyring()
	raw, err := os.ReadFile(e.key.path)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ssh.ParseRawPrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer conn.Close(); _ = agent.ServeAgent(kr, conn) }()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
	c, err := Dial(ctxT(t), "box", Options{ConfigFile: cfg, Agent: true})
	if err != nil {
		t.Fatalf("Dial with agent: %v", err)
	}
	defer c.Close()
	if res, err := c.Run(ctxT(t), "echo via-agent", nil); err != nil || res.Stdout != "via-agent\n" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
}

func pemEncode(b *pem.Block) []byte { return pem.EncodeToMemory(b) }
