package e2e

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"sync"

	"github.com/unibus/clusterkit/membershipd/identity"
)

// The envelope's JSON is written and read without reflection when it has
// the exact shape Seal writes (fields in order, no whitespace, no escapes):
// encoding/json cost as much per message as the Ed25519 signature (bench
// profiles, README "Performance"). Anything else goes through
// encoding/json, so what Open accepts, and what it decodes, is unchanged;
// the tests hold both paths to encoding/json's bytes and values.

const (
	envV      = `{"v":`
	envRoom   = `,"room":"`
	envSender = `","sender":"`
	envID     = `","id":"`
	envNonce  = `","nonce":"`
	envCt     = `","ct":"`
	envSig    = `","sig":"`
	envEnd    = `"}`
)

// marshalEnvelope is json.Marshal(e), byte for byte.
func marshalEnvelope(e envelope) ([]byte, error) {
	if !plainJSON(e.Room) || !plainJSON(e.Sender) || !plainJSON(e.ID) || !plainJSON(e.Nonce) || !plainJSON(e.Ct) || !plainJSON(e.Sig) {
		return json.Marshal(e) // escapes needed: leave them to encoding/json
	}
	n := len(envV) + 20 + len(envRoom) + len(e.Room) + len(envSender) + len(e.Sender) + len(envID) + len(e.ID) +
		len(envNonce) + len(e.Nonce) + len(envCt) + len(e.Ct) + len(envSig) + len(e.Sig) + len(envEnd)
	b := make([]byte, 0, n)
	b = append(b, envV...)
	b = strconv.AppendInt(b, int64(e.V), 10)
	b = append(append(b, envRoom...), e.Room...)
	b = append(append(b, envSender...), e.Sender...)
	b = append(append(b, envID...), e.ID...)
	b = append(append(b, envNonce...), e.Nonce...)
	b = append(append(b, envCt...), e.Ct...)
	b = append(append(b, envSig...), e.Sig...)
	return append(b, envEnd...), nil
}

// unmarshalEnvelope is json.Unmarshal(data, &e).
func unmarshalEnvelope(data []byte, e *envelope) error {
	if fastEnvelope(data, e) {
		return nil
	}
	*e = envelope{}
	return json.Unmarshal(data, e)
}

// fastEnvelope decodes data if it has exactly the shape marshalEnvelope
// writes with a one-digit version; it reports false for anything else.
// Every string it accepts is printable ASCII without '"' or '\', where
// JSON's decoding is the identity.
func fastEnvelope(data []byte, e *envelope) bool {
	rest, ok := bytes.CutPrefix(data, []byte(envV))
	if !ok || len(rest) < 2 || rest[0] < '0' || rest[0] > '9' {
		return false
	}
	v := int(rest[0] - '0')
	rest = rest[1:]
	var f [6]string
	for i, lead := range []string{envRoom, envSender, envID, envNonce, envCt, envSig} {
		if rest, ok = bytes.CutPrefix(rest, []byte(lead)); !ok {
			return false
		}
		end := bytes.IndexByte(rest, '"')
		if end < 0 || !plainJSON(string(rest[:end])) {
			return false
		}
		f[i], rest = string(rest[:end]), rest[end:]
	}
	if string(rest) != envEnd {
		return false
	}
	*e = envelope{V: v, Room: f[0], Sender: f[1], ID: f[2], Nonce: f[3], Ct: f[4], Sig: f[5]}
	return true
}

// plainJSON reports whether s is written and read by encoding/json as is:
// printable ASCII without '"', '\' and the HTML characters json.Marshal
// escapes.
func plainJSON(s string) bool {
	for i := range len(s) {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// senderKeys remembers sender keys that passed identity.ParseSignPub and
// the lower-case check, keyed by their exact hex: the check (a point
// decompression, a re-encoding and a cofactor multiplication) depends on
// the string alone, and a room has few senders, while Open runs per
// message. Keys that fail are never remembered, so they fail every time.
var senderKeys = struct {
	sync.RWMutex
	m map[string]ed25519.PublicKey
}{m: map[string]ed25519.PublicKey{}}

// maxSenderKeys bounds the cache (about 100 bytes a key); when full it
// starts over.
const maxSenderKeys = 4096

// senderKey is identity.ParseSignPub plus the one-spelling check, cached.
func senderKey(hexKey string) (ed25519.PublicKey, error) {
	senderKeys.RLock()
	pub, ok := senderKeys.m[hexKey]
	senderKeys.RUnlock()
	if ok {
		return pub, nil
	}
	pub, err := identity.ParseSignPub(hexKey)
	if err != nil || hex.EncodeToString(pub) != hexKey {
		return nil, errors.New("bad sender key")
	}
	senderKeys.Lock()
	if len(senderKeys.m) >= maxSenderKeys {
		clear(senderKeys.m)
	}
	senderKeys.m[hexKey] = pub
	senderKeys.Unlock()
	return pub, nil
}
