package kv

import (
	"encoding/json"
	"testing"

	"github.com/unibus/clusterkit/membershipd/store"
)

// decodeUser never panics, and what it accepts is a user stored under its
// own key with a known status.
func FuzzDecodeUser(f *testing.F) {
	key := "07a1e8ba1d9b8f0c3f1a4b2e6d9c0f1e2a3b4c5d6e7f8091a2b3c4d5e6f70819"
	ok, _ := json.Marshal(store.User{SignPub: key, Handle: "alice", Role: "member", Status: store.StatusActive})
	f.Add(key, ok)
	f.Add(key, []byte(`{"sign_pub":"x","status":"active"}`))
	f.Add("", []byte(`null`))
	f.Add(key, []byte(`{`))
	f.Fuzz(func(t *testing.T, key string, val []byte) {
		u, err := decodeUser(key, val)
		if err != nil {
			return
		}
		if u.SignPub != key {
			t.Fatalf("user %q decoded under key %q", u.SignPub, key)
		}
		if u.Status != store.StatusActive && u.Status != store.StatusRevoked {
			t.Fatalf("status %q accepted", u.Status)
		}
	})
}
