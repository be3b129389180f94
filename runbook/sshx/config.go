package sshx

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kevinburke/ssh_config"
)

// sshConfig wraps one ssh_config file read with the strict accessors, so
// parse errors surface instead of silently yielding defaults. A nil
// *sshConfig means "no config file".
type sshConfig struct {
	file string
	us   *ssh_config.UserSettings
}

// loadConfig prepares the ssh_config named by o (already normalized).
func loadConfig(o Options, explicit bool) (*sshConfig, error) {
	if _, err := os.Stat(o.ConfigFile); err != nil {
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			return nil, nil
		}
		return nil, &Error{Msg: fmt.Sprintf("cannot read ssh_config %s", o.ConfigFile), Err: err}
	}
	us := &ssh_config.UserSettings{}
	file := o.ConfigFile
	us.ConfigFinder(func() string { return file })
	return &sshConfig{file: file, us: us}, nil
}

func (c *sshConfig) wrap(key string, err error) error {
	return &Error{Msg: fmt.Sprintf("ssh_config %s (looking up %s)", c.file, key), Err: err}
}

// get returns the first value of key for alias, or "" when unset. Values equal
// to the library's built-in default are reported as unset when dropDefault.
func (c *sshConfig) get(alias, key string, dropDefault bool) (string, error) {
	if c == nil {
		return "", nil
	}
	v, err := c.us.GetStrict(alias, key)
	if err != nil {
		return "", c.wrap(key, err)
	}
	if dropDefault && v == ssh_config.Default(key) {
		return "", nil
	}
	return v, nil
}

// getAll returns every value of key for alias (nil when unset; the library's
// single built-in default is reported as unset).
func (c *sshConfig) getAll(alias, key string) ([]string, error) {
	if c == nil {
		return nil, nil
	}
	v, err := c.us.GetAllStrict(alias, key)
	if err != nil {
		return nil, c.wrap(key, err)
	}
	if len(v) == 1 && v[0] == ssh_config.Default(key) {
		return nil, nil
	}
	return v, nil
}

// Resolve resolves alias through ssh_config the way `ssh alias` would.
func Resolve(alias string, o Options) (Target, error) {
	o, explicit := o.normalized()
	cfg, err := loadConfig(o, explicit)
	if err != nil {
		return Target{}, err
	}
	return resolve(alias, o, cfg)
}

func resolve(alias string, o Options, cfg *sshConfig) (Target, error) {
	if alias == "" || strings.ContainsAny(alias, " \t\n/") {
		return Target{}, &Error{Alias: alias, Msg: fmt.Sprintf("invalid host alias %q", alias)}
	}
	t := Target{Alias: alias}

	hostName, err := cfg.get(alias, "HostName", false)
	if err != nil {
		return Target{}, err
	}
	if hostName == "" {
		t.HostName = alias
	} else if t.HostName, err = expandTokens(hostName, map[byte]string{'h': alias}, "HostName"); err != nil {
		return Target{}, err
	}

	if t.User, err = cfg.get(alias, "User", false); err != nil {
		return Target{}, err
	}
	if o.User != "" {
		if t.User != "" && t.User != o.User {
			return Target{}, &Error{Kind: ErrUserConflict, Alias: alias, Msg: fmt.Sprintf(
				"login user for %s: the topology says %q but ssh_config %s says User %s; make them agree (or put - as the login user in nodes.env to let ssh_config decide)",
				alias, o.User, cfg.file, t.User)}
		}
		t.User = o.User
	}
	if t.User == "" {
		t.User = localUser()
	}

	port, err := cfg.get(alias, "Port", false)
	if err != nil {
		return Target{}, err
	}
	t.Port = 22
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return Target{}, &Error{Alias: alias, Msg: fmt.Sprintf("ssh_config %s: invalid Port %q for %s", cfg.file, port, alias)}
		}
		t.Port = p
	}

	if t.HostKeyAlias, err = cfg.get(alias, "HostKeyAlias", false); err != nil {
		return Target{}, err
	}

	jump, err := cfg.get(alias, "ProxyJump", false)
	if err != nil {
		return Target{}, err
	}
	if jump != "" && !strings.EqualFold(jump, "none") {
		for _, h := range strings.Split(jump, ",") {
			if h = strings.TrimSpace(h); h != "" {
				t.ProxyJump = append(t.ProxyJump, h)
			}
		}
	}

	tokens := t.tokens()

	// Identity files: explicit extras first, then ssh_config, else defaults.
	var ids []string
	for _, f := range o.IdentityFiles {
		p, err := expandPath(f, tokens, "IdentityFiles")
		if err != nil {
			return Target{}, err
		}
		ids = append(ids, p)
	}
	cfgIDs, err := cfg.getAll(alias, "IdentityFile")
	if err != nil {
		return Target{}, err
	}
	for _, f := range cfgIDs {
		p, err := expandPath(f, tokens, "IdentityFile")
		if err != nil {
			return Target{}, err
		}
		ids = append(ids, p)
	}
	if len(ids) == 0 {
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			ids = append(ids, filepath.Join(homeDir(), ".ssh", n))
		}
	}
	t.IdentityFiles = dedupe(ids)

	// known_hosts files.
	khs := o.KnownHosts
	if len(khs) == 0 {
		v, err := cfg.get(alias, "UserKnownHostsFile", true)
		if err != nil {
			return Target{}, err
		}
		if v == "" {
			khs = []string{"~/.ssh/known_hosts"}
		} else if !strings.EqualFold(strings.TrimSpace(v), "none") {
			khs = strings.Fields(v)
		}
	}
	for _, f := range khs {
		p, err := expandPath(f, tokens, "UserKnownHostsFile")
		if err != nil {
			return Target{}, err
		}
		t.KnownHosts = append(t.KnownHosts, p)
	}
	t.KnownHosts = dedupe(t.KnownHosts)
	return t, nil
}

