package node

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// A real node (standalone, SQLite: the HTTPS listener is the same in both
// modes) with small HTTP limits so the timeouts show within seconds.
func startLimitedNode(t *testing.T, lim HTTPLimits) (*Node, *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	layout, err := pki.MintCluster(filepath.Join(dir, "tls"), []pki.NodeSpec{{Name: "n1", Hosts: []string{"127.0.0.1"}}}, false)
	if err != nil {
		t.Fatal(err)
	}
	nf := layout.Nodes["n1"]
	cfg := Config{
		Name: "n1", Cluster: "unibus-test", Bind: "127.0.0.1",
		ClientPort: freePort(t), RoutePort: freePort(t), HTTPPort: freePort(t),
		ServerCert: nf.ServerCert, ServerKey: nf.ServerKey, ClientCA: layout.ClientCACert,
		BusAuth: authn.Enforce, InternalIDFile: filepath.Join(dir, "internal.id"),
		Store: StoreSQLite, DBPath: filepath.Join(dir, "users.db"),
		HTTP: lim,
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	pool, err := pki.CertPoolFromFile(layout.ClientCACert)
	if err != nil {
		t.Fatal(err)
	}
	return n, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpAddr(n *Node) string {
	return strings.TrimSuffix(strings.TrimPrefix(n.HealthzURL(), "https://"), "/healthz")
}

// closedBy waits until the server closes c (a read returns EOF or a reset)
// and fails if that has not happened by the deadline.
func closedBy(t *testing.T, c net.Conn, deadline time.Duration, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(deadline))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue // a response (e.g. 408) before the close
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: the server still held the connection after %s", what, deadline)
		}
		return
	}
}

func TestHTTPSlowBodyCutOff(t *testing.T) {
	lim := HTTPLimits{ReadHeaderTimeout: time.Second, ReadTimeout: 2 * time.Second, IdleTimeout: time.Second}
	n, tcfg := startLimitedNode(t, lim)
	c, err := tls.Dial("tcp", httpAddr(n), tcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Trickle one byte every 200 ms, in the background, until the write fails.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	closedBy(t, c, 5*lim.ReadTimeout, "slow body")
}

func TestHTTPIdleKeepAliveClosed(t *testing.T) {
	lim := HTTPLimits{ReadHeaderTimeout: time.Second, ReadTimeout: 2 * time.Second, IdleTimeout: time.Second}
	n, tcfg := startLimitedNode(t, lim)
	c, err := tls.Dial("tcp", httpAddr(n), tcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.Close {
		t.Fatal("the server did not keep the connection alive: nothing to test")
	}
	closedBy(t, c, 5*lim.IdleTimeout, "idle keep-alive")
}

func TestHTTPConnectionCapRecovers(t *testing.T) {
	const maxConns = 4
	lim := HTTPLimits{ReadHeaderTimeout: time.Second, ReadTimeout: 2 * time.Second, IdleTimeout: time.Second, MaxConns: maxConns}
	n, tcfg := startLimitedNode(t, lim)
	// More than the cap of silent TCP connections (no TLS handshake at all).
	var hogs []net.Conn
	for range 3 * maxConns {
		c, err := net.Dial("tcp", httpAddr(n))
		if err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, c)
	}
	defer func() {
		for _, c := range hogs {
			_ = c.Close()
		}
	}()
	// A well-behaved client: answered once the handshake timeout has
	// dropped the silent ones (each batch of maxConns takes one timeout).
	hc := &http.Client{Timeout: 10 * lim.ReadHeaderTimeout, Transport: &http.Transport{TLSClientConfig: tcfg}}
	resp, err := hc.Get(n.HealthzURL())
	if err != nil {
		t.Fatalf("/healthz with %d silent connections held: %v", len(hogs), err)
	}
	_ = resp.Body.Close()
	// The silent ones were dropped by the server.
	for i, c := range hogs[:maxConns] {
		closedBy(t, c, 5*lim.ReadHeaderTimeout, fmt.Sprintf("silent connection %d", i))
	}
}
