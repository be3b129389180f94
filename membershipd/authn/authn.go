// Package authn decides who may open a NATS connection to a node.
//
// Today it admits the node's own internal connection (a per-boot secret
// that never leaves the process) and, only while the quorum gate says
// quorum, clients whose certificate the TLS layer verified against the
// client CA. Identity (nkey) checks and per-subject ACLs build on this.
package authn

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats-server/v2/server"
)

// InternalUser is the username of the node's own in-process connection.
const InternalUser = "membershipd-internal"

// Authenticator implements server.Authentication.
type Authenticator struct {
	token    string
	inQuorum func() (bool, string)
	log      *slog.Logger
}

var _ server.Authentication = (*Authenticator)(nil)

// New makes an authenticator with a fresh internal token. inQuorum is the
// gate: no new client connection is admitted while it says no.
func New(inQuorum func() (bool, string), log *slog.Logger) (*Authenticator, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("internal token: %w", err)
	}
	return &Authenticator{token: hex.EncodeToString(b), inQuorum: inQuorum, log: log}, nil
}

// InternalToken is the password of the internal connection; it stays in
// memory and is never logged.
func (a *Authenticator) InternalToken() string { return a.token }

// Check implements server.Authentication. It must stay fast: the client's
// connect timeout and the server's auth timeout are both 2 s.
func (a *Authenticator) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o.Username == InternalUser {
		if subtle.ConstantTimeCompare([]byte(o.Password), []byte(a.token)) == 1 {
			c.RegisterUser(&server.User{Username: InternalUser})
			return true
		}
		a.log.Warn("connection denied: bad internal credentials", "remote", addr(c))
		return false
	}
	cs := c.GetTLSConnectionState()
	if cs == nil || len(cs.VerifiedChains) == 0 {
		a.log.Info("connection denied: no verified client certificate", "remote", addr(c))
		return false
	}
	if ok, why := a.inQuorum(); !ok {
		a.log.Info("connection denied: node not in quorum", "remote", addr(c), "reason", why)
		return false
	}
	c.RegisterUser(&server.User{Username: "cert:" + cs.VerifiedChains[0][0].Subject.CommonName})
	return true
}

func addr(c server.ClientAuthentication) string {
	if a := c.RemoteAddress(); a != nil {
		return a.String()
	}
	return "in-process"
}