// resolveChain returns the hops to dial in order, ending with t itself. The
// first hop's own ProxyJump is honoured (as OpenSSH does, since it reaches
// that hop with its own config); later hops are reached through the previous
// one.
func resolveChain(t Target, o Options, cfg *sshConfig, depth int) ([]Target, error) {
	if len(t.ProxyJump) == 0 {
		return []Target{t}, nil
	}
	if depth > 8 {
		return nil, &Error{Alias: t.Alias, Msg: fmt.Sprintf("ProxyJump chain for %s is longer than 8 hops (a loop in ssh_config?)", t.Alias)}
	}
	o.User = "" // the login user is the target's, not its jump hosts'
	var chain []Target
	for i, spec := range t.ProxyJump {
		user, host, port, err := parseJump(spec)
		if err != nil {
			return nil, &Error{Alias: t.Alias, Msg: fmt.Sprintf("ProxyJump of %s", t.Alias), Err: err}
		}
		hop, err := resolve(host, o, cfg)
		if err != nil {
			return nil, err
		}
		if user != "" {
			hop.User = user
		}
		if port != 0 {
			hop.Port = port
		}
		if i == 0 {
			sub, err := resolveChain(hop, o, cfg, depth+1)
			if err != nil {
				return nil, err
			}
			chain = append(chain, sub...)
		} else {
			hop.ProxyJump = nil
			chain = append(chain, hop)
		}
	}
	return append(chain, t), nil
}

// parseJump parses one ProxyJump entry: [user@]host[:port] or
// ssh://[user@]host[:port]; IPv6 hosts are bracketed.
func parseJump(spec string) (user, host string, port int, err error) {
	s := strings.TrimPrefix(spec, "ssh://")
	if i := strings.LastIndex(s, "@"); i >= 0 {
		user, s = s[:i], s[i+1:]
	}
	host = s
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return "", "", 0, fmt.Errorf("bad hop %q: %w", spec, err)
		}
		host = h
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return "", "", 0, fmt.Errorf("bad port in hop %q", spec)
		}
	}
	if host == "" {
		return "", "", 0, fmt.Errorf("empty host in hop %q", spec)
	}
	return user, host, port, nil
}

// tokens returns the ssh_config %-tokens for t (see ssh_config(5) TOKENS).
func (t Target) tokens() map[byte]string {
	lh, _ := os.Hostname()
	short, _, _ := strings.Cut(lh, ".")
	k := t.HostKeyAlias
	if k == "" {
		k = t.HostName
	}
	return map[byte]string{
		'd': homeDir(),
		'u': localUser(),
		'i': strconv.Itoa(os.Getuid()),
		'l': lh,
		'L': short,
		'h': t.HostName,
		'n': t.Alias,
		'r': t.User,
		'p': strconv.Itoa(t.Port),
		'k': k,
	}
}

// expandTokens replaces %x tokens; %% is a literal percent. An unknown token
// is an error, as in OpenSSH.
func expandTokens(s string, tokens map[byte]string, what string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) {
			return "", &Error{Msg: fmt.Sprintf("%s %q ends with a lone %%", what, s)}
		}
		i++
		if s[i] == '%' {
			b.WriteByte('%')
			continue
		}
		v, ok := tokens[s[i]]
		if !ok {
			return "", &Error{Msg: fmt.Sprintf("%s %q: unsupported token %%%c", what, s, s[i])}
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// expandPath expands a leading ~ or ~user and then %tokens.
func expandPath(p string, tokens map[byte]string, what string) (string, error) {
	if strings.HasPrefix(p, "~") {
		rest := p[1:]
		name, tail, _ := strings.Cut(rest, "/")
		var home string
		if name == "" {
			home = homeDir()
		} else {
			u, err := osuser.Lookup(name)
			if err != nil {
				return "", &Error{Msg: fmt.Sprintf("%s %q: unknown user ~%s", what, p, name), Err: err}
			}
			home = u.HomeDir
		}
		p = filepath.Join(home, tail)
	}
	return expandTokens(p, tokens, what)
}

func homeDir() string {
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return h
	}
	if u, err := osuser.Current(); err == nil {
		return u.HomeDir
	}
	return "/"
}

func localUser() string {
	if u, err := osuser.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}

func dedupe(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := in[:0:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
