package sshx

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// parseJump never panics; what it accepts has a host and a valid port.
func FuzzParseJump(f *testing.F) {
	for _, s := range []string{"user@bastion:2222", "ssh://[::1]:22", "bastion", "a@b@c", ":22", "[::1", "h:99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		_, host, port, err := parseJump(spec)
		if err != nil {
			return
		}
		if host == "" || port < 0 || port > 65535 {
			t.Fatalf("%q -> host %q port %d", spec, host, port)
		}
	})
}

// Resolve never panics on an arbitrary ssh_config and alias.
func FuzzResolveConfig(f *testing.F) {
	f.Add("Host n1\n  HostName 10.77.0.11\n  User ubuntu\n  Port 2222\n  ProxyJump j@bastion:22\n", "n1")
	f.Add("Host *\n  Port x\n", "n1")
	f.Add("Host a\n  ProxyJump a\n", "a")
	f.Add("Host %h\n HostName %h.%d\n", "z")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, cfg, alias string) {
		if strings.Contains(cfg, "Include") {
			return // would read files outside the test
		}
		p := filepath.Join(dir, "ssh_config")
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = Resolve(alias, Options{ConfigFile: p, KnownHosts: []string{filepath.Join(dir, "known_hosts")}})
	})
}
