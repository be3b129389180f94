package e2e

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/unibus/clusterkit/membershipd/identity"
)

const room = "0123456789abcdef"

func newID(t testing.TB) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func roomKey(t testing.TB) []byte {
	t.Helper()
	k, err := NewRoomKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// libsodium test/default/ed25519_convert.{c,exp}.
func TestX25519LibsodiumVector(t *testing.T) {
	seed, _ := hex.DecodeString("421151a459faeade3d247115f94aedae42318124095afabe4d1451a559faedee")
	id, err := identity.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	if id.SignPub() != "b5076a8474a832daee4dd5b4040983b6623b5f344aca57d4d6ee4baf3f259e6e" {
		t.Fatalf("ed25519 pk %s", id.SignPub())
	}
	pub, err := X25519Public(id.SignPub())
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(pub); got != "f1814f0e8ff1043d8a44d25babff3cedcae6c22c3edaa48f857ae70de2baae50" {
		t.Errorf("curve25519 pk %s", got)
	}
	if got := hex.EncodeToString(X25519Private(id)); got != "8052030376d47112be7f73ed7a019293dd12ad910b654455798b4667d73de166" {
		t.Errorf("curve25519 sk %s", got)
	}
}

func TestX25519Derivation(t *testing.T) {
	for range 20 {
		a, b := newID(t), newID(t)
		privA, err := ecdh.X25519().NewPrivateKey(X25519Private(a))
		if err != nil {
			t.Fatal(err)
		}
		privB, _ := ecdh.X25519().NewPrivateKey(X25519Private(b))
		rawA, err := X25519Public(a.SignPub())
		if err != nil {
			t.Fatal(err)
		}
		rawB, _ := X25519Public(b.SignPub())
		// The public key from the sign key is the private key's public key.
		if !bytes.Equal(privA.PublicKey().Bytes(), rawA) || !bytes.Equal(privB.PublicKey().Bytes(), rawB) {
			t.Fatal("X25519Public does not match X25519Private")
		}
		pubA, _ := ecdh.X25519().NewPublicKey(rawA)
		pubB, _ := ecdh.X25519().NewPublicKey(rawB)
		ab, err := privA.ECDH(pubB)
		if err != nil {
			t.Fatal(err)
		}
		ba, _ := privB.ECDH(pubA)
		if !bytes.Equal(ab, ba) {
			t.Fatal("X25519(privA, pubB) != X25519(privB, pubA)")
		}
	}
	// The private key is clamped and a fresh copy each call.
	id := newID(t)
	k := X25519Private(id)
	if k[0]&7 != 0 || k[31]&0x80 != 0 || k[31]&0x40 == 0 {
		t.Fatalf("not clamped: %x", k)
	}
	clear(k)
	if bytes.Equal(X25519Private(id), k) {
		t.Fatal("X25519Private returned shared state")
	}
}

func TestX25519PublicRejects(t *testing.T) {
	id := newID(t)
	small := make([]byte, 32)
	small[0] = 1
	for name, in := range map[string]string{
		"upper-case":  strings.ToUpper(id.SignPub()),
		"short":       id.SignPub()[:62],
		"nkey":        id.NKey(),
		"small order": hex.EncodeToString(small),
		"empty":       "",
	} {
		if _, err := X25519Public(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestWrapUnwrap(t *testing.T) {
	alice, bob := newID(t), newID(t)
	key := roomKey(t)

	w, err := WrapRoomKey(key, room, bob.SignPub())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(w)
	if err != nil || len(raw) != 1+32+24+32+16 || raw[0] != 1 {
		t.Fatalf("wrapped format: len %d, err %v", len(raw), err)
	}
	if bytes.Contains(raw, key) {
		t.Fatal("wrapped key contains the room key")
	}
	got, err := UnwrapRoomKey(w, room, bob)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("unwrap = %x, %v", got, err)
	}
	// Fresh ephemeral key and nonce every time.
	w2, _ := WrapRoomKey(key, room, bob.SignPub())
	if w2 == w {
		t.Fatal("two wraps are identical")
	}
	if got, err := UnwrapRoomKey(w2, room, bob); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("second unwrap: %v", err)
	}

	// Another identity cannot unwrap.
	if _, err := UnwrapRoomKey(w, room, alice); err == nil || !strings.Contains(err.Error(), "cannot decrypt") {
		t.Fatalf("other identity: %v", err)
	}
	// Another room cannot unwrap.
	if _, err := UnwrapRoomKey(w, "fedcba9876543210", bob); err == nil || !strings.Contains(err.Error(), "cannot decrypt") {
		t.Fatalf("other room: %v", err)
	}
	// Every byte is covered.
	for _, i := range []int{1, 20, 33, 50, 57, 70, len(raw) - 1} {
		bad := bytes.Clone(raw)
		bad[i] ^= 0x01
		if _, err := UnwrapRoomKey(base64.StdEncoding.EncodeToString(bad), room, bob); err == nil {
			t.Errorf("flipped byte %d: accepted", i)
		}
	}
	ver := bytes.Clone(raw)
	ver[0] = 2
	for name, in := range map[string]string{
		"version":   base64.StdEncoding.EncodeToString(ver),
		"truncated": base64.StdEncoding.EncodeToString(raw[:len(raw)-1]),
		"extended":  base64.StdEncoding.EncodeToString(append(bytes.Clone(raw), 0)),
		"not b64":   "%%%",
		"empty":     "",
	} {
		if _, err := UnwrapRoomKey(in, room, bob); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A small-order ephemeral key is refused, not turned into a zero secret.
	zero := bytes.Clone(raw)
	clear(zero[1:33])
	if _, err := UnwrapRoomKey(base64.StdEncoding.EncodeToString(zero), room, bob); err == nil || !strings.Contains(err.Error(), "ephemeral") {
		t.Errorf("zero ephemeral key: %v", err)
	}
}

func TestWrapRejects(t *testing.T) {
	bob := newID(t)
	key := roomKey(t)
	if _, err := WrapRoomKey(key[:31], room, bob.SignPub()); err == nil {
		t.Error("short room key accepted")
	}
	if _, err := WrapRoomKey(key, "", bob.SignPub()); err == nil {
		t.Error("empty room accepted")
	}
	if _, err := WrapRoomKey(key, "a|b", bob.SignPub()); err == nil {
		t.Error("room with | accepted")
	}
	if _, err := WrapRoomKey(key, room, strings.ToUpper(bob.SignPub())); err == nil {
		t.Error("upper-case recipient accepted")
	}
	if _, err := WrapRoomKey(key, room, bob.NKey()); err == nil {
		t.Error("nkey recipient accepted")
	}
}

func TestSealOpen(t *testing.T) {
	alice := newID(t)
	key := roomKey(t)
	msg := []byte("the quick brown fox jumps over the lazy dog, repeatedly and at length")

	data, err := Seal(key, room, alice, msg)
	if err != nil {
		t.Fatal(err)
	}
	pt, sender, err := Open(key, room, data)
	if err != nil || !bytes.Equal(pt, msg) || sender != alice.SignPub() {
		t.Fatalf("Open = %q, %s, %v", pt, sender, err)
	}

	var env map[string]any
	if err := json.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	if env["v"] != float64(2) || env["room"] != room || env["sender"] != alice.SignPub() || len(env) != 7 {
		t.Fatalf("envelope %s", data)
	}
	ct, _ := base64.StdEncoding.DecodeString(env["ct"].(string))
	if bytes.Contains(data, msg[:16]) || bytes.Contains(ct, msg[:16]) || len(ct) != len(msg)+16 {
		t.Fatal("ciphertext reveals the plaintext")
	}
	if data2, _ := Seal(key, room, alice, msg); bytes.Equal(data, data2) {
		t.Fatal("two seals are identical")
	}

	// Empty message.
	data, _ = Seal(key, room, alice, nil)
	if pt, _, err := Open(key, room, data); err != nil || len(pt) != 0 {
		t.Fatalf("empty: %q, %v", pt, err)
	}
	// Bad inputs.
	if _, err := Seal(key[:16], room, alice, msg); err == nil {
		t.Error("short key accepted")
	}
	if _, err := Seal(key, "x|y", alice, msg); err == nil {
		t.Error("room with | accepted")
	}
}

// edit unmarshals a sealed envelope, lets f change it, and marshals it back.
func edit(t *testing.T, data []byte, f func(env map[string]any)) []byte {
	t.Helper()
	var env map[string]any
	if err := json.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	f(env)
	out, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func flipB64(t *testing.T, s any) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s.(string))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	return base64.StdEncoding.EncodeToString(b)
}

func TestOpenRejects(t *testing.T) {
	alice, bob := newID(t), newID(t)
	key, otherKey := roomKey(t), roomKey(t)
	const otherRoom = "fedcba9876543210"
	data, err := Seal(key, room, alice, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		key    []byte
		room   string
		data   []byte
		errHas string
	}{
		{"wrong room key", otherKey, room, data, "cannot decrypt"},
		{"other room", key, otherRoom, data, "another room"},
		{"room field moved", key, otherRoom, edit(t, data, func(e map[string]any) { e["room"] = otherRoom }), "bad signature"},
		{"ct", key, room, edit(t, data, func(e map[string]any) { e["ct"] = flipB64(t, e["ct"]) }), "bad signature"},
		{"ct truncated", key, room, edit(t, data, func(e map[string]any) { e["ct"] = "AAAA" }), "bad ciphertext"},
		{"nonce", key, room, edit(t, data, func(e map[string]any) { e["nonce"] = flipB64(t, e["nonce"]) }), "bad signature"},
		{"nonce length", key, room, edit(t, data, func(e map[string]any) { e["nonce"] = "AAAA" }), "bad nonce"},
		{"sig", key, room, edit(t, data, func(e map[string]any) { e["sig"] = flipB64(t, e["sig"]) }), "bad signature"},
		{"sig length", key, room, edit(t, data, func(e map[string]any) { e["sig"] = "AAAA" }), "bad signature"},
		{"sender swapped", key, room, edit(t, data, func(e map[string]any) { e["sender"] = bob.SignPub() }), "bad signature"},
		{"sender upper-case", key, room, edit(t, data, func(e map[string]any) { e["sender"] = strings.ToUpper(alice.SignPub()) }), "bad sender"},
		{"sender nkey", key, room, edit(t, data, func(e map[string]any) { e["sender"] = alice.NKey() }), "bad sender"},
		{"version", key, room, edit(t, data, func(e map[string]any) { e["v"] = 1 }), "version"},
		{"id", key, room, edit(t, data, func(e map[string]any) { e["id"] = flipB64(t, e["id"]) }), "bad signature"},
		{"id length", key, room, edit(t, data, func(e map[string]any) { e["id"] = "AAAA" }), "bad message id"},
		{"id missing", key, room, edit(t, data, func(e map[string]any) { delete(e, "id") }), "bad message id"},
		{"not json", key, room, []byte("hello"), "not a message envelope"},
		{"short key", key[:31], room, data, "room key must be 32 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pt, sender, err := Open(tc.key, tc.room, tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want %q", err, tc.errHas)
			}
			if pt != nil || sender != "" {
				t.Fatal("returned data on error")
			}
		})
	}
}

