// Package e2e is end-to-end room encryption. Every room has a random 32-byte
// room key that only members hold: the server stores it wrapped to each
// member's key (WrapRoomKey) and stores messages as signed ciphertext
// envelopes (Seal); neither lets it read anything.
//
// Members' encryption keys are not registered separately: each identity's
// X25519 key is derived from its ed25519 sign key, exactly as libsodium's
// crypto_sign_ed25519_pk_to_curve25519 / crypto_sign_ed25519_sk_to_curve25519
// do, so a room key can be wrapped to any registered sign key and other
// implementations can interoperate by calling libsodium. This saves a
// second key per user to register, rotate and bind to the identity; reusing
// one key for Ed25519 signatures and X25519 key agreement is common practice
// and has been analysed for Ed25519 alongside an X25519-based KEM
// (Thormarker, "On using the same key pair for Ed25519 and an X25519 based
// KEM", 2021).
package e2e

import (
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"filippo.io/edwards25519"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/unibus/clusterkit/membershipd/identity"
)

// RoomKeySize is the length of a room key.
const RoomKeySize = chacha20poly1305.KeySize

const (
	wrapVersion = 1
	wrapLabel   = "unibus-room-key-v1|"
	// msgVersion 2 adds the message id; version 1 envelopes (no id, so a
	// replay cannot be told apart) are refused.
	msgVersion = 2
	msgLabel   = "unibus-msg-v2|"
	// MsgIDSize is the length of a message's random id.
	MsgIDSize = 16

	x25519Size = 32
	nonceSize  = chacha20poly1305.NonceSizeX
	tagSize    = chacha20poly1305.Overhead
	// wrappedLen is version || ephPub || nonce || sealed room key.
	wrappedLen = 1 + x25519Size + nonceSize + RoomKeySize + tagSize
)

// X25519Public is the X25519 public key of a 64-hex ed25519 sign key: the
// Montgomery u-coordinate of the ed25519 point (u = (1+y)/(1-y)), as
// libsodium's crypto_sign_ed25519_pk_to_curve25519. Keys that
// identity.ParseSignPub refuses (non-canonical, small order) are refused.
func X25519Public(signPubHex string) ([]byte, error) {
	pub, err := identity.ParseSignPub(signPubHex)
	if err != nil {
		return nil, err
	}
	if hex.EncodeToString(pub) != signPubHex {
		// One spelling per key, since the hex is bound into AD and info.
		return nil, errors.New("sign key: want lower-case hex")
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, errors.New("sign key: not a valid ed25519 public key")
	}
	return p.BytesMontgomery(), nil
}

// X25519Private is id's X25519 private key: the first half of
// SHA-512(ed25519 seed), clamped — the ed25519 signing scalar, as
// libsodium's crypto_sign_ed25519_sk_to_curve25519. The caller owns the
// result and should clear it when done.
func X25519Private(id *identity.Identity) []byte {
	priv := id.Ed25519PrivateKey()
	defer clear(priv)
	h := sha512.Sum512(priv.Seed())
	defer clear(h[:])
	k := make([]byte, x25519Size)
	copy(k, h[:x25519Size])
	k[0] &= 248
	k[31] &= 127
	k[31] |= 64
	return k
}

// NewRoomKey makes a random room key.
func NewRoomKey() ([]byte, error) {
	k := make([]byte, RoomKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("room key: %w", err)
	}
	return k, nil
}

