package chaos

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/identity"
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

// DialInternal connects to node n as the node itself: its internal service
// identity (full permissions) over loopback with the operator certificate.
// Specs use it to look at JetStream state directly.
func DialInternal(c Cluster, n Node, opts ...nats.Option) (*nats.Conn, error) {
	t := c.TLS()
	f, ok := t.InternalID[n.Name()]
	if !ok {
		return nil, fmt.Errorf("target %s does not expose %s's internal identity", c.Target(), n.Name())
	}
	id, err := identity.LoadFile(f)
	if err != nil {
		return nil, err
	}
	kp := id.KeyPair()
	return Dial(n, t.ClientCA, t.OperatorCert, t.OperatorKey, append(opts, nats.Nkey(id.NKey(), kp.Sign))...)
}

// DialAs connects to node n as a user identity with the operator
// certificate, using the inbox prefix the user's ACL allows.
func DialAs(c Cluster, n Node, id *identity.Identity, opts ...nats.Option) (*nats.Conn, error) {
	t := c.TLS()
	kp := id.KeyPair()
	all := append([]nats.Option{nats.Nkey(id.NKey(), kp.Sign), nats.CustomInboxPrefix(authn.InboxPrefix(id.SignPub()))}, opts...)
	return Dial(n, t.ClientCA, t.OperatorCert, t.OperatorKey, all...)
}