// TestForgedSender: bob is a member and holds the room key, so he can
// encrypt anything under alice's name; only the signature stops him.
func TestForgedSender(t *testing.T) {
	alice, bob := newID(t), newID(t)
	key := roomKey(t)

	// Bob builds a message claiming alice as sender, with the AEAD bound to
	// alice, and signs it with his own key.
	aead, _ := chacha20poly1305.NewX(key)
	nonce := make([]byte, 24)
	_, _ = rand.Read(nonce)
	id := make([]byte, MsgIDSize)
	ct := aead.Seal(nil, nonce, []byte("transfer everything to bob"), msgAD(room, alice.SignPub(), id))
	sig := bob.Sign(sigInput(room, alice.SignPub(), id, nonce, ct))
	forged, _ := json.Marshal(envelope{
		V: msgVersion, Room: room, Sender: alice.SignPub(),
		ID:    base64.StdEncoding.EncodeToString(id),
		Nonce: base64.StdEncoding.EncodeToString(nonce),
		Ct:    base64.StdEncoding.EncodeToString(ct),
		Sig:   base64.StdEncoding.EncodeToString(sig),
	})
	if _, _, err := Open(key, room, forged); err == nil || !strings.Contains(err.Error(), "bad signature") {
		t.Fatalf("forged sender: %v", err)
	}

	// Bob re-signs a genuine message from alice: still refused.
	genuine, _ := Seal(key, room, alice, []byte("hi"))
	resigned := edit(t, genuine, func(e map[string]any) {
		n, _ := base64.StdEncoding.DecodeString(e["nonce"].(string))
		c, _ := base64.StdEncoding.DecodeString(e["ct"].(string))
		i, _ := base64.StdEncoding.DecodeString(e["id"].(string))
		e["sig"] = base64.StdEncoding.EncodeToString(bob.Sign(sigInput(room, alice.SignPub(), i, n, c)))
	})
	if _, _, err := Open(key, room, resigned); err == nil || !strings.Contains(err.Error(), "bad signature") {
		t.Fatalf("re-signed: %v", err)
	}

	// Bob claims alice's ciphertext as his own: the signature verifies
	// (he signed it) but the AEAD is bound to alice.
	stolen := edit(t, genuine, func(e map[string]any) {
		n, _ := base64.StdEncoding.DecodeString(e["nonce"].(string))
		c, _ := base64.StdEncoding.DecodeString(e["ct"].(string))
		i, _ := base64.StdEncoding.DecodeString(e["id"].(string))
		e["sender"] = bob.SignPub()
		e["sig"] = base64.StdEncoding.EncodeToString(bob.Sign(sigInput(room, bob.SignPub(), i, n, c)))
	})
	if _, _, err := Open(key, room, stolen); err == nil || !strings.Contains(err.Error(), "cannot decrypt") {
		t.Fatalf("stolen ciphertext: %v", err)
	}

	// Bob's own messages open, under his name.
	own, _ := Seal(key, room, bob, []byte("mine"))
	if _, sender, err := Open(key, room, own); err != nil || sender != bob.SignPub() {
		t.Fatalf("own: %s, %v", sender, err)
	}
}

