package e2e

import (
	"bytes"
	"testing"

	"github.com/unibus/clusterkit/membershipd/identity"
)

const fuzzRoom = "0123456789abcdef"

func fuzzIdentity(tb testing.TB, b byte) *identity.Identity {
	tb.Helper()
	id, err := identity.FromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// Open never panics on arbitrary envelopes; a sealed message opens, and no
// single-byte change of it opens to anything.
func FuzzOpen(f *testing.F) {
	key := bytes.Repeat([]byte{3}, RoomKeySize)
	sender := fuzzIdentity(f, 9)
	sealed, err := Seal(key, fuzzRoom, sender, []byte("hello"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed, []byte("hello"), uint16(0), byte(1))
	f.Add([]byte(`{"v":1}`), []byte(""), uint16(7), byte(0x20))
	f.Add([]byte("not json"), []byte{0, 1, 2}, uint16(3), byte(0xff))
	f.Fuzz(func(t *testing.T, data, plaintext []byte, at uint16, xor byte) {
		_, _, _ = Open(key, fuzzRoom, data) // must not panic
		checkDecode(t, data)                // the envelope codec decodes as encoding/json does
		env, err := Seal(key, fuzzRoom, sender, plaintext)
		if err != nil {
			t.Fatalf("seal: %v", err)
		}
		pt, who, err := Open(key, fuzzRoom, env)
		if err != nil || !bytes.Equal(pt, plaintext) || who != sender.SignPub() {
			t.Fatalf("round trip: %q from %s (%v)", pt, who, err)
		}
		if xor == 0 {
			return
		}
		mut := bytes.Clone(env)
		mut[int(at)%len(mut)] ^= xor
		if pt2, _, err := Open(key, fuzzRoom, mut); err == nil && !bytes.Equal(pt2, plaintext) {
			t.Fatalf("a changed envelope opened to %q", pt2)
		}
	})
}

// UnwrapRoomKey never panics; a wrapped key unwraps for its recipient only
// and for its room only.
func FuzzUnwrapRoomKey(f *testing.F) {
	alice, bob := fuzzIdentity(f, 1), fuzzIdentity(f, 2)
	key := bytes.Repeat([]byte{5}, RoomKeySize)
	w, err := WrapRoomKey(key, fuzzRoom, alice.SignPub())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(w, fuzzRoom)
	f.Add("", fuzzRoom)
	f.Add("AQ==", "x")
	f.Fuzz(func(t *testing.T, wrapped, room string) {
		got, err := UnwrapRoomKey(wrapped, room, bob)
		if err == nil && len(got) != RoomKeySize {
			t.Fatalf("unwrapped a %d-byte key", len(got))
		}
		if wrapped == w && err == nil {
			t.Fatal("bob unwrapped alice's key")
		}
		if got, err := UnwrapRoomKey(wrapped, room, alice); wrapped == w && err == nil && room != fuzzRoom {
			t.Fatalf("alice's key unwrapped for room %q: %x", room, got)
		}
	})
}
