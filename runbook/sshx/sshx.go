// Package sshx is the SSH layer of the deploy tool: it resolves an alias the
// way `ssh ALIAS` would (ssh_config, Include, ProxyJump, IdentityFile,
// UserKnownHostsFile), verifies every host key against known_hosts (never
// trust on first use), runs commands, escalates with non-interactive sudo,
// and writes files atomically over SFTP.
//
// Traps handled here (measured; NOTES.md at the repository root):
//   - x/crypto prefers ECDSA/RSA host keys while known_hosts usually holds only
//     the ed25519 key, so HostKeyAlgorithms is set, per hop, to the key types
//     known_hosts already holds for that host.
//   - ssh_config is read with GetStrict/GetAllStrict so parse errors surface;
//     the library returns defaults and does not expand ~ or %tokens, so the
//     defaults are recognised and the expansion is done here.
//   - SFTP Rename fails on OpenSSH when the target exists: PosixRename is used.
//   - SFTP OpenFile takes no mode: the temp file is chmod-ed while still empty.
//   - SFTP runs as the login user: root-owned targets from a non-root login go
//     through `sudo -n /usr/lib/openssh/sftp-server` on an exec channel.
//   - sudo is always `sudo -n`, which fails fast instead of prompting.
//
// Secrets never travel in argv or logs: file contents go over SFTP, command
// stdin is a stream, and commands are not logged.
package sshx

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Options controls how an alias is resolved and dialled.
type Options struct {
	// ConfigFile is the ssh_config to read. Empty means ~/.ssh/config, and a
	// missing default file means "no config". An explicitly named file that
	// does not exist is an error (most likely a typo).
	ConfigFile string
	// KnownHosts overrides the known_hosts files. Empty means the
	// UserKnownHostsFile entries from ssh_config, else ~/.ssh/known_hosts.
	KnownHosts []string
	// IdentityFiles are extra private keys, tried before the ssh_config
	// IdentityFile entries. When neither names a key, the OpenSSH defaults
	// (~/.ssh/id_ed25519, id_ecdsa, id_rsa) are tried.
	IdentityFiles []string
	// Agent also offers the keys of the ssh-agent at SSH_AUTH_SOCK, if set.
	Agent bool
	// User is the login user for the target (not its jump hosts), e.g. the
	// topology's login user. Empty means ssh_config's User, else the local
	// user. When set and ssh_config names a different User for the alias,
	// Dial refuses with ErrUserConflict rather than guess which one is meant.
	User string
	// ConnectTimeout bounds the TCP connect plus SSH handshake of each hop.
	// Zero means 10s.
	ConnectTimeout time.Duration
	// Log receives debug records (never secrets, never command text). Nil
	// discards.
	Log *slog.Logger
}

const defaultConnectTimeout = 10 * time.Second

// normalized returns o with its defaults filled in, and whether ConfigFile
// was given explicitly.
func (o Options) normalized() (Options, bool) {
	explicit := o.ConfigFile != ""
	if !explicit {
		o.ConfigFile = filepath.Join(homeDir(), ".ssh", "config")
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = defaultConnectTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o, explicit
}

// Target is an alias resolved from ssh_config.
type Target struct {
	Alias    string
	HostName string
	User     string
	Port     int
	// ProxyJump holds the hops as written in ssh_config
	// ([user@]host[:port], comma separated there); each hop is itself
	// resolved through ssh_config when dialling.
	ProxyJump []string
	// IdentityFiles are the key files that will be offered, in order:
	// Options.IdentityFiles, then ssh_config IdentityFile (or the OpenSSH
	// defaults when neither names one). ~ and %tokens are expanded.
	IdentityFiles []string
	// KnownHosts are the known_hosts files checked for this host.
	KnownHosts []string
	// HostKeyAlias, when set in ssh_config, is the name looked up in
	// known_hosts instead of HostName.
	HostKeyAlias string
}

// Result is the outcome of a remote command that ran to completion.
type Result struct {
	Stdout   string
	Stderr   string
	ExitCode int
	// Signal is set (e.g. "TERM") when the command was killed by a signal;
	// ExitCode is then 128+signal number.
	Signal string
}

// FileInfo describes a remote path.
type FileInfo struct {
	// Mode holds the permission bits plus os.ModeSetuid/Setgid/Sticky, and
	// os.ModeDir/ModeSymlink/ModeIrregular for non-regular files.
	Mode os.FileMode
	Size int64
	// SHA256 is the hex digest of a regular file's content ("" otherwise).
	SHA256 string
	// Owner is "user:group" as the remote host names them.
	Owner  string
	Exists bool
}

// The error kinds. Every error of this package that matches one of these is
// an *Error whose message tells the operator what happened and what to do;
// test with errors.Is.
var (
	// ErrUnknownHost: known_hosts holds no key for the host. Never TOFU.
	ErrUnknownHost = errors.New("host key unknown")
	// ErrHostKeyChanged: known_hosts holds a different key for the host.
	ErrHostKeyChanged = errors.New("host key changed")
	// ErrUnreachable: TCP connect or SSH handshake did not complete.
	ErrUnreachable = errors.New("host unreachable")
	// ErrAuth: the server refused every key offered.
	ErrAuth = errors.New("authentication failed")
	// ErrSudo: `sudo -n` refused (password required, not permitted, missing).
	ErrSudo = errors.New("sudo refused")
	// ErrUserConflict: Options.User and ssh_config's User disagree.
	ErrUserConflict = errors.New("login user conflict")
)

// Error is the typed error of this package.
type Error struct {
	// Kind is one of the Err* sentinels, or nil for other failures.
	Kind error
	// Alias is the ssh_config alias (or hop) concerned.
	Alias string
	// Addr is the network address concerned, when there is one.
	Addr string
	// Msg is the operator-facing explanation.
	Msg string
	// Err is the underlying cause, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("sshx: ")
	b.WriteString(e.Msg)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap exposes both the kind and the cause to errors.Is / errors.As.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}
