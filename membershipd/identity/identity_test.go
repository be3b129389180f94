package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"filippo.io/edwards25519"
	"github.com/nats-io/nkeys"
)

func TestRoundTrip(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	id, err := FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	wantPub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	if got := id.SignPub(); got != hex.EncodeToString(wantPub) {
		t.Fatalf("SignPub = %s, want %x", got, wantPub)
	}
	if !strings.HasPrefix(id.NKey(), "U") || !nkeys.IsValidPublicUserKey(id.NKey()) {
		t.Fatalf("NKey %q is not a user nkey", id.NKey())
	}
	if got := NKeyFromSignPub(wantPub); got != id.NKey() {
		t.Fatalf("NKeyFromSignPub = %s, want %s", got, id.NKey())
	}
	back, err := SignPubFromNKey(id.NKey())
	if err != nil || back != id.SignPub() {
		t.Fatalf("SignPubFromNKey = %q, %v; want %s", back, err, id.SignPub())
	}
	// The seed text is what nkeys itself makes from the raw seed.
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, seed)
	if err != nil {
		t.Fatal(err)
	}
	wantSeed, _ := kp.Seed()
	if !bytes.Equal(id.Seed(), wantSeed) || !bytes.HasPrefix(id.Seed(), []byte("SU")) {
		t.Fatalf("Seed mismatch")
	}
	again, err := fromSeedText(id.Seed())
	if err != nil || again.SignPub() != id.SignPub() {
		t.Fatalf("seed text round trip: %v", err)
	}
	// Seed returns a copy.
	s := id.Seed()
	clear(s)
	if !bytes.Equal(id.Seed(), wantSeed) {
		t.Fatal("Seed exposes internal state")
	}
	if strings.Contains(id.String()+id.GoString(), string(wantSeed)) {
		t.Fatal("String leaks the seed")
	}
}

func TestNonceSignatureVerifiesWithNKey(t *testing.T) {
	id, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("server-nonce-1234")
	sig, err := id.KeyPair().Sign(nonce)
	if err != nil {
		t.Fatal(err)
	}
	// What the server does: verify with the public nkey the client presents.
	pub, err := nkeys.FromPublicKey(id.NKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Verify(nonce, sig); err != nil {
		t.Fatalf("nonce signature does not verify: %v", err)
	}
	if err := pub.Verify([]byte("other"), sig); err == nil {
		t.Fatal("signature verified for a different nonce")
	}
	raw, _ := ParseSignPub(id.SignPub())
	if !ed25519.Verify(raw, nonce, id.Sign(nonce)) {
		t.Fatal("Sign does not verify against SignPub")
	}
	kpPub, _ := id.KeyPair().PublicKey()
	if kpPub != id.NKey() {
		t.Fatalf("KeyPair public %s != NKey %s", kpPub, id.NKey())
	}
}

func TestSignPubFromNKeyRejects(t *testing.T) {
	id, _ := Generate()
	acct, _ := nkeys.CreateAccount()
	apub, _ := acct.PublicKey()
	for name, in := range map[string]string{
		"seed":    string(id.Seed()),
		"account": apub,
		"garbage": "Uxyz",
		"empty":   "",
	} {
		_, err := SignPubFromNKey(in)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if name == "seed" && strings.Contains(err.Error(), in) {
			t.Errorf("error echoes the seed")
		}
	}
}

func TestParseSignPub(t *testing.T) {
	valid, _ := Generate()
	upper := strings.ToUpper(valid.SignPub())

	offCurve := make([]byte, 32)
	offCurve[0] = 2 // y = 2 has no x on the curve
	if _, err := new(edwards25519.Point).SetBytes(offCurve); err == nil {
		t.Fatal("test vector: y=2 should not decode")
	}
	nonCanonical := bytes.Repeat([]byte{0xff}, 32)
	nonCanonical[31] = 0x7f // y = 2^255-1 >= p; the library reduces it (to 18)
	if _, err := new(edwards25519.Point).SetBytes(nonCanonical); err != nil {
		t.Fatalf("test vector: library should accept the non-canonical form: %v", err)
	}
	identityPt := make([]byte, 32)
	identityPt[0] = 1 // the neutral element: small order
	negZero := bytes.Clone(identityPt)
	negZero[31] = 0x80

	tests := []struct {
		name, in, errHas string
	}{
		{"valid", valid.SignPub(), ""},
		{"upper-case hex", upper, ""},
		{"63 chars", valid.SignPub()[:63], "want 64 hex characters, got 63"},
		{"65 chars", valid.SignPub() + "0", "want 64 hex characters, got 65"},
		{"empty", "", "got 0"},
		{"non-hex", "zz" + valid.SignPub()[2:], "hex"},
		{"off curve", hex.EncodeToString(offCurve), "not a valid ed25519 public key"},
		{"y >= p", hex.EncodeToString(nonCanonical), "not a valid ed25519 public key"},
		{"identity point", hex.EncodeToString(identityPt), "not a valid ed25519 public key"},
		{"negative zero", hex.EncodeToString(negZero), "not a valid ed25519 public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := ParseSignPub(tc.in)
			if tc.errHas == "" {
				if err != nil {
					t.Fatal(err)
				}
				if hex.EncodeToString(pub) != valid.SignPub() {
					t.Fatalf("got %x", pub)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.errHas)
			}
		})
	}

	// A private key pasted by mistake is not echoed.
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	for _, secret := range []string{hex.EncodeToString(priv), hex.EncodeToString(priv.Seed())} {
		if _, err := ParseSignPub(secret); err != nil && strings.Contains(err.Error(), secret[8:24]) {
			t.Fatalf("error echoes secret material: %v", err)
		}
	}
}

