package pki

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The PEM parsers never panic; what they accept re-encodes.
func FuzzParsePEM(f *testing.F) {
	ca, err := NewCA("fuzz CA", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	leaf, err := ca.IssueClient("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(leaf.CertPEM)
	f.Add(leaf.KeyPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if certs, err := parseCerts(data); err == nil {
			for _, c := range certs {
				if c == nil || len(c.Raw) == 0 {
					t.Fatal("nil certificate accepted")
				}
			}
		}
		if k, err := parseKey(data); err == nil && k.Public() == nil {
			t.Fatal("key without a public half")
		}
		p := filepath.Join(dir, "ca.crt")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = CertPoolFromFile(p)
	})
}
