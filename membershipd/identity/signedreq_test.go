package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testCluster = "unibus-test"

func signedReq(t *testing.T, id *Identity, method, url string, body []byte, now time.Time) *http.Request {
	t.Helper()
	r := httptest.NewRequest(method, url, bytes.NewReader(body))
	r.Header.Set(HeaderCluster, testCluster)
	if method == http.MethodPost {
		r.Header.Set(HeaderIdempotencyKey, "idem-1")
	}
	if err := SignRequest(r, body, id, now); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSignVerifyRoundTrip(t *testing.T) {
	id, _ := Generate()
	now := time.UnixMilli(1_700_000_000_123)
	body := []byte(`{"name":"ops"}`)
	r := signedReq(t, id, http.MethodPost, "/v1/rooms?x=1&y=a+b", body, now)

	if got := r.Header.Get(HeaderKey); got != id.SignPub() {
		t.Fatalf("key header %q", got)
	}
	if got := r.Header.Get(HeaderTimestamp); got != "1700000000123" {
		t.Fatalf("timestamp header %q", got)
	}
	if n := r.Header.Get(HeaderNonce); !isLowerHex(n, 32) {
		t.Fatalf("nonce header %q", n)
	}
	// The signature is over the documented canonical string.
	sum := sha256.Sum256(body)
	want := "UNIBUS-SIG-V2\nunibus-test\nPOST\n/v1/rooms?x=1&y=a+b\n1700000000123\n" + r.Header.Get(HeaderNonce) + "\nidem-1\n" +
		hex.EncodeToString(sum[:])
	sig, _ := base64.StdEncoding.DecodeString(r.Header.Get(HeaderSignature))
	pub, _ := ParseSignPub(id.SignPub())
	if !ed25519.Verify(pub, []byte(want), sig) {
		t.Fatal("signature is not over the documented canonical string")
	}

	got, err := VerifyRequest(r, body)
	if err != nil {
		t.Fatal(err)
	}
	if got.SignPub != id.SignPub() || !got.Timestamp.Equal(now) || got.Nonce != r.Header.Get(HeaderNonce) ||
		got.Cluster != testCluster || got.IdempotencyKey != "idem-1" {
		t.Fatalf("VerifyRequest = %+v", got)
	}

	// Two signatures of the same request use different nonces.
	r2 := signedReq(t, id, http.MethodPost, "/v1/rooms?x=1&y=a+b", body, now)
	if r2.Header.Get(HeaderNonce) == r.Header.Get(HeaderNonce) {
		t.Fatal("nonce repeated")
	}

	// GET with no body: nil and empty hash alike.
	r3 := signedReq(t, id, http.MethodGet, "/v1/me", nil, now)
	if _, err := VerifyRequest(r3, []byte{}); err != nil {
		t.Fatalf("GET: %v", err)
	}
	// A client request's empty method is GET.
	r4 := httptest.NewRequest(http.MethodGet, "/v1/me", nil)
	r4.Method = ""
	r4.Header.Set(HeaderCluster, testCluster)
	if err := SignRequest(r4, nil, id, now); err != nil {
		t.Fatal(err)
	}
	r4.Method = http.MethodGet
	if _, err := VerifyRequest(r4, nil); err != nil {
		t.Fatalf("empty method: %v", err)
	}
}

// TestSignVerifyOverHTTP signs a client request and verifies it in a real
// server, so the client's and the server's RequestURI agree, escapes
// included.
func TestSignVerifyOverHTTP(t *testing.T) {
	id, _ := Generate()
	var verr error
	var seen SignedRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen, verr = VerifyRequest(r, body)
	}))
	defer srv.Close()

	for _, path := range []string{
		"/v1/me",
		"/v1/rooms/0123456789abcdef/members",
		"/v1/rooms/a%2Fb/key?x=%20y&z=1",
		"/v1/rooms?q=caf%C3%A9&empty=",
		"/",
	} {
		body := []byte(`{"sign_pub":"x"}`)
		req, err := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(HeaderCluster, testCluster)
		if err := SignRequest(req, body, id, time.Now()); err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if verr != nil || seen.SignPub != id.SignPub() {
			t.Errorf("%s: server verify: %v", path, verr)
		}
	}
}

