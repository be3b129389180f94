package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The four headers of a signed request. The api package re-exports them;
// they live here so the client side needs only this package.
const (
	HeaderKey       = "X-Unibus-Key"       // 64-hex ed25519 sign key
	HeaderTimestamp = "X-Unibus-Timestamp" // unix milliseconds
	HeaderNonce     = "X-Unibus-Nonce"     // 32 hex chars, random per request
	HeaderSignature = "X-Unibus-Signature" // base64 ed25519 signature
	// HeaderCluster names the cluster the request is for; the caller sets
	// it before signing and a node of another cluster refuses it (401).
	HeaderCluster = "X-Unibus-Cluster"
	// HeaderIdempotencyKey (set by the caller before signing; required on
	// mutating requests) makes a retry return the first attempt's result.
	HeaderIdempotencyKey = "X-Unibus-Idempotency-Key"
)

// Signed control-plane requests.
//
// Every /v1 request carries five headers (HeaderKey, HeaderTimestamp,
// HeaderNonce, HeaderSignature, HeaderCluster), mutating ones a sixth
// (HeaderIdempotencyKey). The signature is ed25519 over the canonical
// string
//
//	"UNIBUS-SIG-V2\n" +
//	cluster + "\n" +             // X-Unibus-Cluster: the cluster's name
//	METHOD + "\n" +              // r.Method as sent, e.g. "POST"
//	path + "\n" +                // r.URL.RequestURI(): escaped path plus "?query"
//	timestamp + "\n" +           // X-Unibus-Timestamp: unix ms, decimal
//	nonce + "\n" +               // X-Unibus-Nonce: 32 lower-case hex (16 random bytes)
//	idempotencyKey + "\n" +      // X-Unibus-Idempotency-Key, or empty
//	hex(sha256(body))            // lower-case hex; the empty body hashes too
//
// and is sent as base64.StdEncoding in X-Unibus-Signature. X-Unibus-Key is
// the signer's 64 lower-case hex ed25519 public key. The key itself is not in
// the canonical string: a signature only verifies under the key that made it,
// and VerifyRequest accepts only the canonical (lower-case) spelling, so one
// key has exactly one header value.
//
// VerifyRequest checks format and signature only. Freshness (api.Window
// (membershipd/api)), the cluster name, nonce replay and idempotency are
// the server's job.

const sigPrefix = "UNIBUS-SIG-V2\n"

const (
	nonceBytes = 16
	nonceHex   = 2 * nonceBytes
)

// SignedRequest is what a verified request's headers say.
type SignedRequest struct {
	SignPub   string    // 64 lower-case hex
	Timestamp time.Time // from the signed unix-ms timestamp
	Nonce     string    // 32 lower-case hex
	Cluster   string    // the cluster the request was signed for
	// IdempotencyKey is empty when the request carries none.
	IdempotencyKey string
}

// NewIdempotencyKey is a fresh random key (32 lower-case hex): one per
// logical operation, reused by every retry of it.
func NewIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SignRequest signs r for id at time now and sets the signature headers,
// replacing any already there. The caller sets HeaderCluster (and, on a
// mutating request, HeaderIdempotencyKey) first: both are signed. body must
// be exactly the bytes that will be sent as r's body (nil or empty for
// none); r.Body is not read or changed.
func SignRequest(r *http.Request, body []byte, id *Identity, now time.Time) error {
	if r == nil || r.URL == nil {
		return errors.New("sign request: no request URL")
	}
	if id == nil {
		return errors.New("sign request: no identity")
	}
	var nb [nonceBytes]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return fmt.Errorf("sign request: nonce: %w", err)
	}
	nonce := hex.EncodeToString(nb[:])
	ts := strconv.FormatInt(now.UnixMilli(), 10)
	cluster, idem := r.Header.Get(HeaderCluster), r.Header.Get(HeaderIdempotencyKey)
	if !isToken(cluster) {
		return fmt.Errorf("sign request: %s %q: want 1-64 of A-Z a-z 0-9 . _ -", HeaderCluster, cluster)
	}
	if idem != "" && !isToken(idem) {
		return fmt.Errorf("sign request: %s: want 1-64 of A-Z a-z 0-9 . _ -", HeaderIdempotencyKey)
	}
	msg := canonical(cluster, method(r), r.URL.RequestURI(), ts, nonce, idem, body)
	r.Header.Set(HeaderKey, id.SignPub())
	r.Header.Set(HeaderTimestamp, ts)
	r.Header.Set(HeaderNonce, nonce)
	r.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(id.Sign(msg)))
	return nil
}

