package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/netproxy"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// The plain cluster is what membershipd is compared with: three stock
// nats-servers routed over loopback, TLS with verified client certificates
// on the client port, one static nkey user, JetStream with SyncAlways, and
// mutual TLS on the routes with a route CA of its own (as membershipd's
// routes have, and as an operator's plain cluster between hosts would).
// The client side uses the membershipd cluster's certificates (its n1
// server certificate, valid for 127.0.0.1) and the same user identity.

// plainNames are the plain servers' names.
var plainNames = []string{"p1", "p2", "p3"}

// plainRoutes is the plain cluster's route TLS material: its own route CA
// and one route certificate per server (ServerAuth and ClientAuth: each
// server both accepts and solicits routes), valid for 127.0.0.1.
type plainRoutes struct {
	CA        string
	Cert, Key []string // by server index
}

// mintPlainRoutes writes a fresh route CA and the servers' route
// certificates under dir/route-tls. Callers mint before they time a start.
func mintPlainRoutes(dir string) (plainRoutes, error) {
	d := filepath.Join(dir, "route-tls")
	ca, err := pki.NewCA("plain route CA", 24*time.Hour)
	if err != nil {
		return plainRoutes{}, fmt.Errorf("plain route CA: %w", err)
	}
	var r plainRoutes
	if r.CA, _, err = pki.WriteFiles(d, "route-ca", ca.CertPEM, ca.KeyPEM); err != nil {
		return plainRoutes{}, fmt.Errorf("plain route CA: %w", err)
	}
	for _, name := range plainNames {
		leaf, err := ca.IssueRoute(name, []string{"127.0.0.1"}, 24*time.Hour)
		if err != nil {
			return plainRoutes{}, fmt.Errorf("plain route certificate %s: %w", name, err)
		}
		cert, key, err := pki.WriteFiles(d, name+"-route", leaf.CertPEM, leaf.KeyPEM)
		if err != nil {
			return plainRoutes{}, fmt.Errorf("plain route certificate %s: %w", name, err)
		}
		r.Cert, r.Key = append(r.Cert, cert), append(r.Key, key)
	}
	return r, nil
}

// inprocPlain is a plain cluster inside this process: the counterpart of
// the in-process membershipd cluster for the steady-state rows.
type inprocPlain struct {
	servers []*server.Server
	mesh    *netproxy.Mesh
}

// routeMesh puts the plain cluster's routes (listening on routeBase+i)
// through the same netproxy mesh the membershipd process target uses, so
// both clusters of the failover rows pay the same extra loopback hop per
// route message.
func routeMesh(routeBase int) (*netproxy.Mesh, error) {
	meshBase, err := chaos.PortBlock(len(plainNames) * len(plainNames))
	if err != nil {
		return nil, err
	}
	var addrs []string
	for i := range plainNames {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", routeBase+i))
	}
	m, err := netproxy.NewMesh(plainNames, addrs, meshBase, discard())
	if err != nil {
		return nil, fmt.Errorf("plain route proxies: %w", err)
	}
	return m, nil
}

func startInprocPlain(dir string, t chaos.TLSFiles, rt plainRoutes, user *identity.Identity) (*inprocPlain, error) {
	base, err := chaos.PortBlock(6)
	if err != nil {
		return nil, err
	}
	// Direct routes, as deployed: the in-process membershipd cluster of
	// the steady rows has them too (inproc.Options.DirectRoutes).
	p := &inprocPlain{}
	for i, name := range plainNames {
		var routes []*url.URL
		for j := range plainNames {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", base+3+j)})
			}
		}
		tlsCfg, err := pki.ServerTLSConfig(t.ServerCert["n1"], t.ServerKey["n1"], t.ClientCA, true)
		if err != nil {
			p.close()
			return nil, err
		}
		// Mutual TLS on the routes, as membershipd's (node/options.go).
		routeTLS, err := pki.ServerTLSConfig(rt.Cert[i], rt.Key[i], rt.CA, true)
		if err != nil {
			p.close()
			return nil, err
		}
		s, err := server.NewServer(&server.Options{
			ServerName: name, Host: "127.0.0.1", Port: base + i, NoSigs: true, NoLog: true,
			TLSConfig: tlsCfg, TLSVerify: true, TLSTimeout: 2,
			Nkeys:     []*server.NkeyUser{{Nkey: user.NKey()}},
			JetStream: true, StoreDir: filepath.Join(dir, name), SyncAlways: true,
			Cluster: server.ClusterOpts{Name: "plain", Host: "127.0.0.1", Port: base + 3 + i, PoolSize: -1,
				TLSConfig: routeTLS, TLSTimeout: 2},
			Routes: routes,
		})
		if err != nil {
			p.close()
			return nil, fmt.Errorf("plain server %s: %w", name, err)
		}
		s.Start()
		p.servers = append(p.servers, s)
	}
	return p, nil
}

