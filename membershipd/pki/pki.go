// Package pki mints and loads the TLS material of a 3-node NATS cluster.
//
// Two independent CAs are used on purpose:
//   - the client CA signs data-plane server certs (NATS client port and the
//     HTTPS control plane) and client certs (operator, CLIs);
//   - the route CA signs per-node route certs used for mutual TLS between
//     NATS servers.
//
// Keeping them apart means a client cert can never be presented as a route
// (and join the cluster), and the route CA can be rotated without touching
// clients that trust the client CA.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// backdate tolerates modest clock skew between the minting host and nodes.
const backdate = time.Hour

// CA is a certificate authority with its signing key.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// Leaf is an issued end-entity certificate and its private key.
type Leaf struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA creates a self-signed ECDSA P-256 CA that may only sign leaves
// (MaxPathLenZero), so a leaked leaf key can never mint sub-CAs.
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("new CA: empty common name")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("new CA %q: validity must be positive, got %s", commonName, validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: generate key: %w", commonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA %q: %w", commonName, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: create certificate: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: parse certificate: %w", commonName, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("new CA %q: %w", commonName, err)
	}
	return &CA{
		Cert:    cert,
		Key:     key,
		CertPEM: encodeCert(der),
		KeyPEM:  keyPEM,
	}, nil
}

// LoadCA reads a CA cert and key from PEM files and checks they belong
// together, so a mismatched pair fails here rather than at issue time.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate %s: %w", certFile, pathErr(err))
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read CA key %s: %w", keyFile, pathErr(err))
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certFile, err)
	}
	cert := certs[0]
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("CA certificate %s: %q is not a CA certificate", certFile, cert.Subject.CommonName)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyFile, err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("CA key %s does not match CA certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// IssueServer issues a data-plane server cert. It carries ClientAuth as well
// as ServerAuth so a CLI on the node can reuse it as its client cert.
func (ca *CA) IssueServer(commonName string, hosts []string, validity time.Duration) (*Leaf, error) {
	return ca.issueWithSANs("server", commonName, hosts, validity)
}

// IssueRoute issues a route cert for nodeName. Routes are mutual TLS: each
// node both accepts (ServerAuth) and solicits (ClientAuth) connections.
func (ca *CA) IssueRoute(nodeName string, hosts []string, validity time.Duration) (*Leaf, error) {
	return ca.issueWithSANs("route", nodeName, hosts, validity)
}

// IssueClient issues a ClientAuth-only cert; without ServerAuth it cannot be
// used to impersonate a server.
func (ca *CA) IssueClient(commonName string, validity time.Duration) (*Leaf, error) {
	if commonName == "" {
		return nil, errors.New("issue client certificate: empty common name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	leaf, err := ca.issue(tmpl, validity)
	if err != nil {
		return nil, fmt.Errorf("issue client certificate %q: %w", commonName, err)
	}
	return leaf, nil
}

func (ca *CA) issueWithSANs(kind, commonName string, hosts []string, validity time.Duration) (*Leaf, error) {
	if commonName == "" {
		return nil, fmt.Errorf("issue %s certificate: empty common name", kind)
	}
	ips, dns, err := splitHosts(hosts)
	if err != nil {
		return nil, fmt.Errorf("issue %s certificate %q: %w", kind, commonName, err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: ips,
		DNSNames:    dns,
	}
	leaf, err := ca.issue(tmpl, validity)
	if err != nil {
		return nil, fmt.Errorf("issue %s certificate %q: %w", kind, commonName, err)
	}
	return leaf, nil
}

// issue fills in key, serial and validity and signs tmpl with the CA.
func (ca *CA) issue(tmpl *x509.Certificate, validity time.Duration) (*Leaf, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("CA is not initialised")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("validity must be positive, got %s", validity)
	}
	now := time.Now()
	if !now.Before(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("CA %q expired at %s", ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(validity)
	// A leaf cannot usefully outlive its issuer; clamp so the cert's own
	// expiry tells the truth.
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Leaf{Cert: cert, CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// splitHosts sorts hosts into IP and DNS SANs, always adding 127.0.0.1 and
// localhost so local tooling and health checks can connect on the node.
func splitHosts(hosts []string) ([]net.IP, []string, error) {
	var ips []net.IP
	var dns []string
	seenIP := map[string]bool{}
	seenDNS := map[string]bool{}
	all := append([]string{"127.0.0.1", "localhost"}, hosts...)
	for _, h := range all {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		// Accept bracketed IPv6 as written in URLs.
		if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			h = h[1 : len(h)-1]
		}
		if ip := net.ParseIP(h); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			if !seenIP[ip.String()] {
				seenIP[ip.String()] = true
				ips = append(ips, ip)
			}
			continue
		}
		if !validDNSName(h) {
			return nil, nil, fmt.Errorf("host %q is neither an IP address nor a DNS name", h)
		}
		name := strings.ToLower(h)
		if !seenDNS[name] {
			seenDNS[name] = true
			dns = append(dns, name)
		}
	}
	return ips, dns, nil
}

// validDNSName is a loose syntax check that catches the common mistake of
// passing host:port or a URL as a host.
func validDNSName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for i, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		if label == "*" && i == 0 {
			continue
		}
		for _, r := range label {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			default:
				return false
			}
		}
	}
	return true
}

func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		// RFC 5280 requires a positive serial.
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseCerts returns every CERTIFICATE block in data, in order.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// parseKey accepts PKCS#8, SEC1 (EC) and PKCS#1 (RSA) so CAs created by
// openssl or other tools can be reused.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		var (
			k   any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", strings.ToLower(block.Type), err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
		return s, nil
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// pathErr drops the *fs.PathError wrapper because callers already name the
// file; this keeps messages one-liners without repeating the path, while
// errors.Is(err, fs.ErrNotExist) keeps working.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
