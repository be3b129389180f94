package pki

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

const (
	keyFileMode  os.FileMode = 0o600
	certFileMode os.FileMode = 0o644
	dirMode      os.FileMode = 0o700
)

// WriteFiles writes dir/baseName.crt (0644) and dir/baseName.key (0600)
// atomically, creating dir (0700) if missing. The key is written first so a
// crash never leaves a fresh cert next to a stale key for long.
func WriteFiles(dir, baseName string, certPEM, keyPEM []byte) (certPath, keyPath string, err error) {
	if baseName == "" || baseName != filepath.Base(baseName) || baseName == "." || baseName == ".." {
		return "", "", fmt.Errorf("write files: invalid base name %q", baseName)
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return "", "", fmt.Errorf("create directory %s: %w", dir, pathErr(err))
	}
	certPath = filepath.Join(dir, baseName+".crt")
	keyPath = filepath.Join(dir, baseName+".key")
	if err := writeAtomic(keyPath, keyPEM, keyFileMode); err != nil {
		return "", "", err
	}
	if err := writeAtomic(certPath, certPEM, certFileMode); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// writeAtomic writes data to a temp file in the same directory (so rename is
// atomic), fsyncs it and renames it over path. The temp file is created with
// its final mode so secret bytes are never readable by others, even briefly.
func writeAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	suffix, err := randomHex(8)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := filepath.Join(dir, "."+base+".tmp-"+suffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, pathErr(err))
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// umask may have narrowed the mode (e.g. 0644 -> 0640); set it exactly.
	if runtime.GOOS != "windows" {
		if err = f.Chmod(perm); err != nil {
			return fmt.Errorf("chmod %s: %w", tmp, pathErr(err))
		}
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, pathErr(err))
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, pathErr(err))
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, pathErr(err))
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	syncDir(dir)
	return nil
}

// syncDir makes the rename durable. Best effort: not all platforms allow
// fsync on directories, and the data itself is already synced.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// VerifyFile checks that certFile is currently valid, chains to the CA in
// caFile and is allowed for usage. Errors are one-liners naming both files.
func VerifyFile(certFile, caFile string, usage x509.ExtKeyUsage) error {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return fmt.Errorf("read certificate %s: %w", certFile, pathErr(err))
	}
	certs, err := parseCerts(data)
	if err != nil {
		return fmt.Errorf("certificate %s: %w", certFile, err)
	}
	roots, err := CertPoolFromFile(caFile)
	if err != nil {
		return err
	}
	// Extra certs in certFile are treated as intermediates (a bundle).
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   time.Now(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err == nil {
		return nil
	}
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("certificate %s is not signed by CA %s (%w)", certFile, caFile, err)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Errorf("certificate %s is expired or not yet valid (%w)", certFile, err)
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return fmt.Errorf("certificate %s is not valid for %s (%w)", certFile, usageName(usage), err)
	default:
		return fmt.Errorf("certificate %s does not verify against CA %s (%w)", certFile, caFile, err)
	}
}

func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageAny:
		return "any usage"
	case x509.ExtKeyUsageServerAuth:
		return "server auth"
	case x509.ExtKeyUsageClientAuth:
		return "client auth"
	default:
		return fmt.Sprintf("extended key usage %d", int(u))
	}
}

// CertPoolFromFile loads every PEM certificate in caFile into a new pool.
// Unlike AppendCertsFromPEM it reports why a file is unusable.
func CertPoolFromFile(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, errors.New("CA file: empty path")
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate %s: %w", caFile, pathErr(err))
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", caFile, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// ServerTLSConfig builds a server config. RootCAs is set to the client-CA
// pool too because nats-server verifies the peer of a solicited route with
// RootCAs; the same config then serves both directions of a route.
func ServerTLSConfig(certFile, keyFile, clientCAFile string, requireClientCert bool) (*tls.Config, error) {
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.NoClientCert,
	}
	if clientCAFile == "" {
		if requireClientCert {
			return nil, fmt.Errorf("server TLS config for %s: client certs required but no client CA file given", certFile)
		}
		return cfg, nil
	}
	pool, err := CertPoolFromFile(clientCAFile)
	if err != nil {
		return nil, err
	}
	cfg.ClientCAs = pool
	cfg.RootCAs = pool
	if requireClientCert {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientTLSConfig builds a client config trusting caFile. certFile and
// keyFile are optional, but must be given together.
func ClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := CertPoolFromFile(caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
	}
	switch {
	case certFile == "" && keyFile == "":
		return cfg, nil
	case certFile == "" || keyFile == "":
		return nil, fmt.Errorf("client TLS config: certificate (%q) and key (%q) must be given together", certFile, keyFile)
	}
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}

func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read certificate %s: %w", certFile, pathErr(err))
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read key %s: %w", keyFile, pathErr(err))
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load key pair %s / %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// ReadSecretFile reads a route secret, trimming surrounding whitespace. It
// refuses files that grant any access to group/other: a shared secret that
// other local users can read is not a secret.
func ReadSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("route secret file %s: %w", path, pathErr(err))
	}
	defer f.Close()
	// Stat the open file, not the path, so the checked file is the read one.
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("route secret file %s: %w", path, pathErr(err))
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("route secret file %s is not a regular file (mode %s)", path, st.Mode())
	}
	if runtime.GOOS != "windows" {
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			return "", fmt.Errorf("route secret file %s is readable by others (mode %04o); chmod 600 it", path, perm)
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return "", fmt.Errorf("route secret file %s: %w", path, pathErr(err))
	}
	secret := strings.TrimSpace(string(data))
	if secret == "" {
		return "", fmt.Errorf("route secret file %s is empty", path)
	}
	return secret, nil
}
