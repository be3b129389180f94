package specs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// Runbook sections "Prerequisites: mint cluster TLS" and "Topology": routes
// travel over public addresses protected only by the separate route CA.
var _ = Describe("TLS", func() {
	Context("a running cluster", Ordered, func() {
		var env *Env

		BeforeAll(func(ctx SpecContext) {
			env = NewEnv("tls", chaos.ClusterSpec{})
			env.StartAll(ctx)
		})

		It("route port takes only route-CA certificates; client port demands a valid client certificate over TLS",
			Claim("claim:route-ca"), func(ctx SpecContext) {
				t := env.Cluster.TLS()
				target := env.Cluster.Nodes()[0]
				peer := env.Cluster.Nodes()[1]
				routeCAs, err := pki.CertPoolFromFile(t.RouteCA)
				Expect(err).NotTo(HaveOccurred())

				By("a client data-plane certificate presented to the route port is refused")
				dataCert, err := tls.LoadX509KeyPair(t.ServerCert[peer.Name()], t.ServerKey[peer.Name()])
				Expect(err).NotTo(HaveOccurred())
				_, err = chaos.RouteHandshake(target.RouteAddr(), forceCert(routeCAs, dataCert))
				var rejected *chaos.RejectedError
				Expect(errors.As(err, &rejected)).To(BeTrue(), "route port must reject a client-CA certificate at TLS, got %v", err)
				Expect(err.Error()).To(MatchRegexp(`certificate|authority`), "rejected for the certificate")

				By("control: a route-CA certificate is accepted by the same port")
				peerRoute, err := tls.LoadX509KeyPair(t.RouteCert[peer.Name()], t.RouteKey[peer.Name()])
				Expect(err).NotTo(HaveOccurred())
				_, err = chaos.RouteHandshake(target.RouteAddr(), forceCert(routeCAs, peerRoute))
				Expect(err).NotTo(HaveOccurred())

				By("a real server with a client-CA route certificate gets no route")
				secret, err := pki.ReadSecretFile(t.RouteSecretFile)
				Expect(err).NotTo(HaveOccurred())
				cluster := clusterName(ctx, env)
				rogue := startRogue(cluster, "rogue-client-ca", target.RouteAddr(), secret, t.ServerCert[peer.Name()], t.ServerKey[peer.Name()], t.RouteCA)
				Consistently(rogue.NumRoutes).WithTimeout(3 * time.Second).WithPolling(200 * time.Millisecond).Should(BeZero())

				By("control: the same server with a route-CA certificate does get a route")
				routeCA, err := pki.LoadCA(t.RouteCA, t.RouteCAKey)
				Expect(err).NotTo(HaveOccurred())
				leaf, err := routeCA.IssueRoute("rogue-route-ca", []string{"127.0.0.1"}, time.Hour)
				Expect(err).NotTo(HaveOccurred())
				cert, key, err := pki.WriteFiles(filepath.Join(env.Dir, "rogue"), "route", leaf.CertPEM, leaf.KeyPEM)
				Expect(err).NotTo(HaveOccurred())
				good := startRogue(cluster, "rogue-route-ca", target.RouteAddr(), secret, cert, key, t.RouteCA)
				Eventually(good.NumRoutes).WithTimeout(10 * time.Second).Should(BeNumerically(">", 0))
				good.Shutdown()

				By("the client port refuses a client without a certificate")
				_, err = chaos.Dial(target, t.ClientCA, "", "")
				Expect(err).To(HaveOccurred())

				By("the client port refuses a route-CA certificate")
				routeCert, err := tls.LoadX509KeyPair(t.RouteCert[peer.Name()], t.RouteKey[peer.Name()])
				Expect(err).NotTo(HaveOccurred())
				clientCAs, err := pki.CertPoolFromFile(t.ClientCA)
				Expect(err).NotTo(HaveOccurred())
				nc, err := nats.Connect(target.ClientURL(), nats.Secure(forceCert(clientCAs, routeCert)), nats.NoReconnect(), nats.Timeout(3*time.Second))
				if err == nil {
					nc.Close()
				}
				Expect(err).To(HaveOccurred(), "client port accepted a route-CA certificate")

				By("the client port refuses plaintext")
				u, err := url.Parse(target.ClientURL())
				Expect(err).NotTo(HaveOccurred())
				Expect(chaos.PlaintextRefused(u.Host)).To(Succeed())

				By("control: a client-CA certificate with a registered identity is admitted")
				who := env.AddUser(ctx, target, "tls-control", identity.RoleMember)
				nc, err = chaos.DialAs(env.Cluster, target, who)
				Expect(err).NotTo(HaveOccurred())
				Expect(nc.Flush()).To(Succeed())
				nc.Close()
			})

		It("separates the route CA from the client CA on every node's listeners; --force rotates the route CA",
			Claim("claim:certs"), func(ctx SpecContext) {
				t := env.Cluster.TLS()
				clientCA := readCert(t.ClientCA)
				routeCA := readCert(t.RouteCA)
				Expect(clientCA.Equal(routeCA)).To(BeFalse())
				Expect(clientCA.PublicKey).NotTo(Equal(routeCA.PublicKey))
				clientCAs, err := pki.CertPoolFromFile(t.ClientCA)
				Expect(err).NotTo(HaveOccurred())
				routeCAs, err := pki.CertPoolFromFile(t.RouteCA)
				Expect(err).NotTo(HaveOccurred())

				for _, n := range env.Cluster.Nodes() {
					By("node " + n.Name() + ": files")
					Expect(pki.VerifyFile(t.RouteCert[n.Name()], t.RouteCA, x509.ExtKeyUsageClientAuth)).To(Succeed())
					Expect(pki.VerifyFile(t.RouteCert[n.Name()], t.ClientCA, x509.ExtKeyUsageClientAuth)).NotTo(Succeed())
					Expect(pki.VerifyFile(t.ServerCert[n.Name()], t.ClientCA, x509.ExtKeyUsageServerAuth)).To(Succeed())
					Expect(pki.VerifyFile(t.ServerCert[n.Name()], t.RouteCA, x509.ExtKeyUsageServerAuth)).NotTo(Succeed())
					host, _, err := net.SplitHostPort(n.RouteAddr())
					Expect(err).NotTo(HaveOccurred())
					for _, f := range []string{t.RouteCert[n.Name()], t.ServerCert[n.Name()]} {
						Expect(readCert(f).VerifyHostname("127.0.0.1")).To(Succeed(), f)
						Expect(readCert(f).VerifyHostname(host)).To(Succeed(), f)
					}

					By("node " + n.Name() + ": what the live listeners present")
					u, err := url.Parse(n.HealthzURL())
					Expect(err).NotTo(HaveOccurred())
					conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: clientCAs, MinVersion: tls.VersionTLS12})
					Expect(err).NotTo(HaveOccurred(), "HTTPS port verified against the client CA")
					Expect(conn.ConnectionState().PeerCertificates[0].CheckSignatureFrom(clientCA)).To(Succeed())
					_ = conn.Close()
					_, err = tls.Dial("tcp", u.Host, &tls.Config{RootCAs: routeCAs, MinVersion: tls.VersionTLS12})
					Expect(err).To(HaveOccurred(), "HTTPS port must not verify against the route CA")

					peer := Others(env.Cluster, n)[0]
					peerRoute, err := tls.LoadX509KeyPair(t.RouteCert[peer.Name()], t.RouteKey[peer.Name()])
					Expect(err).NotTo(HaveOccurred())
					chain, err := chaos.RouteHandshake(n.RouteAddr(), forceCert(routeCAs, peerRoute))
					Expect(err).NotTo(HaveOccurred(), "route port with a route-CA certificate")
					Expect(chain[0].CheckSignatureFrom(routeCA)).To(Succeed(), "route port presents a route-CA certificate")
				}

				By("re-minting keeps the route CA; --force rotates it and keeps the client CA")
				dir := filepath.Join(env.Dir, "remint")
				specs := []pki.NodeSpec{{Name: "a", Hosts: []string{"127.0.0.1", "192.0.2.10"}}}
				l1, err := pki.MintCluster(dir, specs, false)
				Expect(err).NotTo(HaveOccurred())
				r1, c1 := readCert(l1.RouteCACert), readCert(l1.ClientCACert)
				Expect(readCert(l1.Nodes["a"].ServerCert).VerifyHostname("192.0.2.10")).To(Succeed())
				l2, err := pki.MintCluster(dir, specs, false)
				Expect(err).NotTo(HaveOccurred())
				Expect(readCert(l2.RouteCACert).Equal(r1)).To(BeTrue(), "route CA kept without --force")
				l3, err := pki.MintCluster(dir, specs, true)
				Expect(err).NotTo(HaveOccurred())
				Expect(readCert(l3.RouteCACert).Equal(r1)).To(BeFalse(), "route CA rotated with --force")
				Expect(readCert(l3.ClientCACert).Equal(c1)).To(BeTrue(), "client CA kept")
				Expect(pki.VerifyFile(l3.Nodes["a"].RouteCert, l3.RouteCACert, x509.ExtKeyUsageClientAuth)).To(Succeed())
			})
	})
})

