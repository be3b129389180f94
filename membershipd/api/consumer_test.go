package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// signedOnce signs one request and returns a function that sends it, the
// same bytes each time (a replay).
func (f *fixture) signedOnce(id *identity.Identity, method, path string, in any) func() (int, []byte) {
	f.t.Helper()
	body, _ := json.Marshal(in)
	r, err := http.NewRequest(method, f.url+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	r.Header.Set(identity.HeaderCluster, "c1")
	r.Header.Set(identity.HeaderIdempotencyKey, identity.NewIdempotencyKey())
	if err := identity.SignRequest(r, body, id, time.Now()); err != nil {
		f.t.Fatal(err)
	}
	return func() (int, []byte) {
		f.t.Helper()
		c := r.Clone(context.Background())
		c.Body = io.NopCloser(bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(c)
		if err != nil {
			f.t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
}

// dropBuckets deletes the streams behind buckets: every read or write of
// them fails, as while their raft groups elect a leader.
func (f *fixture) dropBuckets(buckets ...string) {
	f.t.Helper()
	for _, b := range buckets {
		if err := f.js.DeleteStream(context.Background(), kv.StreamName(b)); err != nil {
			f.t.Fatalf("delete %s: %v", b, err)
		}
	}
}

// TestConsumerResetWithoutBuckets: a member's consumer reset (a client's
// failover) is served from the node's memberships and nonce cache while
// the nonces, members and rooms buckets are unavailable (their leader died
// with a node); a replay to the node is refused, every other endpoint
// still fails closed, and the gate, a non-member and a revoked caller are
// refused as before.
func TestConsumerResetWithoutBuckets(t *testing.T) {
	alice, bob := gen(t), gen(t)
	f := newFixture(t, alice, bob)
	room, _ := f.signedRoom(alice, "r")
	f.isMember = func(p, id string) bool { return p == alice.SignPub() && id == room.ID }
	path := "/v1/rooms/" + room.ID + "/consumer"
	if code, b := f.call(alice, "c1", "POST", path, api.ConsumerRequest{}, identity.NewIdempotencyKey()); code != 201 {
		t.Fatalf("create consumer: %d %s", code, b)
	}
	f.dropBuckets(kv.NoncesBucket, kv.MembersBucket, kv.RoomsBucket)

	if code, b := f.call(alice, "c1", "GET", api.PathMe, nil, ""); code != 503 {
		t.Fatalf("another endpoint without the nonces bucket: %d %s, want 503", code, b)
	}
	reset := f.signedOnce(alice, "POST", path, api.ConsumerRequest{DeliverFromSeq: 1})
	code, b := reset()
	if code != 200 {
		t.Fatalf("reset without the buckets: %d %s, want 200", code, b)
	}
	var rc api.RoomConsumer
	if err := json.Unmarshal(b, &rc); err != nil || rc.Stream != api.RoomStream(room.ID) || rc.DeliverFromSeq != 1 {
		t.Fatalf("reset answer %s (%v)", b, err)
	}
	if code, b := reset(); code != 409 {
		t.Fatalf("replayed reset: %d %s, want 409", code, b)
	}
	if code, b := f.call(bob, "c1", "POST", path, api.ConsumerRequest{DeliverFromSeq: 1}, identity.NewIdempotencyKey()); code == 200 || code == 201 {
		t.Fatalf("non-member's reset: %d %s, want a refusal", code, b)
	}
	f.closed = true
	if code, b := f.call(alice, "c1", "POST", path, api.ConsumerRequest{DeliverFromSeq: 1}, identity.NewIdempotencyKey()); code != 503 {
		t.Fatalf("reset with the gate closed: %d %s, want 503", code, b)
	}
	f.closed = false
	u := f.known[alice.SignPub()]
	u.Status = store.StatusRevoked
	f.known[alice.SignPub()] = u
	if code, b := f.call(alice, "c1", "POST", path, api.ConsumerRequest{DeliverFromSeq: 1}, identity.NewIdempotencyKey()); code != 403 {
		t.Fatalf("revoked caller's reset: %d %s, want 403", code, b)
	}
}

// TestConsumerResetIdempotent: a consumer request keeps no idempotency
// record; the same key with another body runs again (it names the
// caller's own consumer and where to start it), where other endpoints
// answer 422.
func TestConsumerResetIdempotent(t *testing.T) {
	alice := gen(t)
	f := newFixture(t, alice)
	room, _ := f.signedRoom(alice, "r")
	path := "/v1/rooms/" + room.ID + "/consumer"
	idem := identity.NewIdempotencyKey()
	if code, b := f.call(alice, "c1", "POST", path, api.ConsumerRequest{}, idem); code != 201 {
		t.Fatalf("create consumer: %d %s", code, b)
	}
	time.Sleep(250 * time.Millisecond) // past the per-node reset rate limit
	code, b := f.call(alice, "c1", "POST", path, api.ConsumerRequest{DeliverFromSeq: 1}, idem)
	if code != 200 {
		t.Fatalf("same key, a reset: %d %s, want 200", code, b)
	}
}