// WrapRoomKey encrypts roomKey to the member whose sign key is
// recipientSignPubHex, for room roomID only (ECIES):
//
//	eph     = fresh X25519 key pair
//	shared  = X25519(eph, recipientX25519)
//	key     = HKDF-SHA256(shared, salt = ephPub||recipientX25519,
//	                      info = "unibus-room-key-v1|"+roomID)
//	ct      = XChaCha20-Poly1305(key, random 24-byte nonce, roomKey,
//	                      AD = "unibus-room-key-v1|"+roomID+"|"+recipientSignPubHex)
//	result  = base64.StdEncoding(0x01 || ephPub(32) || nonce(24) || ct)
func WrapRoomKey(roomKey []byte, roomID, recipientSignPubHex string) (string, error) {
	if len(roomKey) != RoomKeySize {
		return "", fmt.Errorf("wrap room key: room key must be %d bytes, got %d", RoomKeySize, len(roomKey))
	}
	if err := checkRoomID(roomID); err != nil {
		return "", fmt.Errorf("wrap room key: %w", err)
	}
	rpubRaw, err := X25519Public(recipientSignPubHex)
	if err != nil {
		return "", fmt.Errorf("wrap room key: recipient: %w", err)
	}
	rpub, err := ecdh.X25519().NewPublicKey(rpubRaw)
	if err != nil {
		return "", fmt.Errorf("wrap room key: recipient: %w", err)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("wrap room key: %w", err)
	}
	shared, err := eph.ECDH(rpub)
	if err != nil {
		return "", errors.New("wrap room key: recipient key is unusable")
	}
	ephPub := eph.PublicKey().Bytes()
	aead, err := wrapAEAD(shared, ephPub, rpubRaw, roomID)
	if err != nil {
		return "", fmt.Errorf("wrap room key: %w", err)
	}
	out := make([]byte, 1+x25519Size+nonceSize, wrappedLen)
	out[0] = wrapVersion
	copy(out[1:], ephPub)
	nonce := out[1+x25519Size:]
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("wrap room key: %w", err)
	}
	out = aead.Seal(out, nonce, roomKey, []byte(wrapLabel+roomID+"|"+recipientSignPubHex))
	return base64.StdEncoding.EncodeToString(out), nil
}

