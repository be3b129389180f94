package e2e

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// The hand-written envelope codec writes encoding/json's bytes and reads
// encoding/json's values, for envelopes of Seal's shape and any others.
func TestEnvelopeCodecMatchesJSON(t *testing.T) {
	sealed, err := Seal(bytes.Repeat([]byte{3}, RoomKeySize), fuzzRoom, fuzzIdentity(t, 9), []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	var env envelope
	if err := json.Unmarshal(sealed, &env); err != nil {
		t.Fatalf("Seal's output is not the envelope JSON: %v", err)
	}
	if !fastEnvelope(sealed, &envelope{}) {
		t.Fatal("Seal's output does not take the fast path")
	}
	for _, e := range []envelope{
		env,
		{V: 2, Room: `a"b`, Sender: "x", ID: "<&>", Nonce: "\\", Ct: "é", Sig: "\n"}, // escapes: encoding/json writes them
		{V: -1, Room: "r"},
		{V: 12345, Room: "r", Sig: "+/=="},
	} {
		want, _ := json.Marshal(e)
		got, err := marshalEnvelope(e)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("marshalEnvelope(%+v) = %s, %v; encoding/json: %s", e, got, err, want)
		}
		checkDecode(t, got)
	}
	for _, in := range []string{
		string(sealed),
		strings.Replace(string(sealed), `"room"`, `"ROOM"`, 1),               // encoding/json matches keys case-insensitively
		strings.Replace(string(sealed), `"v":2`, `"v":2 `, 1),                // whitespace
		strings.Replace(string(sealed), `"v":2`, `"v":23`, 1),                // two digits
		strings.Replace(string(sealed), `"}`, `","v":1}`, 1),                 // duplicate key: the last wins
		strings.Replace(string(sealed), `"sender":"`, `"sender":"\u0041`, 1), // escape
		string(sealed) + " ",
		string(sealed) + "x",
		`{"v":2,"room":"r","sender":"s","id":"i","nonce":"n","ct":"c","sig":"s"}`,
		`{"v":2,"room":"r","sender":"s","id":"i","nonce":"n","ct":"c","sig":"s"`,
		`{"v":2,"room":"r` + "\x01" + `","sender":"s","id":"i","nonce":"n","ct":"c","sig":"s"}`,
		`{"v":2,"room":"r` + "\xff" + `","sender":"s","id":"i","nonce":"n","ct":"c","sig":"s"}`,
		`{"v":x}`, `{"v":`, `{}`, ``, `null`,
	} {
		checkDecode(t, []byte(in))
	}
}

// checkDecode holds unmarshalEnvelope to json.Unmarshal's result.
func checkDecode(t *testing.T, data []byte) {
	t.Helper()
	var want, got envelope
	werr := json.Unmarshal(data, &want)
	gerr := unmarshalEnvelope(data, &got)
	if (werr == nil) != (gerr == nil) || got != want {
		t.Errorf("decode %q: %+v (%v); encoding/json: %+v (%v)", data, got, gerr, want, werr)
	}
}

// A sender key that fails the check fails every time (only good keys are
// remembered), and a good key in upper case is refused even once its
// lower-case spelling is cached.
func TestSenderKeyCache(t *testing.T) {
	good := fuzzIdentity(t, 4).SignPub()
	for range 2 {
		if _, err := senderKey(good); err != nil {
			t.Fatalf("good key: %v", err)
		}
		if _, err := senderKey(strings.ToUpper(good)); err == nil {
			t.Fatal("upper-case spelling accepted")
		}
		if _, err := senderKey(strings.Repeat("00", 32)); err == nil {
			t.Fatal("small-order key accepted")
		}
	}
}
