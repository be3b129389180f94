// Package authn decides who may open a NATS connection to a node and what
// each connection may touch.
//
// Under enforce (the default) a client proves an ed25519 identity: the
// NATS nkey derived from it signs the server's nonce, over TLS with a
// client certificate the TLS layer already verified against the client CA.
// The identity must be an active user in the replicated allowlist, and the
// node must be serving (inQuorum): in a quorum of the cluster, and its
// allowlist provably current. A minority never admits anyone. Each admitted
// connection gets the per-subject ACL of its role (acl.go). The node's own
// internal service identity is the only one with full permissions, and only
// over loopback or in-process.
package authn

import (
	"encoding/base64"
	"log/slog"
	"net"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
)

// Mode is --bus-auth.
type Mode string

// Modes.
const (
	Enforce Mode = "enforce"
	Off     Mode = "off" // loopback only: any verified client certificate, full permissions
)

// Allowlist answers from the node's in-memory copy of the users and
// memberships buckets. Ready is false until the initial load finished:
// until then nobody is admitted.
type Allowlist interface {
	Lookup(signPub string) (store.User, bool)
	Rooms(signPub string) []string
	Ready() bool
	// Admitted records which rooms a connection's ACL covers, so a later
	// membership change can refresh exactly the connections that lack it.
	Admitted(signPub string, cid uint64, rooms []string)
}

// Authenticator implements server.Authentication.
type Authenticator struct {
	mode     Mode
	internal string // the internal identity's public nkey
	allow    Allowlist
	inQuorum func() (bool, string)
	log      *slog.Logger
}

var _ server.Authentication = (*Authenticator)(nil)

// New makes an authenticator. internalNKey is the public nkey of the node's
// internal service identity.
func New(mode Mode, internalNKey string, allow Allowlist, inQuorum func() (bool, string), log *slog.Logger) *Authenticator {
	return &Authenticator{mode: mode, internal: internalNKey, allow: allow, inQuorum: inQuorum, log: log}
}

type nkeyRegistrar interface {
	RegisterNkeyUser(*server.NkeyUser) error
}

// Check implements server.Authentication. It must stay fast: the client's
// connect timeout and the server's auth timeout are both 2 s. Every path
// is a map lookup and one signature verification.
func (a *Authenticator) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	remote := c.RemoteAddress()
	inProcess := remote == nil || remote.Network() == "pipe"

	// Every network client presents a certificate the TLS layer verified.
	if !inProcess {
		cs := c.GetTLSConnectionState()
		if cs == nil || len(cs.VerifiedChains) == 0 {
			return a.deny(c, "no verified client certificate")
		}
	}
	if o.Nkey == "" {
		if a.mode == Off && !inProcess {
			if ok, why := a.inQuorum(); !ok {
				return a.deny(c, "node not serving: "+why)
			}
			c.RegisterUser(&server.User{Username: "bus-auth-off"})
			return true
		}
		return a.deny(c, "no nkey (anonymous, user/password and token logins are refused)")
	}
	if !verifyNonce(o.Nkey, o.Sig, c.GetNonce()) {
		return a.deny(c, "nkey signature does not verify")
	}
	reg, ok := c.(nkeyRegistrar)
	if !ok {
		return a.deny(c, "server cannot register nkey users")
	}
	if o.Nkey == a.internal {
		if !inProcess {
			if !isLoopback(remote) {
				return a.deny(c, "internal identity used from a non-loopback address")
			}
			// The on-node CLI is gated like everyone else: `user add` on
			// a minority is refused at once, not after a write timeout.
			if ok, why := a.inQuorum(); !ok {
				return a.deny(c, "node not serving: "+why)
			}
		}
		_ = reg.RegisterNkeyUser(&server.NkeyUser{Nkey: o.Nkey}) // nil permissions: everything
		return true
	}
	if ok, why := a.inQuorum(); !ok {
		return a.deny(c, "node not serving: "+why)
	}
	if !a.allow.Ready() {
		return a.deny(c, "allowlist not loaded yet")
	}
	pub, err := identity.SignPubFromNKey(o.Nkey)
	if err != nil {
		return a.deny(c, "not a user nkey")
	}
	u, found := a.allow.Lookup(pub)
	switch {
	case !found:
		return a.deny(c, "unknown identity "+pub)
	case u.Status != store.StatusActive:
		return a.deny(c, "revoked identity "+pub)
	}
	rooms := a.allow.Rooms(pub)
	if err := reg.RegisterNkeyUser(&server.NkeyUser{Nkey: o.Nkey, Permissions: ACL(u, rooms)}); err != nil {
		return a.deny(c, "register: "+err.Error())
	}
	a.allow.Admitted(pub, c.GetID(), rooms)
	return true
}

func (a *Authenticator) deny(c server.ClientAuthentication, why string) bool {
	a.log.Info("connection denied", "remote", addr(c), "reason", why)
	return false
}

// verifyNonce checks the client's signature of the server nonce the way
// nats-server does for configured nkey users.
func verifyNonce(nkey, sig string, nonce []byte) bool {
	if len(nonce) == 0 || sig == "" {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return false
		}
	}
	pub, err := nkeys.FromPublicKey(nkey)
	if err != nil {
		return false
	}
	return pub.Verify(nonce, raw) == nil
}

func isLoopback(a net.Addr) bool {
	if a == nil {
		return false
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func addr(c server.ClientAuthentication) string {
	if a := c.RemoteAddress(); a != nil {
		return a.String()
	}
	return "in-process"
}
