package identity

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fuzzID is a fixed identity: the property is about the request, not the key.
func fuzzID(tb testing.TB) *Identity {
	tb.Helper()
	id, err := FromSeed(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// Sign then verify holds; any single-byte change to the body or to one of
// the signed headers fails verification.
func FuzzVerifyRequest(f *testing.F) {
	f.Add("POST", "/v1/rooms", []byte(`{"name":"a","wrapped_key":"b"}`), int64(1_700_000_000_000), uint16(0), byte(1))
	f.Add("GET", "/v1/me", []byte(nil), int64(1), uint16(40), byte(0x80))
	f.Add("GET", "/v1/rooms/0123456789abcdef/key?x=1", []byte("x"), int64(1<<40), uint16(200), byte(0xff))
	id := fuzzID(f)
	headers := []string{HeaderKey, HeaderTimestamp, HeaderNonce, HeaderSignature, HeaderCluster, HeaderIdempotencyKey}
	f.Fuzz(func(t *testing.T, method, path string, body []byte, ms int64, at uint16, xor byte) {
		if ms <= 0 || xor == 0 {
			return
		}
		r, err := http.NewRequest(method, "https://n1.example:8470"+path, nil)
		if err != nil || r.URL == nil {
			return
		}
		r.Header.Set(HeaderCluster, "unibus")
		r.Header.Set(HeaderIdempotencyKey, "0123456789abcdef0123456789abcdef")
		if err := SignRequest(r, body, id, time.UnixMilli(ms)); err != nil {
			t.Fatalf("sign: %v", err)
		}
		sr, err := VerifyRequest(r, body)
		if err != nil {
			t.Fatalf("a freshly signed request does not verify: %v", err)
		}
		if sr.SignPub != id.SignPub() || sr.Timestamp.UnixMilli() != ms {
			t.Fatalf("verified %+v", sr)
		}
		// One byte changed: in the body, or in one header.
		total := len(body)
		for _, h := range headers {
			total += len(r.Header.Get(h))
		}
		i := int(at) % total
		if i < len(body) {
			b := bytes.Clone(body)
			b[i] ^= xor
			if _, err := VerifyRequest(r, b); err == nil {
				t.Fatalf("body byte %d changed and the request still verifies", i)
			}
			return
		}
		i -= len(body)
		for _, h := range headers {
			v := r.Header.Get(h)
			if i >= len(v) {
				i -= len(v)
				continue
			}
			b := []byte(v)
			b[i] ^= xor
			r2 := r.Clone(r.Context())
			r2.Header.Set(h, string(b))
			if got := r2.Header.Get(h); got == v || strings.ContainsAny(got, "\r\n") {
				return // the header layer normalised the change away
			}
			if _, err := VerifyRequest(r2, body); err == nil {
				t.Fatalf("%s byte %d changed (%q -> %q) and the request still verifies", h, i, v, b)
			}
			return
		}
	})
}

// Arbitrary header values never panic, and never verify without a
// signature made by the key they name.
func FuzzVerifyRequestHeaders(f *testing.F) {
	f.Add("0000000000000000000000000000000000000000000000000000000000000000", "1", "00000000000000000000000000000000", "AAAA", []byte("{}"))
	f.Add("", "", "", "", []byte(nil))
	f.Fuzz(func(t *testing.T, key, ts, nonce, sig string, body []byte) {
		r, _ := http.NewRequest("POST", "https://n1:8470/v1/rooms", nil)
		r.Header[HeaderKey] = []string{key}
		r.Header[HeaderTimestamp] = []string{ts}
		r.Header[HeaderNonce] = []string{nonce}
		r.Header[HeaderSignature] = []string{sig}
		if _, err := VerifyRequest(r, body); err == nil {
			t.Fatalf("forged headers verified: key %q ts %q nonce %q sig %q", key, ts, nonce, sig)
		}
	})
}

// ParseSignPub never panics; what it accepts round-trips through the nkey.
func FuzzParseSignPub(f *testing.F) {
	f.Add(fuzzID(f).SignPub())
	f.Add(strings.Repeat("0", 64))
	f.Add(strings.Repeat("f", 64))
	f.Add("01" + strings.Repeat("0", 62))
	f.Fuzz(func(t *testing.T, s string) {
		pub, err := ParseSignPub(s)
		if err != nil {
			// Errors show at most the first 8 bytes, quoted (a pasted
			// private key must not reach a terminal or log). Quoting can
			// stretch 8 bytes to 32 characters, so only a longer input
			// found whole is an echo.
			if len(s) > 32 && strings.Contains(err.Error(), s) {
				t.Fatalf("error echoes the input: %v", err)
			}
			return
		}
		back, err := SignPubFromNKey(NKeyFromSignPub(pub))
		if err != nil || back != strings.ToLower(s) {
			t.Fatalf("round trip %q -> %q (%v)", s, back, err)
		}
	})
}

// SignPubFromNKey never panics and never echoes its input; what it
// accepts is an nkey of the key it returns.
func FuzzSignPubFromNKey(f *testing.F) {
	id := fuzzID(f)
	f.Add(id.NKey())
	f.Add(string(id.seed))
	f.Add("U")
	f.Fuzz(func(t *testing.T, s string) {
		hexKey, err := SignPubFromNKey(s)
		if err != nil {
			if len(s) > 32 && strings.Contains(err.Error(), s) {
				t.Fatalf("error echoes the input: %v", err)
			}
			return
		}
		if len(hexKey) != 64 {
			t.Fatalf("key %q", hexKey)
		}
		pub, err := ParseSignPub(hexKey)
		if err != nil {
			return // a valid nkey of an invalid point: ParseSignPub's job to refuse
		}
		if NKeyFromSignPub(pub) != s {
			t.Fatalf("round trip %q -> %q", s, NKeyFromSignPub(pub))
		}
	})
}
