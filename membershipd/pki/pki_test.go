package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

const day = 24 * time.Hour

func mustCA(t *testing.T, cn string) *CA {
	t.Helper()
	ca, err := NewCA(cn, 30*day)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", cn, err)
	}
	return ca
}

// writeLeaf writes a leaf under dir and returns its paths.
func writeLeaf(t *testing.T, dir, base string, l *Leaf) (string, string) {
	t.Helper()
	c, k, err := WriteFiles(dir, base, l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatalf("WriteFiles(%s): %v", base, err)
	}
	return c, k
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func skipModesOnWindows(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("POSIX file modes not supported")
	}
}

func TestNewCA(t *testing.T) {
	before := time.Now()
	ca := mustCA(t, "test CA")
	c := ca.Cert

	if !c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("IsCA=%v BasicConstraintsValid=%v, want both true", c.IsCA, c.BasicConstraintsValid)
	}
	if c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("MaxPathLen=%d MaxPathLenZero=%v, want 0/true", c.MaxPathLen, c.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage != want {
		t.Errorf("KeyUsage=%v, want %v", c.KeyUsage, want)
	}
	if c.Subject.CommonName != "test CA" {
		t.Errorf("CN=%q", c.Subject.CommonName)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v not a positive <=128-bit number", c.SerialNumber)
	}
	if d := before.Add(-time.Hour).Sub(c.NotBefore); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("NotBefore=%v, want about now-1h", c.NotBefore)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if !bytes.Contains(ca.CertPEM, []byte("BEGIN CERTIFICATE")) || !bytes.Contains(ca.KeyPEM, []byte("BEGIN PRIVATE KEY")) {
		t.Errorf("unexpected PEM encoding")
	}

	other := mustCA(t, "test CA")
	if other.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Errorf("two CAs share serial %v", c.SerialNumber)
	}

	for _, tc := range []struct {
		name     string
		cn       string
		validity time.Duration
	}{
		{"empty CN", "", day},
		{"zero validity", "x", 0},
		{"negative validity", "x", -day},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewCA(tc.cn, tc.validity); err == nil {
				t.Fatal("expected error")
			}
		})
	}
}