// TestEndToEnd: alice creates a room key, wraps it to herself and to bob;
// bob unwraps his copy and reads alice's message.
func TestEndToEnd(t *testing.T) {
	alice, bob := newID(t), newID(t)
	key := roomKey(t)
	wa, err := WrapRoomKey(key, room, alice.SignPub())
	if err != nil {
		t.Fatal(err)
	}
	wb, err := WrapRoomKey(key, room, bob.SignPub())
	if err != nil {
		t.Fatal(err)
	}
	ka, err := UnwrapRoomKey(wa, room, alice)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := Seal(ka, room, alice, []byte("welcome, bob"))
	if err != nil {
		t.Fatal(err)
	}
	kb, err := UnwrapRoomKey(wb, room, bob)
	if err != nil {
		t.Fatal(err)
	}
	pt, sender, err := Open(kb, room, msg)
	if err != nil || string(pt) != "welcome, bob" || sender != alice.SignPub() {
		t.Fatalf("Open = %q, %s, %v", pt, sender, err)
	}
}

func BenchmarkSeal256(b *testing.B) {
	id := newID(b)
	key := roomKey(b)
	msg := make([]byte, 256)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := Seal(key, room, id, msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen256(b *testing.B) {
	id := newID(b)
	key := roomKey(b)
	data, err := Seal(key, room, id, make([]byte, 256))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(256)
	for b.Loop() {
		if _, _, err := Open(key, room, data); err != nil {
			b.Fatal(err)
		}
	}
}