// Errors from VerifyRequest. They name no secret and echo no input, so a
// server may return them to the client as they are.
var (
	errBadKey       = errors.New("bad " + HeaderKey)
	errBadTimestamp = errors.New("bad timestamp")
	errBadNonce     = errors.New("bad nonce")
	errBadSignature = errors.New("bad signature")
	errBadCluster   = errors.New("bad " + HeaderCluster)
	errBadIdemKey   = errors.New("bad " + HeaderIdempotencyKey)
)

// VerifyRequest parses r's signature headers and verifies the signature
// over r's method, r.URL.RequestURI() and body (the bytes actually read
// from r.Body). It does not check that the timestamp is recent or that the
// nonce is new. Its errors are short and safe to send to the client.
func VerifyRequest(r *http.Request, body []byte) (SignedRequest, error) {
	if r == nil || r.URL == nil {
		return SignedRequest{}, errors.New("bad request")
	}
	var vals [4]string
	for i, name := range []string{HeaderKey, HeaderTimestamp, HeaderNonce, HeaderSignature} {
		v, err := header(r.Header, name)
		if err != nil {
			return SignedRequest{}, err
		}
		vals[i] = v
	}
	keyHex, ts, nonce, sigB64 := vals[0], vals[1], vals[2], vals[3]
	cluster, err := header(r.Header, HeaderCluster)
	if err != nil {
		return SignedRequest{}, err
	}
	if !isToken(cluster) {
		return SignedRequest{}, errBadCluster
	}
	var idem string
	if vs := r.Header.Values(HeaderIdempotencyKey); len(vs) > 0 {
		if idem, err = header(r.Header, HeaderIdempotencyKey); err != nil {
			return SignedRequest{}, err
		}
		if !isToken(idem) {
			return SignedRequest{}, errBadIdemKey
		}
	}

	pub, err := ParseSignPub(keyHex)
	if err != nil || hex.EncodeToString(pub) != keyHex {
		// Upper-case hex names the same key; only one spelling is allowed.
		return SignedRequest{}, errBadKey
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || ms <= 0 || strconv.FormatInt(ms, 10) != ts {
		return SignedRequest{}, errBadTimestamp
	}
	if !isLowerHex(nonce, nonceHex) {
		return SignedRequest{}, errBadNonce
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(sigB64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return SignedRequest{}, errBadSignature
	}
	msg := canonical(cluster, method(r), r.URL.RequestURI(), ts, nonce, idem, body)
	if !ed25519.Verify(pub, msg, sig) {
		return SignedRequest{}, errBadSignature
	}
	return SignedRequest{SignPub: keyHex, Timestamp: time.UnixMilli(ms), Nonce: nonce, Cluster: cluster, IdempotencyKey: idem}, nil
}

// canonical builds the signed string documented above.
func canonical(cluster, method, path, ts, nonce, idem string, body []byte) []byte {
	sum := sha256.Sum256(body)
	var b strings.Builder
	b.Grow(len(sigPrefix) + len(cluster) + len(method) + len(path) + len(ts) + len(nonce) + len(idem) + 2*len(sum) + 6)
	b.WriteString(sigPrefix)
	b.WriteString(cluster)
	b.WriteByte('\n')
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(path)
	b.WriteByte('\n')
	b.WriteString(ts)
	b.WriteByte('\n')
	b.WriteString(nonce)
	b.WriteByte('\n')
	b.WriteString(idem)
	b.WriteByte('\n')
	b.WriteString(hex.EncodeToString(sum[:]))
	return []byte(b.String())
}

// method is r's method; a client request's empty method means GET.
func method(r *http.Request) string {
	if r.Method == "" {
		return http.MethodGet
	}
	return r.Method
}

// header returns the single non-empty value of name. A repeated header is
// refused: proxies and handlers may disagree on which copy counts.
func header(h http.Header, name string) (string, error) {
	vs := h.Values(name)
	switch {
	case len(vs) == 0 || (len(vs) == 1 && vs[0] == ""):
		return "", errors.New("missing " + name)
	case len(vs) > 1:
		return "", errors.New("duplicate " + name)
	}
	return vs[0], nil
}

// isLowerHex reports whether s is exactly n lower-case hex characters.
func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// isToken reports whether s is 1-64 characters of A-Z a-z 0-9 . _ - (a
// cluster name or an idempotency key: no separator of the canonical string).
func isToken(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
