package sshx

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// agentKeys holds the ssh-agent connection for the duration of a Dial.
type agentKeys struct {
	signers []ssh.Signer
	note    string // "agent (2 keys via /run/...)" or why it was not used
	conn    net.Conn
}

func openAgent(o Options) *agentKeys {
	a := &agentKeys{}
	if !o.Agent {
		a.note = "ssh-agent not used (Options.Agent=false)"
		return a
	}
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		a.note = "ssh-agent not used (SSH_AUTH_SOCK is not set)"
		return a
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		a.note = fmt.Sprintf("ssh-agent at %s unreachable (%v)", sock, err)
		return a
	}
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		conn.Close()
		a.note = fmt.Sprintf("ssh-agent at %s failed to list keys (%v)", sock, err)
		return a
	}
	a.conn, a.signers = conn, signers
	a.note = fmt.Sprintf("ssh-agent at %s (%d keys)", sock, len(signers))
	return a
}

func (a *agentKeys) close() {
	if a.conn != nil {
		a.conn.Close()
	}
}

// keySet is what one hop offers, plus a description of each source for the
// ErrAuth message.
type keySet struct {
	signers []ssh.Signer
	tried   []string // "path (ssh-ed25519 SHA256:...)"
	skipped []string // "path (missing)", "path (passphrase-protected: ...)"
	agent   string
}

func loadKeys(files []string, a *agentKeys, log *slog.Logger) *keySet {
	ks := &keySet{agent: a.note}
	seen := map[string]bool{}
	add := func(s ssh.Signer) bool {
		k := string(s.PublicKey().Marshal())
		if seen[k] {
			return false
		}
		seen[k] = true
		ks.signers = append(ks.signers, s)
		return true
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			reason := err.Error()
			if errors.Is(err, fs.ErrNotExist) {
				reason = "missing"
			}
			ks.skipped = append(ks.skipped, fmt.Sprintf("%s (%s)", f, reason))
			continue
		}
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			var pm *ssh.PassphraseMissingError
			if errors.As(err, &pm) {
				ks.skipped = append(ks.skipped, fmt.Sprintf("%s (passphrase-protected: load it into ssh-agent and set Options.Agent)", f))
			} else {
				ks.skipped = append(ks.skipped, fmt.Sprintf("%s (unreadable key: %v)", f, err))
			}
			continue
		}
		if add(s) {
			ks.tried = append(ks.tried, fmt.Sprintf("%s (%s %s)", f, s.PublicKey().Type(), ssh.FingerprintSHA256(s.PublicKey())))
		}
	}
	for _, s := range a.signers {
		add(s)
	}
	log.Debug("sshx: keys", "files", ks.tried, "skipped", ks.skipped, "agent", ks.agent)
	return ks
}

func (ks *keySet) auth() []ssh.AuthMethod {
	return []ssh.AuthMethod{ssh.PublicKeys(ks.signers...)}
}

func (ks *keySet) describe() string {
	var parts []string
	if len(ks.tried) > 0 {
		parts = append(parts, "key files offered: "+strings.Join(ks.tried, ", "))
	} else {
		parts = append(parts, "no usable key file")
	}
	if len(ks.skipped) > 0 {
		parts = append(parts, "skipped: "+strings.Join(ks.skipped, ", "))
	}
	parts = append(parts, ks.agent)
	return strings.Join(parts, "; ")
}
