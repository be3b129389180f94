package chaos

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/clusterkit/membershipd/pki"
)

// Dial connects to one node's data plane with TLS and the given client
// certificate (certFile "" connects without one, to prove the rejection).
// No reconnects: a spec wants to see exactly what this node answers.
func Dial(n Node, caFile, certFile, keyFile string, opts ...nats.Option) (*nats.Conn, error) {
	tlsCfg, err := pki.ClientTLSConfig(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	all := append([]nats.Option{nats.Secure(tlsCfg), nats.Timeout(3 * time.Second), nats.NoReconnect(),
		nats.Name("chaos-probe")}, opts...)
	nc, err := nats.Connect(n.ClientURL(), all...)
	if err != nil {
		return nil, fmt.Errorf("connect %s (%s): %w", n.Name(), n.ClientURL(), err)
	}
	return nc, nil
}

// DialOperator connects to node n with the cluster's operator certificate.
func DialOperator(c Cluster, n Node, opts ...nats.Option) (*nats.Conn, error) {
	t := c.TLS()
	return Dial(n, t.ClientCA, t.OperatorCert, t.OperatorKey, opts...)
}