func TestVerifyRejectsTampering(t *testing.T) {
	id, _ := Generate()
	other, _ := Generate()
	now := time.Now()
	body := []byte(`{"sign_pub":"abc","wrapped_key":"k"}`)
	const url = "/v1/rooms/0123456789abcdef/members?a=1"

	tests := []struct {
		name   string
		mutate func(r *http.Request) []byte // returns the body to verify
		errHas string
	}{
		{"method", func(r *http.Request) []byte { r.Method = http.MethodPut; return body }, "bad signature"},
		{"path", func(r *http.Request) []byte { r.URL.Path = "/v1/rooms/0123456789abcdee/members"; return body }, "bad signature"},
		{"query", func(r *http.Request) []byte { r.URL.RawQuery = "a=2"; return body }, "bad signature"},
		{"query dropped", func(r *http.Request) []byte { r.URL.RawQuery = ""; return body }, "bad signature"},
		{"body", func(r *http.Request) []byte { return append(bytes.Clone(body), ' ') }, "bad signature"},
		{"empty body", func(r *http.Request) []byte { return nil }, "bad signature"},
		{"another cluster", func(r *http.Request) []byte { r.Header.Set(HeaderCluster, "other"); return body }, "bad signature"},
		{"cluster with a newline", func(r *http.Request) []byte { r.Header.Set(HeaderCluster, "a\nb"); return body }, "bad X-Unibus-Cluster"},
		{"idempotency key", func(r *http.Request) []byte { r.Header.Set(HeaderIdempotencyKey, "idem-2"); return body }, "bad signature"},
		{"idempotency key dropped", func(r *http.Request) []byte { r.Header.Del(HeaderIdempotencyKey); return body }, "bad signature"},
		{"idempotency key bad", func(r *http.Request) []byte { r.Header.Set(HeaderIdempotencyKey, "a b"); return body }, "bad X-Unibus-Idempotency-Key"},
		{"timestamp", func(r *http.Request) []byte {
			ms, _ := strconv.ParseInt(r.Header.Get(HeaderTimestamp), 10, 64)
			r.Header.Set(HeaderTimestamp, strconv.FormatInt(ms+1, 10))
			return body
		}, "bad signature"},
		{"nonce", func(r *http.Request) []byte {
			n := []byte(r.Header.Get(HeaderNonce))
			n[0] = "01"[boolInt(n[0] == '0')]
			r.Header.Set(HeaderNonce, string(n))
			return body
		}, "bad signature"},
		{"key swapped", func(r *http.Request) []byte { r.Header.Set(HeaderKey, other.SignPub()); return body }, "bad signature"},
		{"signed by another key", func(r *http.Request) []byte {
			key := r.Header.Get(HeaderKey)
			_ = SignRequest(r, body, other, now)
			r.Header.Set(HeaderKey, key) // claims to be id
			return body
		}, "bad signature"},
		{"signature bit flip", func(r *http.Request) []byte {
			sig, _ := base64.StdEncoding.DecodeString(r.Header.Get(HeaderSignature))
			sig[10] ^= 1
			r.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(sig))
			return body
		}, "bad signature"},
		{"signature short", func(r *http.Request) []byte {
			r.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(make([]byte, 63)))
			return body
		}, "bad signature"},
		{"signature not base64", func(r *http.Request) []byte { r.Header.Set(HeaderSignature, "!!!"); return body }, "bad signature"},
		{"signature unpadded", func(r *http.Request) []byte {
			r.Header.Set(HeaderSignature, strings.TrimRight(r.Header.Get(HeaderSignature), "="))
			return body
		}, "bad signature"},

		{"key upper-case", func(r *http.Request) []byte {
			r.Header.Set(HeaderKey, strings.ToUpper(id.SignPub()))
			return body
		}, "bad X-Unibus-Key"},
		{"key non-canonical point", func(r *http.Request) []byte {
			nc := bytes.Repeat([]byte{0xff}, 32)
			nc[31] = 0x7f // y >= p
			r.Header.Set(HeaderKey, hex.EncodeToString(nc))
			return body
		}, "bad X-Unibus-Key"},
		{"key small order", func(r *http.Request) []byte {
			idPt := make([]byte, 32)
			idPt[0] = 1
			r.Header.Set(HeaderKey, hex.EncodeToString(idPt))
			return body
		}, "bad X-Unibus-Key"},
		{"key short", func(r *http.Request) []byte { r.Header.Set(HeaderKey, id.SignPub()[:63]); return body }, "bad X-Unibus-Key"},
		{"key nkey", func(r *http.Request) []byte { r.Header.Set(HeaderKey, id.NKey()); return body }, "bad X-Unibus-Key"},

		{"timestamp leading zero", func(r *http.Request) []byte {
			r.Header.Set(HeaderTimestamp, "0"+r.Header.Get(HeaderTimestamp))
			return body
		}, "bad timestamp"},
		{"timestamp plus", func(r *http.Request) []byte {
			r.Header.Set(HeaderTimestamp, "+"+r.Header.Get(HeaderTimestamp))
			return body
		}, "bad timestamp"},
		{"timestamp negative", func(r *http.Request) []byte { r.Header.Set(HeaderTimestamp, "-5"); return body }, "bad timestamp"},
		{"timestamp zero", func(r *http.Request) []byte { r.Header.Set(HeaderTimestamp, "0"); return body }, "bad timestamp"},
		{"timestamp seconds float", func(r *http.Request) []byte { r.Header.Set(HeaderTimestamp, "1700000000.5"); return body }, "bad timestamp"},
		{"timestamp overflow", func(r *http.Request) []byte { r.Header.Set(HeaderTimestamp, "99999999999999999999"); return body }, "bad timestamp"},

		{"nonce upper-case", func(r *http.Request) []byte {
			r.Header.Set(HeaderNonce, strings.ToUpper(r.Header.Get(HeaderNonce)))
			return body
		}, "bad nonce"},
		{"nonce short", func(r *http.Request) []byte { r.Header.Set(HeaderNonce, "abcd"); return body }, "bad nonce"},
		{"nonce non-hex", func(r *http.Request) []byte { r.Header.Set(HeaderNonce, strings.Repeat("g", 32)); return body }, "bad nonce"},

		{"duplicate nonce header", func(r *http.Request) []byte {
			r.Header.Add(HeaderNonce, r.Header.Get(HeaderNonce))
			return body
		}, "duplicate X-Unibus-Nonce"},
	}
	for _, h := range []string{HeaderKey, HeaderTimestamp, HeaderNonce, HeaderSignature, HeaderCluster} {
		tests = append(tests, struct {
			name   string
			mutate func(r *http.Request) []byte
			errHas string
		}{"missing " + h, func(r *http.Request) []byte { r.Header.Del(h); return body }, "missing " + h})
		tests = append(tests, struct {
			name   string
			mutate func(r *http.Request) []byte
			errHas string
		}{"empty " + h, func(r *http.Request) []byte { r.Header.Set(h, ""); return body }, "missing " + h})
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := signedReq(t, id, http.MethodPost, url, body, now)
			if _, err := VerifyRequest(r, body); err != nil {
				t.Fatalf("untampered request: %v", err)
			}
			b := tc.mutate(r)
			_, err := VerifyRequest(r, b)
			if err == nil || err.Error() != tc.errHas {
				t.Fatalf("err = %v, want %q", err, tc.errHas)
			}
		})
	}
}

func TestVerifyErrorsEchoNothing(t *testing.T) {
	id, _ := Generate()
	r := signedReq(t, id, http.MethodGet, "/v1/me", nil, time.Now())
	secret := hex.EncodeToString(id.Ed25519PrivateKey().Seed())
	r.Header.Set(HeaderKey, secret)
	_, err := VerifyRequest(r, nil)
	if err == nil || strings.Contains(err.Error(), secret[:8]) {
		t.Fatalf("err = %v", err)
	}
}

func TestEd25519PrivateKeyIsACopy(t *testing.T) {
	id, _ := Generate()
	k := id.Ed25519PrivateKey()
	if hex.EncodeToString(k.Public().(ed25519.PublicKey)) != id.SignPub() {
		t.Fatal("private key does not match SignPub")
	}
	clear(k)
	if !bytes.Equal(id.Ed25519PrivateKey().Public().(ed25519.PublicKey), id.pub()) {
		t.Fatal("Ed25519PrivateKey exposes internal state")
	}
	msg := []byte("m")
	if !ed25519.Verify(id.pub(), msg, id.Sign(msg)) {
		t.Fatal("identity broken after clearing the copy")
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
