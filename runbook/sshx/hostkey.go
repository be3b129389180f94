package sshx

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// knownHosts is the host-key database for one hop.
type knownHosts struct {
	files   []string // existing files that were loaded
	missing []string // configured files that do not exist
	cb      ssh.HostKeyCallback
}

func loadKnownHosts(files []string) (*knownHosts, error) {
	kh := &knownHosts{}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				kh.missing = append(kh.missing, f)
				continue
			}
			return nil, &Error{Msg: fmt.Sprintf("cannot read known_hosts %s", f), Err: err}
		}
		kh.files = append(kh.files, f)
	}
	if len(kh.files) == 0 {
		return kh, nil
	}
	cb, err := knownhosts.New(kh.files...)
	if err != nil {
		return nil, &Error{Msg: fmt.Sprintf("cannot parse known_hosts %s", strings.Join(kh.files, ", ")), Err: err}
	}
	kh.cb = cb
	return kh, nil
}

// throwawayKey is a key no known_hosts can hold: checking it against the
// database always fails with a KeyError whose Want lists every key known for
// the host.
var throwawayKey = sync.OnceValue(func() ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return k
})

// fakeAddr is a net.Addr for the known_hosts probe.
type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// knownKeys returns the keys known_hosts holds for name ("host:port").
func (kh *knownHosts) knownKeys(name string) ([]knownhosts.KnownKey, error) {
	if kh.cb == nil {
		return nil, nil
	}
	err := kh.cb(name, fakeAddr(name), throwawayKey())
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		return ke.Want, nil
	}
	if err == nil {
		return nil, errors.New("known_hosts accepted a random key (wildcard entry?)")
	}
	return nil, err
}

// algoRank orders host-key algorithms: ed25519 first, then ECDSA, then RSA.
var algoRank = map[string]int{
	ssh.KeyAlgoED25519:    0,
	ssh.KeyAlgoSKED25519:  1,
	ssh.KeyAlgoECDSA256:   2,
	ssh.KeyAlgoECDSA384:   3,
	ssh.KeyAlgoECDSA521:   4,
	ssh.KeyAlgoSKECDSA256: 5,
	ssh.KeyAlgoRSASHA512:  6,
	ssh.KeyAlgoRSASHA256:  7,
}

// hostKeyAlgorithms maps the key types known_hosts holds to the algorithms
// to offer, so the server is asked for a key we can actually verify (the
// golang/go#29286 trap). ssh-rsa keys are offered as rsa-sha2-* signatures.
func hostKeyAlgorithms(known []knownhosts.KnownKey) []string {
	set := map[string]bool{}
	for _, k := range known {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			set[ssh.KeyAlgoRSASHA512] = true
			set[ssh.KeyAlgoRSASHA256] = true
		default:
			set[t] = true
		}
	}
	algos := make([]string, 0, len(set))
	for a := range set {
		algos = append(algos, a)
	}
	sort.Slice(algos, func(i, j int) bool {
		ri, iok := algoRank[algos[i]]
		rj, jok := algoRank[algos[j]]
		if iok != jok {
			return iok
		}
		if ri != rj {
			return ri < rj
		}
		return algos[i] < algos[j]
	})
	return algos
}

// unknownHostAlgorithms is the preference used when known_hosts holds nothing
// for the host: the connection is refused anyway, but the key the operator is
// told about (and asked to verify) should be the ed25519 one, as OpenSSH does.
var unknownHostAlgorithms = []string{
	ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
}

// hostKeyVerifier checks the key a hop presents and keeps the typed error,
// because the SSH handshake flattens it into a string.
type hostKeyVerifier struct {
	kh    *knownHosts
	label string // "magnus" or "jump host dd (for magnus)"
	alias string
	name  string // host:port looked up in known_hosts
	host  string // HostName, for ssh-keyscan advice
	// hostKeyAlias is set when known_hosts is keyed by HostKeyAlias.
	hostKeyAlias string
	port         int
	err          error
}

func (v *hostKeyVerifier) check(hostname string, remote net.Addr, key ssh.PublicKey) error {
	if v.kh.cb == nil {
		v.err = v.unknown(key)
		return v.err
	}
	err := v.kh.cb(hostname, remote, key)
	if err == nil {
		return nil
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &ke) && len(ke.Want) == 0:
		v.err = v.unknown(key)
	case errors.As(err, &ke):
		v.err = v.changed(ke.Want, key)
	case errors.As(err, &re):
		v.err = &Error{Kind: ErrHostKeyChanged, Alias: v.alias, Addr: v.name, Msg: fmt.Sprintf(
			"HOST KEY REVOKED for %s (%s): the server presented %s %s, which %s:%d marks @revoked; refusing to connect",
			v.label, knownhosts.Normalize(v.name), key.Type(), ssh.FingerprintSHA256(key), re.Revoked.Filename, re.Revoked.Line)}
	default:
		v.err = &Error{Alias: v.alias, Addr: v.name, Msg: fmt.Sprintf("host key check for %s failed", v.label), Err: err}
	}
	return v.err
}

