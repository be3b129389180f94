package e2e

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/unibus/clusterkit/membershipd/identity"
)

// Who may hand out a room key, and which key.
//
// The server (and anyone who can write its KV buckets) must not be able to
// give a member a room key of its own choosing. Three signed statements
// chain the key a recipient unwraps back to the room id it was given:
//
//  1. The room id commits to the creator: id = RoomID(creator, salt), the
//     first 8 bytes of SHA-256, so another creator for a known id needs a
//     64-bit second preimage.
//  2. The creator signs the room-key fingerprint (Commit):
//     "unibus-room-commit-v1|"+room+"|"+creator+"|"+fingerprint, with
//     fingerprint = hex(SHA-256("unibus-room-key-fp-v1|"+room+"|"+key)).
//  3. Whoever adds a member signs the key wrapped to it (Grant):
//     "unibus-key-grant-v1|"+room+"|"+recipient+"|"+wrapped+"|"+adder.
//     The adder must be the creator, an admin the caller trusts, or a
//     member whose own grant chains back to the creator.
//
// A recipient accepts its wrapped key only if all three hold and the key
// it unwraps matches the fingerprint (OpenRoomKey). Each string parses one
// way: room ids have no '|', keys are 64 hex, wrapped keys base64.

const (
	commitLabel = "unibus-room-commit-v1|"
	grantLabel  = "unibus-key-grant-v1|"
	fpLabel     = "unibus-room-key-fp-v1|"
	roomIDLabel = "unibus-room\n"
)

// RoomID is the id of the room that creator makes with salt (the create
// request's idempotency key): 16 lower-case hex characters.
func RoomID(creator, salt string) string {
	sum := sha256.Sum256([]byte(roomIDLabel + creator + "\n" + salt))
	return hex.EncodeToString(sum[:8])
}

