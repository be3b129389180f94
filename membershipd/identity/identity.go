// Package identity holds what the daemon and its clients share about a bus
// user's key: roles, handles, parsing and converting ed25519 sign keys to and
// from NATS user nkeys, and the on-disk identity file (an nkey user seed).
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"filippo.io/edwards25519"
	"github.com/nats-io/nkeys"
)

// Role is a bus user's role.
type Role string

const (
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

// ParseRole accepts exactly the role names, so a typo never becomes a role.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleMember:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q (want admin or member)", s)
}

const maxHandleLen = 32

// ValidateHandle checks a handle: 1-32 characters, [a-z0-9][a-z0-9._-]*.
func ValidateHandle(h string) error {
	if len(h) == 0 || len(h) > maxHandleLen {
		return fmt.Errorf("handle %q: must be 1-%d characters, got %d", h, maxHandleLen, len(h))
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		case i == 0:
			return fmt.Errorf("handle %q: must start with a lower-case letter or digit", h)
		default:
			return fmt.Errorf("handle %q: character %q at position %d not allowed (want a-z, 0-9, '.', '_' or '-')", h, c, i+1)
		}
	}
	return nil
}

// signKeyHexLen is an ed25519 public key (32 bytes) in hex.
const signKeyHexLen = 2 * ed25519.PublicKeySize

// ParseSignPub parses a 64-hex ed25519 public key and checks that it is a
// canonical encoding of a curve point that is not of small order: such a key
// has no private key behind it and would let anyone forge its signatures.
func ParseSignPub(hexKey string) (ed25519.PublicKey, error) {
	if len(hexKey) != signKeyHexLen {
		return nil, fmt.Errorf("sign key %q: want %d hex characters, got %d", abbrev(hexKey), signKeyHexLen, len(hexKey))
	}
	raw, err := hex.DecodeString(hexKey)
	if err != nil {
		return nil, fmt.Errorf("sign key %q: want %d hex characters, got non-hex input", abbrev(hexKey), signKeyHexLen)
	}
	if !validPoint(raw) {
		return nil, fmt.Errorf("sign key %s: not a valid ed25519 public key", abbrev(hexKey))
	}
	return ed25519.PublicKey(raw), nil
}

// validPoint reports whether b is the canonical encoding of a point outside
// the small-order subgroup. SetBytes accepts non-canonical encodings (y >= p,
// "negative zero" x), so the round trip through Bytes rejects those.
func validPoint(b []byte) bool {
	p, err := new(edwards25519.Point).SetBytes(b)
	if err != nil || !bytes.Equal(p.Bytes(), b) {
		return false
	}
	return new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) != 1
}

// abbrev shortens a key for error messages: a user who pastes a private key
// (64-hex seed, 128-hex seed||pub) where a public one belongs must not find
// the secret echoed into a terminal or a log.
func abbrev(s string) string {
	const keep = 8
	if len(s) <= keep {
		return s
	}
	return s[:keep] + "..."
}

// NKeyFromSignPub is the NATS user nkey ("U...") for an ed25519 public key.
func NKeyFromSignPub(pub ed25519.PublicKey) string {
	nk, err := nkeys.Encode(nkeys.PrefixByteUser, pub)
	if err != nil {
		// Encode only fails on a wrong length, which is a caller bug.
		panic(fmt.Sprintf("identity: encode user nkey: %v", err))
	}
	return string(nk)
}

// SignPubFromNKey turns a user nkey back into the lower-case 64-hex sign key.
// The input is never echoed: a seed ("SU...") passed by mistake is a secret.
func SignPubFromNKey(nkey string) (string, error) {
	// Go's base32 decoder skips CR and LF, so "U...\n..." would decode to
	// the same key: accept only the 56 characters of the nkey alphabet.
	if len(nkey) != 56 || strings.TrimLeft(nkey, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
		return "", errors.New("not a NATS user public nkey (want U followed by 55 base32 characters)")
	}
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(nkey))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return "", errors.New("not a NATS user public nkey (want U followed by 55 base32 characters)")
	}
	return hex.EncodeToString(raw), nil
}

// Identity is a user's signing key, derived from its 32-byte ed25519 seed.
// The same seed is both the ed25519 sign key and the NATS user nkey.
type Identity struct {
	priv ed25519.PrivateKey
	seed []byte // nkey seed text, "SU..."
}

// Generate makes a new random identity.
func Generate() (*Identity, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	return FromSeed(seed)
}

// FromSeed builds an identity from a 32-byte ed25519 seed.
func FromSeed(seed []byte) (*Identity, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity seed: want %d bytes, got %d", ed25519.SeedSize, len(seed))
	}
	text, err := nkeys.EncodeSeed(nkeys.PrefixByteUser, seed)
	if err != nil {
		return nil, fmt.Errorf("identity seed: %w", err)
	}
	return &Identity{priv: ed25519.NewKeyFromSeed(seed), seed: text}, nil
}

// fromSeedText parses an nkey user seed ("SU...").
func fromSeedText(text []byte) (*Identity, error) {
	prefix, raw, err := nkeys.DecodeSeed(text)
	if err != nil || prefix != nkeys.PrefixByteUser {
		return nil, errNotUserSeed
	}
	return FromSeed(raw)
}

var errNotUserSeed = errors.New("not an nkey user seed")

func (id *Identity) pub() ed25519.PublicKey { return id.priv.Public().(ed25519.PublicKey) }

// SignPub is the public key as 64 lower-case hex characters.
func (id *Identity) SignPub() string { return hex.EncodeToString(id.pub()) }

// NKey is the public NATS user nkey ("U...").
func (id *Identity) NKey() string { return NKeyFromSignPub(id.pub()) }

// KeyPair returns a fresh nkeys key pair for signing the NATS server nonce;
// a fresh one so a caller's Wipe cannot break this identity.
func (id *Identity) KeyPair() nkeys.KeyPair {
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, id.priv.Seed())
	if err != nil {
		panic(fmt.Sprintf("identity: nkey from seed: %v", err)) // 32-byte seed cannot fail
	}
	return kp
}

// Sign is a plain ed25519 signature over msg.
func (id *Identity) Sign(msg []byte) []byte { return ed25519.Sign(id.priv, msg) }

// Ed25519PrivateKey returns a copy of the ed25519 private key (seed||pub),
// for deriving other keys from it (e2e's X25519 key). The caller owns the
// copy and may clear it.
func (id *Identity) Ed25519PrivateKey() ed25519.PrivateKey {
	return bytes.Clone(id.priv)
}

// Seed returns a copy of the nkey seed text ("SU..."), the identity file's
// content.
func (id *Identity) Seed() []byte { return bytes.Clone(id.seed) }

// String never shows the seed, so an identity printed by mistake leaks nothing.
func (id *Identity) String() string { return "identity " + id.NKey() }

// GoString keeps %#v from dumping the private key.
func (id *Identity) GoString() string { return id.String() }