func TestParseRoleAndHandle(t *testing.T) {
	for _, s := range []string{"admin", "member"} {
		if r, err := ParseRole(s); err != nil || string(r) != s {
			t.Errorf("ParseRole(%q) = %q, %v", s, r, err)
		}
	}
	if _, err := ParseRole("Admin"); err == nil || err.Error() != `unknown role "Admin" (want admin or member)` {
		t.Errorf("ParseRole(Admin) err = %v", err)
	}
	for _, h := range []string{"a", "alice", "0day", "a.b_c-d", strings.Repeat("x", 32)} {
		if err := ValidateHandle(h); err != nil {
			t.Errorf("ValidateHandle(%q) = %v", h, err)
		}
	}
	for h, want := range map[string]string{
		"":                      "1-32 characters",
		strings.Repeat("x", 33): "1-32 characters",
		"Alice":                 "must start",
		"-bob":                  "must start",
		".bob":                  "must start",
		"bo b":                  "not allowed",
		"bob/x":                 "not allowed",
		"bÖb":                   "not allowed",
	} {
		if err := ValidateHandle(h); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateHandle(%q) = %v, want %q", h, err, want)
		}
	}
}

func TestFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets") // missing parent is created
	path := filepath.Join(dir, "user.id")
	id, _ := Generate()

	if err := WriteFile(path, id); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v", st.Mode(), err)
	}
	if dst, _ := os.Stat(dir); dst.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", dst.Mode())
	}
	data, _ := os.ReadFile(path)
	if string(data) != string(id.Seed())+"\n" {
		t.Fatal("file is not the seed text plus newline")
	}
	// The nats CLI's parser reads the same file.
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := kp.PublicKey(); pub != id.NKey() {
		t.Fatal("nats parser sees a different key")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temp file left behind: %v", entries)
	}

	got, err := LoadFile(path)
	if err != nil || got.SignPub() != id.SignPub() {
		t.Fatalf("LoadFile = %v, %v", got, err)
	}

	// No overwrite.
	other, _ := Generate()
	if err := WriteFile(path, other); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrite err = %v", err)
	}
	if got, _ := LoadFile(path); got.SignPub() != id.SignPub() {
		t.Fatal("file was overwritten")
	}

	// Permissions.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFile(path)
	want := "identity file " + path + " is readable by others (mode 0644); chmod 600 it"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
	_ = os.Chmod(path, 0o640)
	if _, err := LoadFile(path); err == nil {
		t.Fatal("group-readable file accepted")
	}

	// Missing.
	missing := filepath.Join(dir, "nope")
	_, err = LoadFile(missing)
	if err == nil || err.Error() != "identity file "+missing+": no such file or directory" || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing err = %v", err)
	}

	// Garbage, including a non-user seed; the content is not echoed.
	acct, _ := nkeys.CreateAccount()
	aseed, _ := acct.Seed()
	for i, content := range []string{"hello\n", "", string(aseed) + "\n", "SUAAAA\n"} {
		p := filepath.Join(dir, "bad"+string(rune('0'+i)))
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadFile(p)
		if err == nil || err.Error() != "identity file "+p+": not an nkey user seed" {
			t.Fatalf("garbage %d err = %v", i, err)
		}
	}
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "id")
	id, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first: created=%v err=%v", created, err)
	}
	again, created, err := LoadOrCreate(path)
	if err != nil || created || again.SignPub() != id.SignPub() {
		t.Fatalf("second: created=%v err=%v", created, err)
	}

	// Concurrent creators agree on one identity.
	path = filepath.Join(t.TempDir(), "race.id")
	var wg sync.WaitGroup
	keys := make([]string, 8)
	var nCreated int
	var mu sync.Mutex
	for i := range keys {
		wg.Go(func() {
			id, c, err := LoadOrCreate(path)
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = id.SignPub()
			if c {
				mu.Lock()
				nCreated++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if nCreated != 1 {
		t.Fatalf("%d creators", nCreated)
	}
	for _, k := range keys {
		if k != keys[0] {
			t.Fatal("concurrent LoadOrCreate returned different identities")
		}
	}

	// An unreadable-by-policy file is an error, not a reason to replace it.
	_ = os.Chmod(path, 0o644)
	if _, _, err := LoadOrCreate(path); err == nil {
		t.Fatal("LoadOrCreate accepted a 0644 file")
	}
}
