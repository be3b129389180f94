package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/clusterkit/chaos/natstest"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// fuzzServer is the control plane on a real standalone JetStream server
// with the control-plane buckets at R1; the caller is one active member.
func fuzzServer(f *testing.F) (http.Handler, *identity.Identity) {
	f.Helper()
	_, _, js := natstest.JetStream(f, func(o *server.Options) {
		o.ServerName, o.JetStreamMaxStore, o.JetStreamMaxMemory = "fuzz", 256<<20, 16<<20
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kv.EnsureAll(ctx, js, 1, 5*time.Second); err != nil {
		f.Fatal(err)
	}
	id, err := identity.FromSeed(bytes.Repeat([]byte{4}, 32))
	if err != nil {
		f.Fatal(err)
	}
	me := store.User{SignPub: id.SignPub(), Handle: "fuzz", Role: identity.RoleMember, Status: store.StatusActive}
	srv := New(Deps{
		Node: "fuzz", JS: js, Replicas: 1, Cluster: "fuzz", MaxConsumers: DefaultMaxConsumers,
		Gate: func() (bool, string) { return true, "quorum" },
		Lookup: func(pub string) (store.User, bool) {
			if pub == me.SignPub {
				return me, true
			}
			return store.User{}, false
		},
		// Small rooms and a small quota: the fuzzer creates rooms for real.
		Limits: Limits{RoomMaxBytes: 1 << 20, RoomMaxMsgSize: 1 << 10, RoomMaxMsgs: 100, RoomQuota: 3, AdminRoomQuota: 3, RoomBudget: 64 << 20},
	})
	mux := http.NewServeMux()
	srv.Register(mux)
	return mux, id
}

// The handlers with arbitrary methods, paths, bodies and headers, signed
// or not: no panic, every answer JSON, no 5xx but 503/507, and nothing
// unsigned is ever served.
func FuzzHandlers(f *testing.F) {
	h, id := fuzzServer(f)
	f.Add(uint8(0), "/v1/rooms", []byte(`{"name":"r1","wrapped_key":"x"}`), "", "", true)
	f.Add(uint8(1), "/v1/rooms", []byte(nil), "", "", true)
	f.Add(uint8(1), "/v1/me", []byte(nil), "X-Unibus-Nonce", "00", false)
	f.Add(uint8(0), "/v1/rooms/0123456789abcdef/members", []byte(`{"sign_pub":"zz","wrapped_key":""}`), "", "", true)
	f.Add(uint8(1), "/v1/rooms/0123456789abcdef/key", []byte(nil), "Content-Length", "-1", true)
	f.Add(uint8(1), "/v1/admin/users", []byte(nil), "", "", true)
	f.Add(uint8(2), "/v1/rooms/%2e%2e/key?x=%zz", []byte(`[]`), "X-Unibus-Key", strings.Repeat("A", 64), true)
	methods := []string{"POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
	f.Fuzz(func(t *testing.T, m uint8, path string, body []byte, hk, hv string, sign bool) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		r, err := http.NewRequest(methods[int(m)%len(methods)], "https://fuzz:8470"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		if sign {
			r.Header.Set(identity.HeaderCluster, "fuzz")
			r.Header.Set(identity.HeaderIdempotencyKey, fmt.Sprintf("%032x", len(body)+int(m)))
			if err := identity.SignRequest(r, body, id, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		if hk != "" {
			r.Header.Set(hk, hv) // may well break a signature: then nothing is asserted but the shape
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		code := w.Code
		if !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			return // the mux's own 404/405: no handler ran
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s -> %d, body not JSON: %q", r.Method, path, code, w.Body.String())
		}
		if code >= 500 && code != http.StatusServiceUnavailable && code != http.StatusInsufficientStorage {
			t.Fatalf("%s %s -> %d %s", r.Method, path, code, w.Body.String())
		}
		if !sign && code < 300 && !(r.Method == "GET" && r.URL.Path == PathCluster) { // the cluster name is public
			t.Fatalf("unsigned %s %s served: %d %s", r.Method, path, code, w.Body.String())
		}
	})
}