func TestLoadCA(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "load me")
	caCert, caKey, err := WriteFiles(dir, "ca", ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	other := mustCA(t, "other")
	_, otherKey, err := WriteFiles(dir, "other", other.CertPEM, other.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueClient("leaf", day)
	if err != nil {
		t.Fatal(err)
	}
	leafCert, leafKey := writeLeaf(t, dir, "leaf", leaf)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.crt")

	t.Run("round trip", func(t *testing.T) {
		got, err := LoadCA(caCert, caKey)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Cert.Equal(ca.Cert) {
			t.Error("loaded cert differs")
		}
		// A loaded CA must be able to issue certs that chain to it.
		l, err := got.IssueClient("c", day)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Cert.CheckSignatureFrom(ca.Cert); err != nil {
			t.Error(err)
		}
	})

	for _, tc := range []struct {
		name, cert, key string
		want            []string
	}{
		{"missing cert", missing, caKey, []string{"read CA certificate", missing, "no such file"}},
		{"missing key", caCert, missing, []string{"read CA key", missing, "no such file"}},
		{"garbage cert", garbage, caKey, []string{garbage, "no PEM certificate"}},
		{"garbage key", caCert, garbage, []string{garbage, "no PEM private key"}},
		{"mismatched key", caCert, otherKey, []string{otherKey, "does not match", caCert}},
		{"leaf is not a CA", leafCert, leafKey, []string{leafCert, "not a CA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCA(tc.cert, tc.key)
			if err == nil {
				t.Fatal("expected error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestIssueSANsAndUsages(t *testing.T) {
	ca := mustCA(t, "issuer")
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}

	for _, tc := range []struct {
		name      string
		issue     func() (*Leaf, error)
		wantCN    string
		wantIPs   []string
		wantDNS   []string
		wantEKU   []x509.ExtKeyUsage
		wantNoSAN bool
	}{
		{
			name:    "server with IPs and DNS",
			issue:   func() (*Leaf, error) { return ca.IssueServer("n1", []string{"10.0.0.1", "n1.example.com", "::1"}, day) },
			wantCN:  "n1",
			wantIPs: []string{"127.0.0.1", "10.0.0.1", "::1"},
			wantDNS: []string{"localhost", "n1.example.com"},
			wantEKU: both,
		},
		{
			name:    "server without hosts",
			issue:   func() (*Leaf, error) { return ca.IssueServer("bare", nil, day) },
			wantCN:  "bare",
			wantIPs: []string{"127.0.0.1"},
			wantDNS: []string{"localhost"},
			wantEKU: both,
		},
		{
			name: "server dedups and trims",
			issue: func() (*Leaf, error) {
				return ca.IssueServer("d", []string{" 127.0.0.1 ", "LOCALHOST", "", "[fd00::1]", "fd00::1", "a.b"}, day)
			},
			wantCN:  "d",
			wantIPs: []string{"127.0.0.1", "fd00::1"},
			wantDNS: []string{"localhost", "a.b"},
			wantEKU: both,
		},
		{
			name:    "route",
			issue:   func() (*Leaf, error) { return ca.IssueRoute("node-2", []string{"192.168.1.2", "node-2.internal"}, day) },
			wantCN:  "node-2",
			wantIPs: []string{"127.0.0.1", "192.168.1.2"},
			wantDNS: []string{"localhost", "node-2.internal"},
			wantEKU: both,
		},
		{
			name:      "client",
			issue:     func() (*Leaf, error) { return ca.IssueClient("operator", day) },
			wantCN:    "operator",
			wantEKU:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			wantNoSAN: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := tc.issue()
			if err != nil {
				t.Fatal(err)
			}
			c := l.Cert
			if c.Subject.CommonName != tc.wantCN {
				t.Errorf("CN=%q, want %q", c.Subject.CommonName, tc.wantCN)
			}
			if c.IsCA {
				t.Error("leaf is a CA")
			}
			if !slices.Equal(c.ExtKeyUsage, tc.wantEKU) {
				t.Errorf("EKU=%v, want %v", c.ExtKeyUsage, tc.wantEKU)
			}
			if c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
				t.Errorf("KeyUsage %v lacks DigitalSignature", c.KeyUsage)
			}
			if err := c.CheckSignatureFrom(ca.Cert); err != nil {
				t.Errorf("not signed by CA: %v", err)
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v", c.SerialNumber)
			}
			if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok {
				t.Errorf("public key %T, want ECDSA", c.PublicKey)
			}
			if tc.wantNoSAN {
				if len(c.IPAddresses)+len(c.DNSNames) != 0 {
					t.Errorf("unexpected SANs %v %v", c.IPAddresses, c.DNSNames)
				}
				return
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.wantIPs) {
				t.Errorf("IPs=%v, want %v", ips, tc.wantIPs)
			}
			if !slices.Equal(c.DNSNames, tc.wantDNS) {
				t.Errorf("DNS=%v, want %v", c.DNSNames, tc.wantDNS)
			}
			// Hostname verification must accept every SAN.
			for _, h := range append(ips, c.DNSNames...) {
				if err := c.VerifyHostname(h); err != nil {
					t.Errorf("VerifyHostname(%q): %v", h, err)
				}
			}
		})
	}
}

func TestIssueErrors(t *testing.T) {
	ca := mustCA(t, "issuer")
	expired := mustCA(t, "expired")
	expired.Cert.NotAfter = time.Now().Add(-time.Minute)

	for _, tc := range []struct {
		name  string
		issue func() (*Leaf, error)
		want  string
	}{
		{"empty server CN", func() (*Leaf, error) { return ca.IssueServer("", nil, day) }, "empty common name"},
		{"empty route CN", func() (*Leaf, error) { return ca.IssueRoute("", nil, day) }, "empty common name"},
		{"empty client CN", func() (*Leaf, error) { return ca.IssueClient("", day) }, "empty common name"},
		{"zero validity", func() (*Leaf, error) { return ca.IssueClient("c", 0) }, "validity"},
		{"host with port", func() (*Leaf, error) { return ca.IssueServer("s", []string{"n1:4222"}, day) }, `"n1:4222"`},
		{"URL host", func() (*Leaf, error) { return ca.IssueRoute("r", []string{"nats://n1"}, day) }, "neither an IP"},
		{"expired CA", func() (*Leaf, error) { return expired.IssueClient("c", day) }, "expired"},
		{"nil CA", func() (*Leaf, error) { return (*CA)(nil).IssueClient("c", day) }, "not initialised"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.issue()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLeafValidityClampedToCA(t *testing.T) {
	ca, err := NewCA("short", 2*day)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ca.IssueServer("s", nil, 365*day)
	if err != nil {
		t.Fatal(err)
	}
	if l.Cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("leaf NotAfter %v outlives CA %v", l.Cert.NotAfter, ca.Cert.NotAfter)
	}
}

func TestWriteFiles(t *testing.T) {
	skipModesOnWindows(t)
	dir := filepath.Join(t.TempDir(), "a", "b")
	certPath, keyPath, err := WriteFiles(dir, "svc", []byte("CERT1"), []byte("KEY1"))
	if err != nil {
		t.Fatal(err)
	}
	if certPath != filepath.Join(dir, "svc.crt") || keyPath != filepath.Join(dir, "svc.key") {
		t.Errorf("paths %s %s", certPath, keyPath)
	}
	if m := fileMode(t, dir); m != 0o700 {
		t.Errorf("dir mode %04o, want 0700", m)
	}
	if m := fileMode(t, keyPath); m != 0o600 {
		t.Errorf("key mode %04o, want 0600", m)
	}
	if m := fileMode(t, certPath); m != 0o644 {
		t.Errorf("cert mode %04o, want 0644", m)
	}

	// Overwriting a key that was loosened by hand yields 0600 again, since
	// the replacement is a new file created with the right mode.
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := WriteFiles(dir, "svc", []byte("CERT2"), []byte("KEY2")); err != nil {
		t.Fatal(err)
	}
	if m := fileMode(t, keyPath); m != 0o600 {
		t.Errorf("rewritten key mode %04o, want 0600", m)
	}
	if got := string(readFile(t, certPath)); got != "CERT2" {
		t.Errorf("cert content %q", got)
	}
	if got := string(readFile(t, keyPath)); got != "KEY2" {
		t.Errorf("key content %q", got)
	}

	// No temp files left behind.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"svc.crt", "svc.key"}; !slices.Equal(names, want) {
		t.Errorf("dir holds %v, want %v", names, want)
	}

	for _, bad := range []string{"", ".", "..", "a/b"} {
		if _, _, err := WriteFiles(dir, bad, nil, nil); err == nil {
			t.Errorf("WriteFiles base %q: expected error", bad)
		}
	}
}

// fixture mints two independent CAs with a leaf of each kind on disk.
type fixture struct {
	clientCA, routeCA                  string
	server, serverKey, route, routeKey string
	client, clientKey                  string
	expired                            string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	dir := t.TempDir()
	cca := mustCA(t, "client CA")
	rca := mustCA(t, "route CA")
	var f fixture
	f.clientCA, _ = writeLeaf(t, dir, "client-ca", &Leaf{CertPEM: cca.CertPEM, KeyPEM: cca.KeyPEM})
	f.routeCA, _ = writeLeaf(t, dir, "route-ca", &Leaf{CertPEM: rca.CertPEM, KeyPEM: rca.KeyPEM})

	srv, err := cca.IssueServer("n1", []string{"10.1.1.1"}, day)
	if err != nil {
		t.Fatal(err)
	}
	f.server, f.serverKey = writeLeaf(t, dir, "server", srv)
	rt, err := rca.IssueRoute("n1", []string{"10.1.1.1"}, day)
	if err != nil {
		t.Fatal(err)
	}
	f.route, f.routeKey = writeLeaf(t, dir, "route", rt)
	cl, err := cca.IssueClient("operator", day)
	if err != nil {
		t.Fatal(err)
	}
	f.client, f.clientKey = writeLeaf(t, dir, "client", cl)

	// Forge an expired (but correctly signed) leaf by re-signing a template.
	tmpl := *srv.Cert
	tmpl.NotBefore = time.Now().Add(-48 * time.Hour)
	tmpl.NotAfter = time.Now().Add(-24 * time.Hour)
	key, err := parseKey(srv.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, cca.Cert, key.Public(), cca.Key)
	if err != nil {
		t.Fatal(err)
	}
	f.expired, _ = writeLeaf(t, dir, "expired", &Leaf{CertPEM: encodeCert(der), KeyPEM: srv.KeyPEM})
	return f
}

func TestVerifyFile(t *testing.T) {
	f := newFixture(t)
	missing := filepath.Join(filepath.Dir(f.clientCA), "nope.crt")
	server, client := x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth

	for _, tc := range []struct {
		name       string
		cert, ca   string
		usage      x509.ExtKeyUsage
		wantSubstr []string // empty => must succeed
	}{
		{"route cert vs route CA (server)", f.route, f.routeCA, server, nil},
		{"route cert vs route CA (client)", f.route, f.routeCA, client, nil},
		{"server cert vs client CA (server)", f.server, f.clientCA, server, nil},
		{"server cert vs client CA (client)", f.server, f.clientCA, client, nil},
		{"client cert vs client CA", f.client, f.clientCA, client, nil},
		{"route cert vs client CA", f.route, f.clientCA, server, []string{"certificate " + f.route + " is not signed by CA " + f.clientCA, "x509:"}},
		{"server cert vs route CA", f.server, f.routeCA, server, []string{"not signed by CA " + f.routeCA}},
		{"client cert vs route CA", f.client, f.routeCA, client, []string{"not signed"}},
		{"client cert used as server", f.client, f.clientCA, server, []string{f.client, "not valid for server auth"}},
		{"expired cert", f.expired, f.clientCA, server, []string{f.expired, "expired"}},
		{"missing cert", missing, f.clientCA, server, []string{"read certificate " + missing + ": no such file"}},
		{"missing CA", f.server, missing, server, []string{"read CA certificate " + missing + ": no such file"}},
		{"key instead of cert", f.serverKey, f.clientCA, server, []string{f.serverKey, "no PEM certificate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyFile(tc.cert, tc.ca, tc.usage)
			if len(tc.wantSubstr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("expected error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not a one-liner: %q", msg)
			}
			for _, w := range tc.wantSubstr {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}

	if err := VerifyFile(missing, f.clientCA, server); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing cert error %v does not wrap fs.ErrNotExist", err)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	f := newFixture(t)
	missing := filepath.Join(filepath.Dir(f.clientCA), "nope")

	t.Run("server config fields", func(t *testing.T) {
		for _, require := range []bool{true, false} {
			cfg, err := ServerTLSConfig(f.server, f.serverKey, f.clientCA, require)
			if err != nil {
				t.Fatal(err)
			}
			want := tls.NoClientCert
			if require {
				want = tls.RequireAndVerifyClientCert
			}
			if cfg.ClientAuth != want || cfg.MinVersion != tls.VersionTLS12 {
				t.Errorf("require=%v: ClientAuth=%v MinVersion=%x", require, cfg.ClientAuth, cfg.MinVersion)
			}
			if cfg.ClientCAs == nil || cfg.RootCAs == nil || !cfg.ClientCAs.Equal(cfg.RootCAs) {
				t.Errorf("ClientCAs and RootCAs must be the same pool")
			}
			if len(cfg.Certificates) != 1 {
				t.Errorf("%d certificates", len(cfg.Certificates))
			}
		}
	})

	t.Run("client config without cert", func(t *testing.T) {
		cfg, err := ClientTLSConfig(f.clientCA, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if cfg.RootCAs == nil || len(cfg.Certificates) != 0 || cfg.MinVersion != tls.VersionTLS12 {
			t.Errorf("unexpected config %+v", cfg)
		}
	})

	for _, tc := range []struct {
		name string
		fn   func() error
		want []string
	}{
		{"server missing cert", func() error { _, err := ServerTLSConfig(missing, f.serverKey, f.clientCA, true); return err }, []string{missing}},
		{"server missing key", func() error { _, err := ServerTLSConfig(f.server, missing, f.clientCA, true); return err }, []string{missing}},
		{"server mismatched key", func() error { _, err := ServerTLSConfig(f.server, f.routeKey, f.clientCA, true); return err }, []string{f.server, f.routeKey}},
		{"server missing CA", func() error { _, err := ServerTLSConfig(f.server, f.serverKey, missing, true); return err }, []string{missing}},
		{"server require without CA", func() error { _, err := ServerTLSConfig(f.server, f.serverKey, "", true); return err }, []string{"no client CA"}},
		{"client missing CA", func() error { _, err := ClientTLSConfig(missing, "", ""); return err }, []string{missing}},
		{"client cert without key", func() error { _, err := ClientTLSConfig(f.clientCA, f.client, ""); return err }, []string{"together"}},
		{"client missing key", func() error { _, err := ClientTLSConfig(f.clientCA, f.client, missing); return err }, []string{missing}},
		{"pool from non-PEM", func() error { _, err := CertPoolFromFile(f.clientKey); return err }, []string{f.clientKey, "no PEM certificate"}},
		{"pool empty path", func() error { _, err := CertPoolFromFile(""); return err }, []string{"empty path"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.fn()
			if err == nil {
				t.Fatal("expected error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	if _, err := ServerTLSConfig(f.server, f.serverKey, "", false); err != nil {
		t.Errorf("server config without client CA: %v", err)
	}
}

// handshake runs a real TLS handshake over loopback TCP and returns the
// server-side and client-side errors. The client reads one byte the server
// writes after its handshake, so TLS 1.3 post-handshake rejections of the
// client cert surface on the client too.
func handshake(t *testing.T, srvCfg, cliCfg *tls.Config, serverName string) (srvErr, cliErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		_, err = tc.Write([]byte{'k'})
		done <- err
	}()

	cfg := cliCfg.Clone()
	cfg.ServerName = serverName
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), cfg)
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 1)
		_, err = io.ReadFull(conn, buf)
		conn.Close()
	}
	return <-done, err
}

func TestTLSHandshake(t *testing.T) {
	dir := t.TempDir()
	l, err := MintCluster(dir, []NodeSpec{
		{Name: "n1", Hosts: []string{"10.0.0.1", "n1.example"}},
		{Name: "n2", Hosts: []string{"10.0.0.2"}},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	n1, n2 := l.Nodes["n1"], l.Nodes["n2"]

	// Data plane: n1's server cert, clients must hold a client-CA cert.
	dataSrv, err := ServerTLSConfig(n1.ServerCert, n1.ServerKey, l.ClientCACert, true)
	if err != nil {
		t.Fatal(err)
	}
	// Route plane: n1's route cert, peers must hold a route-CA cert.
	routeSrv, err := ServerTLSConfig(n1.RouteCert, n1.RouteKey, l.RouteCACert, true)
	if err != nil {
		t.Fatal(err)
	}

	// Go clients only send a cert whose issuer the server advertises, so a
	// wrong-CA cert is normally just withheld. "force" sends it anyway to
	// prove the server itself rejects it during verification.
	const unknownCA = "unknown authority"
	const noCert = "didn't provide a certificate"
	for _, tc := range []struct {
		name              string
		srv               *tls.Config
		caFile, cert, key string
		serverName        string
		force             bool
		wantSrvErr        string // "" => handshake must succeed, unless wantCliErr
		wantCliErr        string
	}{
		{name: "data: operator cert", srv: dataSrv, caFile: l.ClientCACert, cert: l.OperatorCert, key: l.OperatorKey, serverName: "127.0.0.1"},
		{name: "data: operator cert by DNS", srv: dataSrv, caFile: l.ClientCACert, cert: l.OperatorCert, key: l.OperatorKey, serverName: "localhost"},
		{name: "data: node server cert as client", srv: dataSrv, caFile: l.ClientCACert, cert: n2.ServerCert, key: n2.ServerKey, serverName: "n1.example"},
		{name: "data: route cert withheld", srv: dataSrv, caFile: l.ClientCACert, cert: n2.RouteCert, key: n2.RouteKey, serverName: "127.0.0.1", wantSrvErr: noCert},
		{name: "data: route cert forced", srv: dataSrv, caFile: l.ClientCACert, cert: n2.RouteCert, key: n2.RouteKey, serverName: "127.0.0.1", force: true, wantSrvErr: unknownCA},
		{name: "data: no client cert", srv: dataSrv, caFile: l.ClientCACert, serverName: "127.0.0.1", wantSrvErr: noCert},
		{name: "data: client trusting route CA rejects server", srv: dataSrv, caFile: l.RouteCACert, cert: l.OperatorCert, key: l.OperatorKey, serverName: "127.0.0.1", wantCliErr: unknownCA},
		{name: "data: wrong server name", srv: dataSrv, caFile: l.ClientCACert, cert: l.OperatorCert, key: l.OperatorKey, serverName: "10.9.9.9", wantCliErr: "10.9.9.9"},
		{name: "route: peer route cert", srv: routeSrv, caFile: l.RouteCACert, cert: n2.RouteCert, key: n2.RouteKey, serverName: "10.0.0.1"},
		{name: "route: peer route cert forced", srv: routeSrv, caFile: l.RouteCACert, cert: n2.RouteCert, key: n2.RouteKey, serverName: "10.0.0.1", force: true},
		{name: "route: operator cert forced", srv: routeSrv, caFile: l.RouteCACert, cert: l.OperatorCert, key: l.OperatorKey, serverName: "127.0.0.1", force: true, wantSrvErr: unknownCA},
		{name: "route: server cert forced", srv: routeSrv, caFile: l.RouteCACert, cert: n2.ServerCert, key: n2.ServerKey, serverName: "127.0.0.1", force: true, wantSrvErr: unknownCA},
		{name: "route: operator cert withheld", srv: routeSrv, caFile: l.RouteCACert, cert: l.OperatorCert, key: l.OperatorKey, serverName: "127.0.0.1", wantSrvErr: noCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, maxVer := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				cli, err := ClientTLSConfig(tc.caFile, tc.cert, tc.key)
				if err != nil {
					t.Fatal(err)
				}
				if tc.force {
					c := cli.Certificates[0]
					cli.Certificates = nil
					cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
				}
				cli.MaxVersion = maxVer
				srvErr, cliErr := handshake(t, tc.srv, cli, tc.serverName)
				switch {
				case tc.wantSrvErr == "" && tc.wantCliErr == "":
					if srvErr != nil || cliErr != nil {
						t.Fatalf("TLS %x: handshake failed: server=%v client=%v", maxVer, srvErr, cliErr)
					}
				case tc.wantSrvErr != "":
					if srvErr == nil || !strings.Contains(srvErr.Error(), tc.wantSrvErr) {
						t.Fatalf("TLS %x: server error %v, want %q (client: %v)", maxVer, srvErr, tc.wantSrvErr, cliErr)
					}
					if cliErr == nil {
						t.Fatalf("TLS %x: client did not notice rejection", maxVer)
					}
				default:
					if cliErr == nil || !strings.Contains(cliErr.Error(), tc.wantCliErr) {
						t.Fatalf("TLS %x: client error %v, want %q (server: %v)", maxVer, cliErr, tc.wantCliErr, srvErr)
					}
				}
			}
		})
	}
}

func TestLayoutFor(t *testing.T) {
	l := LayoutFor("/x", []string{"a", "b"})
	want := map[string]string{
		"ClientCACert": "/x/client-ca.crt", "ClientCAKey": "/x/client-ca.key",
		"RouteCACert": "/x/route-ca.crt", "RouteCAKey": "/x/route-ca.key",
		"RouteSecret": "/x/cluster.pass", "OperatorCert": "/x/operator.crt", "OperatorKey": "/x/operator.key",
		"a.ServerCert": "/x/a/server.crt", "a.ServerKey": "/x/a/server.key",
		"a.RouteCert": "/x/a/route.crt", "b.RouteKey": "/x/b/route.key",
	}
	got := map[string]string{
		"ClientCACert": l.ClientCACert, "ClientCAKey": l.ClientCAKey,
		"RouteCACert": l.RouteCACert, "RouteCAKey": l.RouteCAKey,
		"RouteSecret": l.RouteSecret, "OperatorCert": l.OperatorCert, "OperatorKey": l.OperatorKey,
		"a.ServerCert": l.Nodes["a"].ServerCert, "a.ServerKey": l.Nodes["a"].ServerKey,
		"a.RouteCert": l.Nodes["a"].RouteCert, "b.RouteKey": l.Nodes["b"].RouteKey,
	}
	for k, w := range want {
		if g := filepath.ToSlash(got[k]); g != w {
			t.Errorf("%s = %q, want %q", k, g, w)
		}
	}
	if l.Dir != "/x" || len(l.Nodes) != 2 {
		t.Errorf("Dir=%q nodes=%d", l.Dir, len(l.Nodes))
	}
}

func TestMintCluster(t *testing.T) {
	skipModesOnWindows(t)
	dir := filepath.Join(t.TempDir(), "pki")
	nodes := []NodeSpec{
		{Name: "n1", Hosts: []string{"10.0.0.1", "n1.local"}},
		{Name: "n2", Hosts: []string{"10.0.0.2"}},
		{Name: "n3", Hosts: []string{"10.0.0.3"}},
	}
	l, err := MintCluster(dir, nodes, false)
	if err != nil {
		t.Fatal(err)
	}

	// Layout returned matches LayoutFor.
	lf := LayoutFor(dir, []string{"n1", "n2", "n3"})
	if l.ClientCACert != lf.ClientCACert || l.RouteSecret != lf.RouteSecret || len(l.Nodes) != 3 || l.Nodes["n2"] != lf.Nodes["n2"] {
		t.Errorf("layout %+v differs from LayoutFor %+v", l, lf)
	}
	if m := fileMode(t, dir); m != 0o700 {
		t.Errorf("dir mode %04o, want 0700", m)
	}

	// Modes of all files.
	keys := []string{l.ClientCAKey, l.RouteCAKey, l.OperatorKey, l.RouteSecret}
	certs := []string{l.ClientCACert, l.RouteCACert, l.OperatorCert}
	for _, n := range l.Nodes {
		keys = append(keys, n.ServerKey, n.RouteKey)
		certs = append(certs, n.ServerCert, n.RouteCert)
	}
	for _, k := range keys {
		if m := fileMode(t, k); m != 0o600 {
			t.Errorf("%s mode %04o, want 0600", k, m)
		}
	}
	for _, c := range certs {
		if m := fileMode(t, c); m != 0o644 {
			t.Errorf("%s mode %04o, want 0644", c, m)
		}
	}

	// Secret: 32 random bytes hex + newline, readable via ReadSecretFile.
	raw := string(readFile(t, l.RouteSecret))
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(raw) {
		t.Errorf("route secret %q is not 64 hex chars + newline", raw)
	}
	if s, err := ReadSecretFile(l.RouteSecret); err != nil || s != strings.TrimSpace(raw) {
		t.Errorf("ReadSecretFile = %q, %v", s, err)
	}

	// Two distinct CAs.
	if bytes.Equal(readFile(t, l.ClientCACert), readFile(t, l.RouteCACert)) {
		t.Fatal("client CA and route CA are identical")
	}
	cca, err := LoadCA(l.ClientCACert, l.ClientCAKey)
	if err != nil {
		t.Fatal(err)
	}
	rca, err := LoadCA(l.RouteCACert, l.RouteCAKey)
	if err != nil {
		t.Fatal(err)
	}
	if cca.Cert.PublicKey.(*ecdsa.PublicKey).Equal(rca.Cert.PublicKey) {
		t.Fatal("client CA and route CA share a key")
	}

	// Every node cert chains to exactly its CA, with the right CN and SANs.
	for _, spec := range nodes {
		nf := l.Nodes[spec.Name]
		for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if err := VerifyFile(nf.ServerCert, l.ClientCACert, u); err != nil {
				t.Errorf("%s server: %v", spec.Name, err)
			}
			if err := VerifyFile(nf.RouteCert, l.RouteCACert, u); err != nil {
				t.Errorf("%s route: %v", spec.Name, err)
			}
		}
		if err := VerifyFile(nf.RouteCert, l.ClientCACert, x509.ExtKeyUsageServerAuth); err == nil || !strings.Contains(err.Error(), "not signed") {
			t.Errorf("%s route cert vs client CA: %v", spec.Name, err)
		}
		if err := VerifyFile(nf.ServerCert, l.RouteCACert, x509.ExtKeyUsageServerAuth); err == nil || !strings.Contains(err.Error(), "not signed") {
			t.Errorf("%s server cert vs route CA: %v", spec.Name, err)
		}
		for _, p := range []string{nf.ServerCert, nf.RouteCert} {
			c, err := parseCerts(readFile(t, p))
			if err != nil {
				t.Fatal(err)
			}
			if c[0].Subject.CommonName != spec.Name {
				t.Errorf("%s CN=%q", p, c[0].Subject.CommonName)
			}
			for _, h := range append([]string{"127.0.0.1", "localhost"}, spec.Hosts...) {
				if err := c[0].VerifyHostname(h); err != nil {
					t.Errorf("%s: %v", p, err)
				}
			}
		}
	}
	op, err := parseCerts(readFile(t, l.OperatorCert))
	if err != nil {
		t.Fatal(err)
	}
	if op[0].Subject.CommonName != "operator" || !slices.Equal(op[0].ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("operator cert CN=%q EKU=%v", op[0].Subject.CommonName, op[0].ExtKeyUsage)
	}
	if err := VerifyFile(l.OperatorCert, l.ClientCACert, x509.ExtKeyUsageClientAuth); err != nil {
		t.Error(err)
	}
}

func TestMintClusterIdempotence(t *testing.T) {
	nodes := []NodeSpec{{Name: "n1", Hosts: []string{"10.0.0.1"}}, {Name: "n2"}, {Name: "n3"}}

	type snap struct{ clientCA, routeCA, secret, routeCert []byte }
	take := func(t *testing.T, l *Layout) snap {
		return snap{readFile(t, l.ClientCACert), readFile(t, l.RouteCACert), readFile(t, l.RouteSecret), readFile(t, l.Nodes["n1"].RouteCert)}
	}

	for _, tc := range []struct {
		name                                              string
		force                                             bool
		wantSameClientCA, wantSameRouteCA, wantSameSecret bool
	}{
		{"rerun keeps route CA", false, true, true, true},
		{"force rotates route CA", true, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := MintCluster(dir, nodes, false)
			if err != nil {
				t.Fatal(err)
			}
			first := take(t, l)
			l2, err := MintCluster(dir, nodes, tc.force)
			if err != nil {
				t.Fatal(err)
			}
			second := take(t, l2)
			if got := bytes.Equal(first.clientCA, second.clientCA); got != tc.wantSameClientCA {
				t.Errorf("client CA unchanged=%v, want %v", got, tc.wantSameClientCA)
			}
			if got := bytes.Equal(first.routeCA, second.routeCA); got != tc.wantSameRouteCA {
				t.Errorf("route CA unchanged=%v, want %v", got, tc.wantSameRouteCA)
			}
			if got := bytes.Equal(first.secret, second.secret); got != tc.wantSameSecret {
				t.Errorf("route secret unchanged=%v, want %v", got, tc.wantSameSecret)
			}
			// Leaves are always re-issued, and must chain to the current CAs.
			if bytes.Equal(first.routeCert, second.routeCert) {
				t.Error("route cert was not re-issued")
			}
			for _, n := range l2.Nodes {
				if err := VerifyFile(n.RouteCert, l2.RouteCACert, x509.ExtKeyUsageServerAuth); err != nil {
					t.Error(err)
				}
				if err := VerifyFile(n.ServerCert, l2.ClientCACert, x509.ExtKeyUsageServerAuth); err != nil {
					t.Error(err)
				}
			}
		})
	}

	t.Run("reuses operator-provided client CA", func(t *testing.T) {
		dir := t.TempDir()
		existing := mustCA(t, "operator's own CA")
		if _, _, err := WriteFiles(dir, "client-ca", existing.CertPEM, existing.KeyPEM); err != nil {
			t.Fatal(err)
		}
		for _, force := range []bool{false, true} {
			l, err := MintCluster(dir, nodes, force)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readFile(t, l.ClientCACert), existing.CertPEM) {
				t.Fatalf("force=%v: client CA was replaced", force)
			}
			if err := VerifyFile(l.OperatorCert, l.ClientCACert, x509.ExtKeyUsageClientAuth); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("half route CA is replaced", func(t *testing.T) {
		dir := t.TempDir()
		l, err := MintCluster(dir, nodes, false)
		if err != nil {
			t.Fatal(err)
		}
		old := readFile(t, l.RouteCACert)
		if err := os.Remove(l.RouteCAKey); err != nil {
			t.Fatal(err)
		}
		if _, err := MintCluster(dir, nodes, false); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(old, readFile(t, l.RouteCACert)) {
			t.Error("route CA without key was kept")
		}
	})
}

func TestMintClusterErrors(t *testing.T) {
	skipModesOnWindows(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		nodes []NodeSpec
		want  string
	}{
		{"empty node name", nil, []NodeSpec{{Name: ""}}, "empty node name"},
		{"duplicate node", nil, []NodeSpec{{Name: "a"}, {Name: "a"}}, "duplicate"},
		{"path traversal", nil, []NodeSpec{{Name: "../x"}}, "not a plain directory name"},
		{"hidden name", nil, []NodeSpec{{Name: ".."}}, "not a plain directory name"},
		{"reserved name", nil, []NodeSpec{{Name: "cluster.pass"}}, "clashes"},
		{"bad host", nil, []NodeSpec{{Name: "a", Hosts: []string{"a:1"}}}, "neither an IP"},
		{
			"half client CA",
			func(t *testing.T, dir string) {
				ca := mustCA(t, "x")
				if err := os.WriteFile(filepath.Join(dir, "client-ca.crt"), ca.CertPEM, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			[]NodeSpec{{Name: "a"}}, "only one of",
		},
		{
			"corrupt client CA",
			func(t *testing.T, dir string) {
				for _, n := range []string{"client-ca.crt", "client-ca.key"} {
					if err := os.WriteFile(filepath.Join(dir, n), []byte("junk"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			},
			[]NodeSpec{{Name: "a"}}, "reuse client CA",
		},
		{
			"world-readable existing secret",
			func(t *testing.T, dir string) {
				p := filepath.Join(dir, "cluster.pass")
				if err := os.WriteFile(p, []byte("s\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			[]NodeSpec{{Name: "a"}}, "readable by others",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			_, err := MintCluster(dir, tc.nodes, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestReadSecretFile(t *testing.T) {
	skipModesOnWindows(t)
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		// Chmod explicitly: WriteFile's mode is filtered by umask.
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "  s3cret\n\n", 0o600)
	readOnly := write("ro", "s3cret\n", 0o400)
	empty := write("empty", "", 0o600)
	blank := write("blank", " \n\t\n", 0o600)
	world := write("world", "s3cret\n", 0o644)
	group := write("group", "s3cret\n", 0o640)
	otherW := write("otherw", "s3cret\n", 0o602)
	missing := filepath.Join(dir, "missing")

	for _, tc := range []struct {
		name, path, want string
		wantErr          []string
	}{
		{"trims whitespace", good, "s3cret", nil},
		{"0400 ok", readOnly, "s3cret", nil},
		{"missing", missing, "", []string{"route secret file " + missing + ": no such file"}},
		{"empty", empty, "", []string{empty, "is empty"}},
		{"whitespace only", blank, "", []string{blank, "is empty"}},
		{"world readable", world, "", []string{"route secret file " + world + " is readable by others (mode 0644); chmod 600 it"}},
		{"group readable", group, "", []string{"(mode 0640)", "chmod 600"}},
		{"other writable", otherW, "", []string{"(mode 0602)"}},
		{"directory", dir, "", []string{dir, "not a regular file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadSecretFile(tc.path)
			if len(tc.wantErr) == 0 {
				if err != nil || got != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("expected error, got %q", got)
			}
			if got != "" {
				t.Errorf("secret %q returned alongside error", got)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