// UnwrapRoomKey decrypts a room key that WrapRoomKey wrapped to id for room
// roomID. A key wrapped to another identity or for another room, or altered
// in any way, fails.
func UnwrapRoomKey(wrapped, roomID string, id *identity.Identity) ([]byte, error) {
	if err := checkRoomID(roomID); err != nil {
		return nil, fmt.Errorf("unwrap room key: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(wrapped)
	if err != nil {
		return nil, errors.New("unwrap room key: not base64")
	}
	if len(raw) == 0 || raw[0] != wrapVersion {
		return nil, errors.New("unwrap room key: unsupported format version")
	}
	if len(raw) != wrappedLen {
		return nil, fmt.Errorf("unwrap room key: want %d bytes, got %d", wrappedLen, len(raw))
	}
	ephPub := raw[1 : 1+x25519Size]
	nonce := raw[1+x25519Size : 1+x25519Size+nonceSize]
	ct := raw[1+x25519Size+nonceSize:]

	sk := X25519Private(id)
	defer clear(sk)
	priv, err := ecdh.X25519().NewPrivateKey(sk)
	if err != nil {
		return nil, fmt.Errorf("unwrap room key: %w", err)
	}
	epk, err := ecdh.X25519().NewPublicKey(ephPub)
	if err != nil {
		return nil, errors.New("unwrap room key: bad ephemeral key")
	}
	shared, err := priv.ECDH(epk)
	if err != nil {
		// All-zero output: a small-order ephemeral key.
		return nil, errors.New("unwrap room key: bad ephemeral key")
	}
	aead, err := wrapAEAD(shared, ephPub, priv.PublicKey().Bytes(), roomID)
	if err != nil {
		return nil, fmt.Errorf("unwrap room key: %w", err)
	}
	key, err := aead.Open(nil, nonce, ct, []byte(wrapLabel+roomID+"|"+id.SignPub()))
	if err != nil {
		return nil, errors.New("unwrap room key: cannot decrypt (wrapped for another identity or room, or corrupted)")
	}
	return key, nil
}

// wrapAEAD derives the key-wrapping AEAD and clears shared.
func wrapAEAD(shared, ephPub, recipientPub []byte, roomID string) (cipher.AEAD, error) {
	defer clear(shared)
	salt := make([]byte, 0, 2*x25519Size)
	salt = append(append(salt, ephPub...), recipientPub...)
	key, err := hkdf.Key(sha256.New, shared, salt, wrapLabel+roomID, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return chacha20poly1305.NewX(key)
}

// envelope is a room message on the wire. ID, Nonce, Ct and Sig are
// base64.StdEncoding.
type envelope struct {
	V      int    `json:"v"`
	Room   string `json:"room"`
	Sender string `json:"sender"`
	ID     string `json:"id"`
	Nonce  string `json:"nonce"`
	Ct     string `json:"ct"`
	Sig    string `json:"sig"`
}

// Message is an opened envelope.
type Message struct {
	Plaintext []byte
	Sender    string // 64-hex sign key
	// ID is the envelope's unique id (base64 of 16 random bytes), signed
	// by the sender: a second envelope with an ID seen before is a replay
	// (see Replays), whatever its payload.
	ID string
}

// Seal encrypts plaintext for room roomID under roomKey and signs it as
// sender. The result is a JSON envelope
//
//	{"v":2,"room":ID,"sender":HEX,"id":b64,"nonce":b64,"ct":b64,"sig":b64}
//
// with id = 16 random bytes, ct = XChaCha20-Poly1305(roomKey, nonce (24
// random bytes), plaintext, AD = "unibus-msg-v2|"+room+"|"+sender+"|"+id)
// and sig = ed25519 by sender over
// "unibus-msg-v2|"+room+"|"+sender+"|"+id+"|"+nonce+"|"+ct (raw bytes). The
// AEAD alone would let any member, who holds the room key, write a message
// under another member's name; the signature binds the sender and the id.
func Seal(roomKey []byte, roomID string, sender *identity.Identity, plaintext []byte) ([]byte, error) {
	if err := checkRoomID(roomID); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := msgAEAD(roomKey)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	from := sender.SignPub()
	id := make([]byte, MsgIDSize)
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	ct := aead.Seal(nil, nonce, plaintext, msgAD(roomID, from, id))
	sig := sender.Sign(sigInput(roomID, from, id, nonce, ct))
	return marshalEnvelope(envelope{
		V:      msgVersion,
		Room:   roomID,
		Sender: from,
		ID:     base64.StdEncoding.EncodeToString(id),
		Nonce:  base64.StdEncoding.EncodeToString(nonce),
		Ct:     base64.StdEncoding.EncodeToString(ct),
		Sig:    base64.StdEncoding.EncodeToString(sig),
	})
}

// Open checks and decrypts a Seal envelope for room roomID: the format,
// the room, the sender's signature, then the AEAD under roomKey. It returns
// the plaintext and the sender's 64-hex sign key. Whether that sender is a
// member of the room is the caller's to check; so is replay (OpenMessage
// returns the id that Replays checks).
func Open(roomKey []byte, roomID string, data []byte) (plaintext []byte, senderHex string, err error) {
	m, err := OpenMessage(roomKey, roomID, data)
	if err != nil {
		return nil, "", err
	}
	return m.Plaintext, m.Sender, nil
}

// OpenMessage is Open returning the message id too.
func OpenMessage(roomKey []byte, roomID string, data []byte) (Message, error) {
	if err := checkRoomID(roomID); err != nil {
		return Message{}, fmt.Errorf("open: %w", err)
	}
	aead, err := msgAEAD(roomKey)
	if err != nil {
		return Message{}, fmt.Errorf("open: %w", err)
	}
	var env envelope
	if err := unmarshalEnvelope(data, &env); err != nil {
		return Message{}, errors.New("open: not a message envelope")
	}
	if env.V != msgVersion {
		return Message{}, fmt.Errorf("open: unsupported message version %d (want %d, which carries a message id)", env.V, msgVersion)
	}
	if env.Room != roomID {
		return Message{}, errors.New("open: message is for another room")
	}
	pub, err := senderKey(env.Sender)
	if err != nil {
		return Message{}, errors.New("open: bad sender key")
	}
	id, err := base64.StdEncoding.DecodeString(env.ID)
	if err != nil || len(id) != MsgIDSize || base64.StdEncoding.EncodeToString(id) != env.ID {
		return Message{}, errors.New("open: bad message id")
	}
	nonce, err := base64.StdEncoding.DecodeString(env.Nonce)
	if err != nil || len(nonce) != nonceSize {
		return Message{}, errors.New("open: bad nonce")
	}
	ct, err := base64.StdEncoding.DecodeString(env.Ct)
	if err != nil || len(ct) < tagSize {
		return Message{}, errors.New("open: bad ciphertext")
	}
	sig, err := base64.StdEncoding.DecodeString(env.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Message{}, errors.New("open: bad signature")
	}
	if !ed25519.Verify(pub, sigInput(roomID, env.Sender, id, nonce, ct), sig) {
		return Message{}, errors.New("open: bad signature (not signed by the claimed sender, or altered)")
	}
	pt, err := aead.Open(nil, nonce, ct, msgAD(roomID, env.Sender, id))
	if err != nil {
		return Message{}, errors.New("open: cannot decrypt (wrong room key, or ciphertext not from this sender)")
	}
	return Message{Plaintext: pt, Sender: env.Sender, ID: env.ID}, nil
}

// Replays remembers the ids of the envelopes a reader opened. The id is
// signed by the sender, so an envelope stored again (by anyone who can
// publish into the stream or write it, the server included) carries an id
// seen before. Not safe for concurrent use; memory grows with the ids
// seen (16 bytes each): a long-lived reader persists or windows them.
type Replays struct{ seen map[string]struct{} }

// ErrReplay is a second envelope with an id seen before.
var ErrReplay = errors.New("replayed envelope (message id seen before)")

// Check records m's id, or returns ErrReplay if it was seen before.
func (r *Replays) Check(m Message) error {
	if r.seen == nil {
		r.seen = map[string]struct{}{}
	}
	if _, ok := r.seen[m.ID]; ok {
		return fmt.Errorf("%w: id %s from %s", ErrReplay, m.ID, m.Sender)
	}
	r.seen[m.ID] = struct{}{}
	return nil
}

func msgAEAD(roomKey []byte) (cipher.AEAD, error) {
	if len(roomKey) != RoomKeySize {
		return nil, fmt.Errorf("room key must be %d bytes, got %d", RoomKeySize, len(roomKey))
	}
	return chacha20poly1305.NewX(roomKey)
}

func msgAD(room, sender string, id []byte) []byte {
	return append([]byte(msgLabel+room+"|"+sender+"|"), id...)
}

// sigInput is "unibus-msg-v2|"+room+"|"+sender+"|"+id+"|"+nonce+"|"+ct. It
// parses one way only: room has no '|' (checkRoomID), sender is 64 hex
// characters, id 16 bytes and nonce 24 bytes, so ct is whatever follows.
func sigInput(room, sender string, id, nonce, ct []byte) []byte {
	b := make([]byte, 0, len(msgLabel)+len(room)+len(sender)+len(id)+len(nonce)+len(ct)+4)
	b = append(b, msgLabel...)
	b = append(b, room...)
	b = append(b, '|')
	b = append(b, sender...)
	b = append(b, '|')
	b = append(b, id...)
	b = append(b, '|')
	b = append(b, nonce...)
	b = append(b, '|')
	return append(b, ct...)
}

// checkRoomID keeps the labelled strings unambiguous: a room ID is
// non-empty and has no '|'. (The server's IDs are 16 lower-case hex.)
func checkRoomID(id string) error {
	if id == "" {
		return errors.New("empty room ID")
	}
	if strings.ContainsRune(id, '|') {
		return errors.New("room ID must not contain '|'")
	}
	return nil
}
