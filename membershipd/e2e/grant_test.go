package e2e

import (
	"errors"
	"strings"
	"testing"

	"github.com/unibus/clusterkit/membershipd/identity"
)

// roomFixture is a room made by alice, who added bob, who added carol.
type roomFixture struct {
	alice, bob, carol, mallory *identity.Identity
	key                        []byte
	commit                     Commit
	grants                     map[string]Grant // by member
}

func newRoom(t *testing.T) roomFixture {
	t.Helper()
	f := roomFixture{alice: newID(t), bob: newID(t), carol: newID(t), mallory: newID(t), key: roomKey(t), grants: map[string]Grant{}}
	var err error
	f.commit, err = SignCommit(f.alice, f.key, "salt-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ adder, member *identity.Identity }{{f.alice, f.alice}, {f.alice, f.bob}, {f.bob, f.carol}} {
		f.grants[step.member.SignPub()] = f.grant(t, step.adder, step.member.SignPub(), f.key)
	}
	return f
}

func (f roomFixture) grant(t *testing.T, adder *identity.Identity, member string, key []byte) Grant {
	t.Helper()
	w, err := WrapRoomKey(key, f.commit.Room, member)
	if err != nil {
		t.Fatal(err)
	}
	g, err := SignGrant(adder, f.commit.Room, member, w)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func (f roomFixture) rows() []Grant {
	var out []Grant
	for _, g := range f.grants {
		out = append(out, g)
	}
	return out
}

func TestRoomKeyChain(t *testing.T) {
	f := newRoom(t)
	if f.commit.Room != RoomID(f.alice.SignPub(), "salt-1") || len(f.commit.Room) != 16 {
		t.Fatalf("room id %q", f.commit.Room)
	}
	for _, who := range []*identity.Identity{f.alice, f.bob, f.carol} {
		got, err := OpenRoomKey(f.commit, f.rows(), nil, f.grants[who.SignPub()], who)
		if err != nil || string(got) != string(f.key) {
			t.Fatalf("%s: %v", who.SignPub()[:8], err)
		}
	}
	legit := Legitimate(f.commit, f.rows(), nil)
	if len(legit) != 3 || legit[f.mallory.SignPub()] {
		t.Fatalf("legitimate %v", legit)
	}
}

func TestCommitTamper(t *testing.T) {
	f := newRoom(t)
	other, _ := SignCommit(f.mallory, roomKey(t), "salt-1")
	cases := map[string]func(c *Commit){
		"room":        func(c *Commit) { c.Room = "fedcba9876543210" },
		"creator":     func(c *Commit) { c.Creator = f.mallory.SignPub() },
		"salt":        func(c *Commit) { c.Salt = "salt-2" },
		"fingerprint": func(c *Commit) { c.Fingerprint = other.Fingerprint },
		"sig":         func(c *Commit) { c.Sig = flipB64(t, c.Sig) },
		"no sig":      func(c *Commit) { c.Sig = "" },
		"no fp":       func(c *Commit) { c.Fingerprint = "" },
		// mallory re-signs the room under her name: the id does not follow.
		"resigned": func(c *Commit) { c.Creator, c.Fingerprint, c.Sig = other.Creator, other.Fingerprint, other.Sig },
	}
	for name, edit := range cases {
		c := f.commit
		edit(&c)
		if err := c.Verify(); err == nil {
			t.Errorf("%s: tampered commitment verified", name)
		}
		if _, err := OpenRoomKey(c, f.rows(), nil, f.grants[f.bob.SignPub()], f.bob); !errors.Is(err, ErrUntrustedKey) {
			t.Errorf("%s: OpenRoomKey = %v", name, err)
		}
	}
}

func TestGrantTamper(t *testing.T) {
	f := newRoom(t)
	bob := f.grants[f.bob.SignPub()]
	otherWrap, _ := WrapRoomKey(f.key, f.commit.Room, f.bob.SignPub())
	cases := map[string]func(g *Grant){
		"member":  func(g *Grant) { g.Member = f.carol.SignPub() },
		"adder":   func(g *Grant) { g.AddedBy = f.carol.SignPub() },
		"wrapped": func(g *Grant) { g.WrappedKey = otherWrap },
		"sig":     func(g *Grant) { g.Sig = flipB64(t, g.Sig) },
		"no sig":  func(g *Grant) { g.Sig = "" },
	}
	for name, edit := range cases {
		g := bob
		edit(&g)
		if g.Verify(f.commit.Room) == nil {
			t.Errorf("%s: tampered grant verified", name)
		}
		if _, err := OpenRoomKey(f.commit, f.rows(), nil, g, f.bob); !errors.Is(err, ErrUntrustedKey) {
			t.Errorf("%s: OpenRoomKey = %v", name, err)
		}
	}
	if bob.Verify("fedcba9876543210") == nil {
		t.Error("grant verified for another room")
	}
}

// TestSubstitutedKey: someone with write access to the key rows (the
// server, an operator) replaces bob's wrapped key with one of a key they
// know. Unsigned, signed by a stranger, or signed by a member for a
// different room key: all refused.
func TestSubstitutedKey(t *testing.T) {
	f := newRoom(t)
	evilKey := roomKey(t)
	w, _ := WrapRoomKey(evilKey, f.commit.Room, f.bob.SignPub())

	unsigned := Grant{Member: f.bob.SignPub(), AddedBy: f.alice.SignPub(), WrappedKey: w}
	stranger, _ := SignGrant(f.mallory, f.commit.Room, f.bob.SignPub(), w)
	// Mallory also plants a row for herself "added by alice": unsigned,
	// so it makes her no adder.
	planted := Grant{Member: f.mallory.SignPub(), AddedBy: f.alice.SignPub(), WrappedKey: w, Sig: stranger.Sig}
	byMember := f.grant(t, f.carol, f.bob.SignPub(), evilKey) // carol is legitimate, the key is not the room's

	for name, tc := range map[string]struct {
		g      Grant
		errHas string
	}{
		"unsigned":         {unsigned, "unsigned"},
		"stranger":         {stranger, "not the creator"},
		"forged adder":     {Grant{Member: f.bob.SignPub(), AddedBy: f.alice.SignPub(), WrappedKey: w, Sig: stranger.Sig}, "not signed by its adder"},
		"different key":    {byMember, "does not match the fingerprint"},
		"grant for carol":  {f.grants[f.carol.SignPub()], "not for me"},
		"planted as adder": {f.grant(t, f.mallory, f.bob.SignPub(), f.key), "not the creator"},
	} {
		rows := append(f.rows(), planted)
		_, err := OpenRoomKey(f.commit, rows, nil, tc.g, f.bob)
		if !errors.Is(err, ErrUntrustedKey) || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.errHas)
		}
	}

	// An admin the caller trusts may add members.
	admin := newID(t)
	g := f.grant(t, admin, f.bob.SignPub(), f.key)
	if _, err := OpenRoomKey(f.commit, f.rows(), nil, g, f.bob); err == nil {
		t.Error("grant by an unknown admin accepted")
	}
	if k, err := OpenRoomKey(f.commit, f.rows(), map[string]bool{admin.SignPub(): true}, g, f.bob); err != nil || string(k) != string(f.key) {
		t.Errorf("grant by a trusted admin: %v", err)
	}

	// A broken chain: carol was added by bob, but bob's row is gone (or
	// was replaced): carol's adder is no longer legitimate.
	rows := []Grant{f.grants[f.alice.SignPub()], f.grants[f.carol.SignPub()]}
	if _, err := OpenRoomKey(f.commit, rows, nil, f.grants[f.carol.SignPub()], f.carol); err == nil {
		t.Error("grant from an adder outside the chain accepted")
	}
}

func TestFingerprint(t *testing.T) {
	k := roomKey(t)
	a, _ := Fingerprint(k, room)
	b, _ := Fingerprint(k, "fedcba9876543210")
	k2 := append([]byte(nil), k...)
	k2[0] ^= 1
	c, _ := Fingerprint(k2, room)
	if len(a) != 64 || a == b || a == c {
		t.Fatalf("fingerprints %s %s %s", a, b, c)
	}
	if _, err := Fingerprint(k[:5], room); err == nil {
		t.Error("short key fingerprinted")
	}
}

func TestReplays(t *testing.T) {
	alice := newID(t)
	k := roomKey(t)
	var r Replays
	d1, _ := Seal(k, room, alice, []byte("same payload"))
	d2, _ := Seal(k, room, alice, []byte("same payload"))
	m1, _ := OpenMessage(k, room, d1)
	m2, _ := OpenMessage(k, room, d2)
	if m1.ID == m2.ID || len(m1.ID) == 0 {
		t.Fatalf("ids %q %q", m1.ID, m2.ID)
	}
	if r.Check(m1) != nil || r.Check(m2) != nil {
		t.Fatal("distinct envelopes flagged")
	}
	again, _ := OpenMessage(k, room, d1)
	if err := r.Check(again); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
}