// Fingerprint is the room key's commitment for room roomID (64 hex).
func Fingerprint(roomKey []byte, roomID string) (string, error) {
	if len(roomKey) != RoomKeySize {
		return "", fmt.Errorf("fingerprint: room key must be %d bytes, got %d", RoomKeySize, len(roomKey))
	}
	if err := checkRoomID(roomID); err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	h := sha256.New()
	h.Write([]byte(fpLabel + roomID + "|"))
	h.Write(roomKey)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Commit is a room's creator-signed key fingerprint.
type Commit struct {
	Room        string // room id
	Creator     string // 64-hex sign key
	Salt        string // RoomID(Creator, Salt) == Room
	Fingerprint string // Fingerprint(room key, Room)
	Sig         string // base64 ed25519 by Creator
}

// SignCommit makes the creator's commitment to roomKey for room roomID,
// made with salt.
func SignCommit(creator *identity.Identity, roomKey []byte, salt string) (Commit, error) {
	roomID := RoomID(creator.SignPub(), salt)
	fp, err := Fingerprint(roomKey, roomID)
	if err != nil {
		return Commit{}, fmt.Errorf("sign commit: %w", err)
	}
	c := Commit{Room: roomID, Creator: creator.SignPub(), Salt: salt, Fingerprint: fp}
	c.Sig = base64.StdEncoding.EncodeToString(creator.Sign(c.input()))
	return c, nil
}

func (c Commit) input() []byte {
	return []byte(commitLabel + c.Room + "|" + c.Creator + "|" + c.Fingerprint)
}

// Verify checks that the room id follows from the creator and that the
// creator signed the fingerprint.
func (c Commit) Verify() error {
	if err := checkRoomID(c.Room); err != nil {
		return fmt.Errorf("room commitment: %w", err)
	}
	if c.Salt == "" || RoomID(c.Creator, c.Salt) != c.Room {
		return fmt.Errorf("room commitment: room id %s was not made by creator %.16s (created by an older server, or the creator was altered)", c.Room, c.Creator)
	}
	if len(c.Fingerprint) != 2*sha256.Size {
		return errors.New("room commitment: no key fingerprint (created by an older client, or removed)")
	}
	if !verify(c.Creator, c.input(), c.Sig) {
		return errors.New("room commitment: key fingerprint not signed by the room's creator (altered)")
	}
	return nil
}

// Grant is one member's wrapped room key and who gave it.
type Grant struct {
	Member     string // recipient's 64-hex sign key
	AddedBy    string // adder's 64-hex sign key
	WrappedKey string // WrapRoomKey(key, room, Member)
	Sig        string // base64 ed25519 by AddedBy
}

// SignGrant signs wrapped (the room key wrapped to member) as adder.
func SignGrant(adder *identity.Identity, roomID, member, wrapped string) (Grant, error) {
	if err := checkRoomID(roomID); err != nil {
		return Grant{}, fmt.Errorf("sign grant: %w", err)
	}
	g := Grant{Member: member, AddedBy: adder.SignPub(), WrappedKey: wrapped}
	g.Sig = base64.StdEncoding.EncodeToString(adder.Sign(g.input(roomID)))
	return g, nil
}

func (g Grant) input(roomID string) []byte {
	return []byte(grantLabel + roomID + "|" + g.Member + "|" + g.WrappedKey + "|" + g.AddedBy)
}

// Verify checks the adder's signature over the grant for room roomID.
func (g Grant) Verify(roomID string) error {
	if err := checkRoomID(roomID); err != nil {
		return fmt.Errorf("key grant: %w", err)
	}
	if g.Sig == "" {
		return fmt.Errorf("key grant for %.16s: unsigned (stored by an older client, or substituted)", g.Member)
	}
	if !verify(g.AddedBy, g.input(roomID), g.Sig) {
		return fmt.Errorf("key grant for %.16s: not signed by its adder %.16s (substituted or altered)", g.Member, g.AddedBy)
	}
	return nil
}

// verify checks a base64 ed25519 signature by the 64-hex key pub.
func verify(pub string, msg []byte, sigB64 string) bool {
	k, err := identity.ParseSignPub(pub)
	if err != nil || hex.EncodeToString(k) != pub {
		return false
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(k, msg, sig)
}

// Legitimate is the set of members whose grants chain back to the
// creator (or to an admin in admins): starting from those, a grant
// validly signed by a legitimate member makes its recipient legitimate.
// Grants with bad signatures are ignored.
func Legitimate(c Commit, grants []Grant, admins map[string]bool) map[string]bool {
	ok := map[string]bool{c.Creator: true}
	for a := range admins {
		ok[a] = true
	}
	for changed := true; changed; {
		changed = false
		for _, g := range grants {
			if ok[g.Member] || !ok[g.AddedBy] || g.Verify(c.Room) != nil {
				continue
			}
			ok[g.Member] = true
			changed = true
		}
	}
	return ok
}

// ErrUntrustedKey is a wrapped room key the recipient must not use.
var ErrUntrustedKey = errors.New("untrusted room key")

// OpenRoomKey is the recipient's whole check of its wrapped key mine: the
// room commitment, mine's signature, that its adder is legitimate (the
// creator, an admin in admins, or a member added by a valid chain from the
// creator, per grants: the room's member rows), the unwrap, and that the
// key matches the committed fingerprint. Every failure wraps
// ErrUntrustedKey.
func OpenRoomKey(c Commit, grants []Grant, admins map[string]bool, mine Grant, id *identity.Identity) ([]byte, error) {
	fail := func(err error) ([]byte, error) {
		return nil, fmt.Errorf("%w: room %s: %w", ErrUntrustedKey, c.Room, err)
	}
	if err := c.Verify(); err != nil {
		return fail(err)
	}
	if mine.Member != id.SignPub() {
		return fail(fmt.Errorf("key grant is for %.16s, not for me", mine.Member))
	}
	if err := mine.Verify(c.Room); err != nil {
		return fail(err)
	}
	if !Legitimate(c, grants, admins)[mine.AddedBy] {
		return fail(fmt.Errorf("key grant for me signed by %.16s, who is not the creator, an admin, or a member added by one", mine.AddedBy))
	}
	key, err := UnwrapRoomKey(mine.WrappedKey, c.Room, id)
	if err != nil {
		return fail(err)
	}
	fp, err := Fingerprint(key, c.Room)
	if err != nil {
		return fail(err)
	}
	if subtle.ConstantTimeCompare([]byte(fp), []byte(c.Fingerprint)) != 1 {
		clear(key)
		return fail(errors.New("the unwrapped key does not match the fingerprint the creator signed"))
	}
	return key, nil
}