// forceCert sends cert whatever CAs the server asks for: Go's client would
// otherwise send nothing, and we want the server itself to judge it.
func forceCert(roots *x509.CertPool, cert tls.Certificate) *tls.Config {
	return &tls.Config{
		RootCAs:    roots,
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		},
	}
}

func readCert(path string) *x509.Certificate {
	GinkgoHelper()
	b, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	certs, err := parsePEMCerts(b)
	Expect(err).NotTo(HaveOccurred())
	return certs[0]
}

// startRogue runs a plain nats-server that tries to route to addr with the
// given route certificate and the real route secret.
func startRogue(cluster, name, addr, secret, certFile, keyFile, routeCA string) *server.Server {
	GinkgoHelper()
	tlsCfg, err := pki.ServerTLSConfig(certFile, keyFile, routeCA, true)
	Expect(err).NotTo(HaveOccurred())
	host, port, err := net.SplitHostPort(addr)
	Expect(err).NotTo(HaveOccurred())
	p, _ := strconv.Atoi(port)
	u, err := url.Parse(fmt.Sprintf("nats-route://%s:%d", host, p))
	Expect(err).NotTo(HaveOccurred())
	u.User = url.UserPassword("unibus-route", secret)
	s, err := server.NewServer(&server.Options{
		ServerName: name, Host: rogueHost(addr), Port: -1, NoSigs: true, NoLog: true,
		Cluster: server.ClusterOpts{
			Name: cluster, Host: rogueHost(addr), Port: -1, TLSConfig: tlsCfg, TLSTimeout: 2,
			Username: "unibus-route", Password: secret, PoolSize: -1, NoAdvertise: true,
		},
		Routes: []*url.URL{u},
	})
	Expect(err).NotTo(HaveOccurred())
	s.Start()
	Expect(s.ReadyForConnections(5 * time.Second)).To(BeTrue())
	DeferCleanup(s.Shutdown)
	return s
}

// rogueHost is the controller's address toward addr: loopback for local
// targets, the bridge address for simulated hosts.
func rogueHost(addr string) string {
	c, err := net.Dial("udp", addr) // no packet is sent: this only picks the route
	if err != nil {
		return "127.0.0.1"
	}
	defer func() { _ = c.Close() }()
	host, _, _ := net.SplitHostPort(c.LocalAddr().String())
	return host
}

// clusterName is the cluster's name as the nodes report it.
func clusterName(ctx context.Context, env *Env) string {
	GinkgoHelper()
	rep := env.Report(ctx, env.Cluster.Nodes()[0])
	Expect(rep.Servers).NotTo(BeEmpty())
	return rep.Servers[0].Cluster
}