func (v *hostKeyVerifier) keyscan(keyType string) string {
	p := ""
	if v.port != 22 {
		p = " -p " + strconv.Itoa(v.port)
	}
	t := ""
	if kt := shortKeyType(keyType); kt != "" {
		t = " -t " + kt
	}
	return fmt.Sprintf("ssh-keyscan%s%s %s", p, t, v.host)
}

// shortKeyType maps a key type to ssh-keyscan's -t name and the host key
// file suffix (ed25519, ecdsa, rsa).
func shortKeyType(keyType string) string {
	switch {
	case keyType == "":
		return ""
	case strings.Contains(keyType, "ed25519"):
		return "ed25519"
	case strings.Contains(keyType, "ecdsa"):
		return "ecdsa"
	case strings.Contains(keyType, "rsa"):
		return "rsa"
	}
	return keyType
}

func (v *hostKeyVerifier) files() string {
	var parts []string
	if len(v.kh.files) > 0 {
		parts = append(parts, strings.Join(v.kh.files, ", "))
	}
	if len(v.kh.missing) > 0 {
		parts = append(parts, "missing: "+strings.Join(v.kh.missing, ", "))
	}
	if len(parts) == 0 {
		return "no known_hosts file configured"
	}
	return strings.Join(parts, "; ")
}

func (v *hostKeyVerifier) target() string {
	if len(v.kh.files) > 0 {
		return v.kh.files[0]
	}
	if len(v.kh.missing) > 0 {
		return v.kh.missing[0]
	}
	return "~/.ssh/known_hosts"
}

func (v *hostKeyVerifier) unknown(key ssh.PublicKey) error {
	name := knownhosts.Normalize(v.name)
	presented := ""
	kt := "ssh-ed25519"
	if key != nil {
		kt = key.Type()
		presented = fmt.Sprintf(" The server presented %s %s (NOT trusted).", kt, ssh.FingerprintSHA256(key))
	}
	alias := ""
	if v.hostKeyAlias != "" {
		alias = fmt.Sprintf(" (HostKeyAlias: replace the host field of that line with %s)", name)
	}
	return &Error{Kind: ErrUnknownHost, Alias: v.alias, Addr: v.name, Msg: fmt.Sprintf(
		"host key for %s (%s) is not in known_hosts (%s); refusing to trust it on first use.%s "+
			"Verify the fingerprint out of band, then add it: `%s > /tmp/hostkey && ssh-keygen -lf /tmp/hostkey`, "+
			"compare with `ssh-keygen -lf /etc/ssh/ssh_host_%s_key.pub` run on the host's console, "+
			"and only if they match: `cat /tmp/hostkey >> %s`%s",
		v.label, name, v.files(), presented, v.keyscan(kt), shortKeyType(kt), v.target(), alias)}
}

func (v *hostKeyVerifier) changed(want []knownhosts.KnownKey, key ssh.PublicKey) error {
	var held []string
	file := ""
	for _, w := range want {
		held = append(held, fmt.Sprintf("%s:%d holds %s %s", w.Filename, w.Line, w.Key.Type(), ssh.FingerprintSHA256(w.Key)))
		if file == "" {
			file = w.Filename
		}
	}
	name := knownhosts.Normalize(v.name)
	return &Error{Kind: ErrHostKeyChanged, Alias: v.alias, Addr: v.name, Msg: fmt.Sprintf(
		"HOST KEY CHANGED for %s (%s): %s, but the server presented %s %s. "+
			"Someone may be intercepting the connection (man-in-the-middle); refusing to connect. "+
			"If the host was legitimately rebuilt, verify the new fingerprint out of band, "+
			"remove the old entry with `ssh-keygen -R '%s' -f %s`, then add the verified key",
		v.label, name, strings.Join(held, "; "), key.Type(), ssh.FingerprintSHA256(key), name, file)}
}

// noCommonHostKey explains an algorithm negotiation failure on the host key:
// the server offers none of the key types known_hosts holds for it.
func (v *hostKeyVerifier) noCommonHostKey(known []knownhosts.KnownKey, offered []string) error {
	var held []string
	for _, w := range known {
		held = append(held, fmt.Sprintf("%s:%d %s %s", w.Filename, w.Line, w.Key.Type(), ssh.FingerprintSHA256(w.Key)))
	}
	return &Error{Kind: ErrHostKeyChanged, Alias: v.alias, Addr: v.name, Msg: fmt.Sprintf(
		"HOST KEY CHANGED for %s (%s): known_hosts holds only %s, but the server offers none of those key types (it offers %s); refusing to connect. "+
			"Verify the host's keys out of band (`%s`) before updating known_hosts",
		v.label, knownhosts.Normalize(v.name), strings.Join(held, "; "), strings.Join(offered, ","), v.keyscan(""))}
}
