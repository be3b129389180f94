package sshx

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// The harness starts a real OpenSSH sshd on 127.0.0.1, as the current user,
// with its own host keys (ed25519, ECDSA and RSA) and authorized_keys.
// Nothing here ever connects anywhere but loopback.

const sshdPath = "/usr/sbin/sshd"

type testSSHD struct {
	dir      string
	port     int
	addr     string // 127.0.0.1:port
	hostKeys map[string]ssh.PublicKey
	logPath  string // sshd -E: its log must not leak into sessions' stderr
}

func (s *testSSHD) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// testKey is a client key written as an OpenSSH private key file.
type testKey struct {
	path string
	pub  ssh.PublicKey
}

func writePrivateKey(t *testing.T, path string, key crypto.Signer) ssh.PublicKey {
	t.Helper()
	blk, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func newEd25519(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newClientKey(t *testing.T, dir, name string) testKey {
	t.Helper()
	p := filepath.Join(dir, name)
	return testKey{path: p, pub: writePrivateKey(t, p, newEd25519(t))}
}

// rsaHostKey is shared by all test servers (generation is slow); their
// ed25519 keys, the ones known_hosts holds, are distinct.
var rsaHostKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

func currentUser(t *testing.T) string {
	t.Helper()
	u, err := osuser.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// startSSHD starts sshd accepting the given client keys.
func startSSHD(t *testing.T, authorized ...ssh.PublicKey) *testSSHD {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		t.Skipf("%s not installed (apt-get install openssh-server): %v", sshdPath, err)
	}
	if os.Geteuid() == 0 {
		// sshd running as root needs its privilege-separation directory.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Skipf("cannot create /run/sshd: %v", err)
		}
	}
	dir := t.TempDir() // 0700: sshd accepts key files here
	s := &testSSHD{dir: dir, hostKeys: map[string]ssh.PublicKey{}, logPath: filepath.Join(dir, "sshd.log")}

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsaHostKey()
	if err != nil {
		t.Fatal(err)
	}
	var hostKeyLines []string
	for _, hk := range []struct {
		name string
		key  crypto.Signer
	}{{"ed25519", newEd25519(t)}, {"ecdsa", ecKey}, {"rsa", rsaKey}} {
		p := filepath.Join(dir, "ssh_host_"+hk.name+"_key")
		s.hostKeys[hk.name] = writePrivateKey(t, p, hk.key)
		hostKeyLines = append(hostKeyLines, "HostKey "+p)
	}
	var ak bytes.Buffer
	for _, k := range authorized {
		ak.Write(ssh.MarshalAuthorizedKey(k))
	}
	akPath := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(akPath, ak.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	for attempt := 0; ; attempt++ {
		s.port = freePort(t)
		s.addr = fmt.Sprintf("127.0.0.1:%d", s.port)
		cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
%s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PidFile %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel DEBUG1
`, s.port, strings.Join(hostKeyLines, "\n"), akPath, filepath.Join(dir, "sshd.pid"))
		cfgPath := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sshdPath, "-D", "-E", s.logPath, "-f", cfgPath)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start sshd: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			// Only the sshd listener this test started, by its pid.
			_ = cmd.Process.Kill()
			<-exited
			if t.Failed() {
				t.Logf("sshd %s log:\n%s", s.addr, s.log())
			}
		})
		if waitListening(s.addr, exited) {
			return s
		}
		if attempt >= 2 {
			t.Fatalf("sshd did not start on %s:\n%s", s.addr, s.log())
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListening(addr string, exited <-chan struct{}) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// knownHostsLine is the known_hosts line for s's key of the given type.
func (s *testSSHD) knownHostsLine(keyType string) string {
	return knownhosts.Line([]string{s.addr}, s.hostKeys[keyType])
}

// hashedKnownHostsLine is the same entry with the host name hashed
// (HashKnownHosts yes).
func (s *testSSHD) hashedKnownHostsLine(keyType string) string {
	return knownhosts.HashHostname(knownhosts.Normalize(s.addr)) + " " +
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.hostKeys[keyType])))
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// hostBlock is an ssh_config Host block for s.
func (s *testSSHD) hostBlock(alias, user string, key testKey, knownHosts string) string {
	return fmt.Sprintf(`Host %s
  HostName 127.0.0.1
  Port %d
  User %s
  IdentityFile %s
  UserKnownHostsFile %s
`, alias, s.port, user, key.path, knownHosts)
}