// waitHealthy waits until every server's healthz (JetStream meta leader
// known, streams current) says ok.
func (p *inprocPlain) waitHealthy(ctx context.Context) error {
	for {
		ok := true
		for _, s := range p.servers {
			if st := s.Healthz(nil); st.Status != "ok" {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("plain cluster not healthy: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (p *inprocPlain) urls() []string {
	var u []string
	for _, s := range p.servers {
		u = append(u, s.ClientURL())
	}
	return u
}

func (p *inprocPlain) close() {
	for _, s := range p.servers {
		s.Shutdown()
	}
	for _, s := range p.servers {
		s.WaitForShutdown()
	}
	if p.mesh != nil {
		_ = p.mesh.Close()
	}
}

// plainDial connects to a plain cluster as the user: TLS with the operator
// certificate and the static nkey.
func plainDial(t chaos.TLSFiles, user *identity.Identity, urls []string, opts ...nats.Option) (*nats.Conn, error) {
	tlsCfg, err := pki.ClientTLSConfig(t.ClientCA, t.OperatorCert, t.OperatorKey)
	if err != nil {
		return nil, err
	}
	kp := user.KeyPair()
	all := append([]nats.Option{nats.Secure(tlsCfg), nats.Nkey(user.NKey(), kp.Sign), nats.Timeout(3 * time.Second)}, opts...)
	nc, err := nats.Connect(strings.Join(urls, ","), all...)
	if err != nil {
		return nil, fmt.Errorf("connect plain %s: %w", strings.Join(urls, ","), err)
	}
	return nc, nil
}

// procPlain is a plain cluster of nats-server processes, so a node can be
// SIGKILLed like a membershipd process (an in-process Shutdown steps raft
// leaders down gracefully).
type procPlain struct {
	bin   string
	dir   string
	cfgs  []string
	ports []int // client ports
	cmds  []*exec.Cmd
	exits []chan struct{}
	mesh  *netproxy.Mesh
	log   *slog.Logger
}

func newProcPlain(bin, dir string, t chaos.TLSFiles, user *identity.Identity, log *slog.Logger) (*procPlain, error) {
	rt, err := mintPlainRoutes(dir)
	if err != nil {
		return nil, err
	}
	base, err := chaos.PortBlock(6)
	if err != nil {
		return nil, err
	}
	mesh, err := routeMesh(base + 3)
	if err != nil {
		return nil, err
	}
	p := &procPlain{bin: bin, dir: dir, log: log, mesh: mesh, cmds: make([]*exec.Cmd, 3), exits: make([]chan struct{}, 3)}
	for i, name := range plainNames {
		var routes []string
		for _, r := range mesh.RouteURLsFor(i) {
			routes = append(routes, fmt.Sprintf("%q", r))
		}
		sd := filepath.Join(dir, name)
		if err := os.MkdirAll(sd, 0o700); err != nil {
			return nil, err
		}
		conf := fmt.Sprintf(`server_name: %q
listen: "127.0.0.1:%d"
tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true, timeout: 2 }
authorization { users = [ { nkey: %q } ] }
jetstream { store_dir: %q, sync_interval: "always" }
cluster {
  name: "plain", listen: "127.0.0.1:%d", advertise: %q, pool_size: -1, routes: [ %s ]
  tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true, timeout: 2 }
}
`, name, base+i, t.ServerCert["n1"], t.ServerKey["n1"], t.ClientCA, user.NKey(), sd, base+3+i, mesh.AdvertiseFor(i), strings.Join(routes, ", "),
			rt.Cert[i], rt.Key[i], rt.CA)
		f := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(f, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		p.cfgs = append(p.cfgs, f)
		p.ports = append(p.ports, base+i)
	}
	return p, nil
}

func (p *procPlain) start(i int) error {
	cmd := exec.Command(p.bin, "-c", p.cfgs[i])
	lf, err := os.Create(filepath.Join(p.dir, plainNames[i]+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		_ = lf.Close()
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = lf.Close(); close(done) }()
	p.cmds[i], p.exits[i] = cmd, done
	return nil
}

func (p *procPlain) startAll() error {
	for i := range plainNames {
		if err := p.start(i); err != nil {
			return err
		}
	}
	return nil
}

func (p *procPlain) urls() []string {
	var u []string
	for _, port := range p.ports {
		u = append(u, fmt.Sprintf("tls://127.0.0.1:%d", port))
	}
	return u
}

func (p *procPlain) index(name string) (int, error) {
	for i, n := range plainNames {
		if n == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no plain server %q", name)
}

// signal sends sig to server i and waits for it to exit.
func (p *procPlain) signal(i int, sig syscall.Signal) error {
	cmd := p.cmds[i]
	if cmd == nil || cmd.Process == nil {
		return errors.New("not running")
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case <-p.exits[i]:
		p.cmds[i] = nil
		return nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return fmt.Errorf("%s did not exit after %v", plainNames[i], sig)
	}
}

func (p *procPlain) close() {
	for i, cmd := range p.cmds {
		if cmd != nil {
			_ = p.signal(i, syscall.SIGKILL)
		}
	}
	_ = p.mesh.Close()
}
