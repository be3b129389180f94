package chaos

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// RouteHandshake runs a TLS handshake with cfg against a route port (routes
// start with TLS; the client port sends a plaintext INFO first) and waits
// briefly for the server's verdict on the client certificate. It returns
// the server's certificate chain and nil when the server kept the
// connection (accepted our certificate), or the server's rejection.
func RouteHandshake(addr string, cfg *tls.Config) ([]*x509.Certificate, error) {
	return handshake(addr, cfg, false)
}

// ClientPortHandshake is RouteHandshake for a client port.
func ClientPortHandshake(addr string, cfg *tls.Config) ([]*x509.Certificate, error) {
	return handshake(addr, cfg, true)
}

func handshake(addr string, cfg *tls.Config, infoFirst bool) ([]*x509.Certificate, error) {
	raw, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer func() { _ = raw.Close() }()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	if infoFirst {
		// Read byte by byte so no TLS byte is swallowed by a buffer.
		line, err := readLine(raw)
		if err != nil {
			return nil, fmt.Errorf("read INFO from %s: %w", addr, err)
		}
		if !strings.HasPrefix(line, "INFO ") {
			return nil, fmt.Errorf("%s sent %q, not INFO", addr, line)
		}
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := tls.Client(raw, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, &RejectedError{Err: err}
	}
	chain := tc.ConnectionState().PeerCertificates
	// With TLS 1.3 the server judges our certificate after the client's
	// handshake returns: a rejection arrives as an alert on the next read.
	_ = tc.SetReadDeadline(time.Now().Add(time.Second))
	_, err = tc.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return chain, nil // still open and silent: accepted
	}
	if err == nil {
		return chain, nil // the server spoke to us: accepted
	}
	return chain, &RejectedError{Err: err}
}

// RejectedError is a TLS-level refusal (an alert or a close during or right
// after the handshake), as opposed to a failure to reach the port.
type RejectedError struct{ Err error }

func (e *RejectedError) Error() string { return "TLS rejected: " + e.Err.Error() }
func (e *RejectedError) Unwrap() error { return e.Err }

func readLine(c net.Conn) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 64<<10 {
		if _, err := c.Read(one); err != nil {
			return string(b), err
		}
		b = append(b, one[0])
		if one[0] == '\n' {
			return string(b), nil
		}
	}
	return string(b), errors.New("INFO line too long")
}

// PlaintextRefused speaks the NATS client protocol without TLS to addr and
// reports nil only if the server refused to serve it (no PONG).
func PlaintextRefused(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		return fmt.Errorf("read INFO: %w", err)
	}
	if _, err := c.Write([]byte("CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false}\r\nPING\r\n")); err != nil {
		return nil // refused while we wrote
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil // closed without serving
		}
		if strings.HasPrefix(line, "PONG") {
			return errors.New("the server answered PONG to a plaintext client")
		}
	}
}
