package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos/natstest"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// fixture is the control plane over a real (single-node) JetStream server
// with the control-plane buckets, and a hook that fails a chosen step.
type fixture struct {
	t        *testing.T
	js       jetstream.JetStream
	url      string
	failStep string // the step after which the next operation "crashes"
	// known are the allowlist's users; isMember, when set, is the node's
	// memberships (Deps.IsMember); closed closes the quorum gate.
	known    map[string]store.User
	isMember func(signPub, roomID string) bool
	closed   bool
}

func newFixture(t *testing.T, users ...*identity.Identity) *fixture {
	t.Helper()
	_, _, js := natstest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kv.EnsureAll(ctx, js, 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	known := map[string]store.User{}
	for _, u := range users {
		known[u.SignPub()] = store.User{SignPub: u.SignPub(), Handle: "h", Role: identity.RoleMember, Status: store.StatusActive}
	}
	f := &fixture{t: t, js: js, known: known}
	s := api.New(api.Deps{
		Node: "n1", Cluster: "c1", JS: js, Replicas: 1,
		Gate:   func() (bool, string) { return !f.closed, "no quorum" },
		Lookup: func(p string) (store.User, bool) { u, ok := f.known[p]; return u, ok },
		IsMember: func(p, room string) bool {
			return f.isMember != nil && f.isMember(p, room)
		},
		AfterStep: func(step string) error {
			if step == f.failStep {
				f.failStep = "" // crash once
				return errors.New("simulated crash after " + step)
			}
			return nil
		},
	})
	mux := http.NewServeMux()
	s.Register(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

// call sends one signed request (fresh nonce) for cluster with idem as its
// idempotency key.
func (f *fixture) call(id *identity.Identity, cluster, method, path string, in any, idem string) (int, []byte) {
	f.t.Helper()
	var body []byte
	if in != nil {
		body, _ = json.Marshal(in)
	}
	r, err := http.NewRequest(method, f.url+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	r.Header.Set(identity.HeaderCluster, cluster)
	if idem != "" {
		r.Header.Set(identity.HeaderIdempotencyKey, idem)
	}
	if err := identity.SignRequest(r, body, id, time.Now()); err != nil {
		f.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (f *fixture) streams() []string {
	f.t.Helper()
	var out []string
	l := f.js.StreamNames(context.Background())
	for n := range l.Name() {
		if strings.HasPrefix(n, "ROOM_") {
			out = append(out, n)
		}
	}
	return out
}

func gen(t *testing.T) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestCreateRoomCrashPoints: a create that fails after each of its steps
// completes on a retry with the same idempotency key: one room, one
// stream, the creator a full member with its key.
func TestCreateRoomCrashPoints(t *testing.T) {
	alice := gen(t)
	f := newFixture(t, alice)
	for i, step := range []string{"stream", "room", "member", "key"} {
		f.failStep = step
		idem := identity.NewIdempotencyKey()
		req := api.CreateRoomRequest{Name: "r" + step, WrappedKey: "k-" + step}
		code, b := f.call(alice, "c1", "POST", api.PathRooms, req, idem)
		if code != http.StatusServiceUnavailable {
			t.Fatalf("%s: first attempt %d %s, want 503 (simulated crash)", step, code, b)
		}
		code, b = f.call(alice, "c1", "POST", api.PathRooms, req, idem)
		if code != http.StatusCreated {
			t.Fatalf("%s: retry %d %s, want 201", step, code, b)
		}
		var room api.Room
		_ = json.Unmarshal(b, &room)
		code2, b2 := f.call(alice, "c1", "POST", api.PathRooms, req, idem)
		if code2 != http.StatusCreated || !bytes.Equal(b2, b) {
			t.Fatalf("%s: second retry %d %s, want the first result %s", step, code2, b2, b)
		}
		if got := len(f.streams()); got != i+1 {
			t.Fatalf("%s: %d room streams, want %d (a retry never makes a second room)", step, got, i+1)
		}
		code, b = f.call(alice, "c1", "GET", "/v1/rooms/"+room.ID+"/key", nil, "")
		if code != 200 || !strings.Contains(string(b), "k-"+step) {
			t.Fatalf("%s: creator's key %d %s", step, code, b)
		}
		code, b = f.call(alice, "c1", "GET", api.PathRooms, nil, "")
		if code != 200 || !strings.Contains(string(b), room.ID) {
			t.Fatalf("%s: room not in the creator's list (ACL index missing): %s", step, b)
		}
	}
}

// TestAddMemberCrashPoints: an add that failed after the member row or
// after the wrapped key is completed by a retry (same key, or even a new
// one: "already a member" only when all three rows exist).
func TestAddMemberCrashPoints(t *testing.T) {
	alice, bob := gen(t), gen(t)
	f := newFixture(t, alice, bob)
	var room api.Room
	add := api.AddMemberRequest{SignPub: bob.SignPub(), WrappedKey: "kb"}

	for _, tc := range []struct {
		step    string
		sameKey bool
	}{{"member", true}, {"key", false}} {
		// Each case adds bob to a room of its own.
		code, b := f.call(alice, "c1", "POST", api.PathRooms, api.CreateRoomRequest{Name: "r-" + tc.step, WrappedKey: "ka"}, identity.NewIdempotencyKey())
		if code != 201 {
			t.Fatalf("create %d %s", code, b)
		}
		_ = json.Unmarshal(b, &room)
		members := "/v1/rooms/" + room.ID + "/members"
		f.failStep = tc.step
		idem := identity.NewIdempotencyKey()
		if code, b := f.call(alice, "c1", "POST", members, add, idem); code != 503 {
			t.Fatalf("%s: first attempt %d %s, want 503", tc.step, code, b)
		}
		// Half done: bob is a member row but has no key or no ACL.
		if code, _ := f.call(bob, "c1", "GET", "/v1/rooms/"+room.ID+"/key", nil, ""); code == 200 && tc.step == "member" {
			t.Fatalf("%s: bob has a key after a crash before it was written", tc.step)
		}
		retryKey := idem
		if !tc.sameKey {
			retryKey = identity.NewIdempotencyKey() // a client that lost its key
		}
		if code, b := f.call(alice, "c1", "POST", members, add, retryKey); code != 201 {
			t.Fatalf("%s: retry %d %s, want 201 (complete the membership, not 409)", tc.step, code, b)
		}
		if code, b := f.call(bob, "c1", "GET", "/v1/rooms/"+room.ID+"/key", nil, ""); code != 200 || !strings.Contains(string(b), "kb") {
			t.Fatalf("%s: bob's key %d %s", tc.step, code, b)
		}
		if code, b := f.call(bob, "c1", "GET", api.PathRooms, nil, ""); code != 200 || !strings.Contains(string(b), room.ID) {
			t.Fatalf("%s: room not in bob's list (ACL index missing): %d %s", tc.step, code, b)
		}
		if code, b := f.call(alice, "c1", "POST", members, add, identity.NewIdempotencyKey()); code != 409 {
			t.Fatalf("%s: a new add of a complete member %d %s, want 409", tc.step, code, b)
		}
	}
}

// TestMissingKeyIs404: a member whose wrapped key row is gone gets 404
// (retrying cannot help), not 503.
func TestMissingKeyIs404(t *testing.T) {
	alice := gen(t)
	f := newFixture(t, alice)
	code, b := f.call(alice, "c1", "POST", api.PathRooms, api.CreateRoomRequest{Name: "r", WrappedKey: "ka"}, identity.NewIdempotencyKey())
	if code != 201 {
		t.Fatalf("create %d %s", code, b)
	}
	var room api.Room
	_ = json.Unmarshal(b, &room)
	keys, err := f.js.KeyValue(context.Background(), kv.RoomKeysBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Delete(context.Background(), room.ID+"."+alice.SignPub()); err != nil {
		t.Fatal(err)
	}
	if code, b := f.call(alice, "c1", "GET", "/v1/rooms/"+room.ID+"/key", nil, ""); code != 404 {
		t.Fatalf("missing key: %d %s, want 404", code, b)
	}
}

// TestClusterBindingAndIdempotencyKey: a request signed for another
// cluster is 401; a POST without an idempotency key is 400; a key reused
// for another request is 422.
func TestClusterBindingAndIdempotencyKey(t *testing.T) {
	alice := gen(t)
	f := newFixture(t, alice)
	if code, b := f.call(alice, "c2", "GET", api.PathMe, nil, ""); code != 401 || !strings.Contains(string(b), "signed for cluster") {
		t.Fatalf("other cluster: %d %s, want 401", code, b)
	}
	if code, _ := f.call(alice, "c1", "GET", api.PathMe, nil, ""); code != 200 {
		t.Fatalf("own cluster: %d", code)
	}
	if code, b := f.call(alice, "c1", "POST", api.PathRooms, api.CreateRoomRequest{Name: "r", WrappedKey: "k"}, ""); code != 400 {
		t.Fatalf("no idempotency key: %d %s, want 400", code, b)
	}
	idem := identity.NewIdempotencyKey()
	if code, b := f.call(alice, "c1", "POST", api.PathRooms, api.CreateRoomRequest{Name: "r", WrappedKey: "k"}, idem); code != 201 {
		t.Fatalf("create: %d %s", code, b)
	}
	if code, b := f.call(alice, "c1", "POST", api.PathRooms, api.CreateRoomRequest{Name: "other", WrappedKey: "k"}, idem); code != 422 {
		t.Fatalf("key reused for another body: %d %s, want 422", code, b)
	}
	resp, err := http.Get(f.url + api.PathCluster)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ci api.ClusterInfo
	if err := json.NewDecoder(resp.Body).Decode(&ci); err != nil || ci.Cluster != "c1" {
		t.Fatalf("GET %s: %+v %v", api.PathCluster, ci, err)
	}
}

// signedRoom creates a room as creator with a signed commitment and grant,
// and adds each of members with a signed grant; it returns the room key.
func (f *fixture) signedRoom(creator *identity.Identity, name string, members ...*identity.Identity) (api.Room, []byte) {
	f.t.Helper()
	key, err := e2e.NewRoomKey()
	if err != nil {
		f.t.Fatal(err)
	}
	idem := identity.NewIdempotencyKey()
	c, err := e2e.SignCommit(creator, key, idem)
	if err != nil {
		f.t.Fatal(err)
	}
	w, _ := e2e.WrapRoomKey(key, c.Room, creator.SignPub())
	g, _ := e2e.SignGrant(creator, c.Room, creator.SignPub(), w)
	code, b := f.call(creator, "c1", "POST", api.PathRooms, api.CreateRoomRequest{
		Name: name, WrappedKey: w, KeyFingerprint: c.Fingerprint, CommitSig: c.Sig, KeySig: g.Sig}, idem)
	if code != 201 {
		f.t.Fatalf("create %d %s", code, b)
	}
	var room api.Room
	_ = json.Unmarshal(b, &room)
	if room.ID != c.Room {
		f.t.Fatalf("room id %s, want %s (e2e.RoomID)", room.ID, c.Room)
	}
	for _, m := range members {
		w, _ := e2e.WrapRoomKey(key, room.ID, m.SignPub())
		g, _ := e2e.SignGrant(creator, room.ID, m.SignPub(), w)
		if code, b := f.call(creator, "c1", "POST", "/v1/rooms/"+room.ID+"/members",
			api.AddMemberRequest{SignPub: m.SignPub(), WrappedKey: w, KeySig: g.Sig}, identity.NewIdempotencyKey()); code != 201 {
			f.t.Fatalf("add member %d %s", code, b)
		}
	}
	return room, key
}

// openKey is what a member's client does: read the room (with its member
// rows) and its own wrapped key, and check both (e2e.OpenRoomKey).
func (f *fixture) openKey(id *identity.Identity, roomID string) ([]byte, error) {
	f.t.Helper()
	var room api.Room
	var rk api.RoomKey
	if code, b := f.call(id, "c1", "GET", "/v1/rooms/"+roomID, nil, ""); code != 200 {
		f.t.Fatalf("get room %d %s", code, b)
	} else {
		_ = json.Unmarshal(b, &room)
	}
	if code, b := f.call(id, "c1", "GET", "/v1/rooms/"+roomID+"/key", nil, ""); code != 200 {
		f.t.Fatalf("get key %d %s", code, b)
	} else {
		_ = json.Unmarshal(b, &rk)
	}
	return e2e.OpenRoomKey(room.Commit(), room.Grants(), nil, rk.Grant(id.SignPub()), id)
}

// TestSubstitutedKeyRow: whoever can write UNIBUS_room_keys (here the
// server's own connection, as an operator or a compromised node would)
// replaces bob's wrapped key with one for a key they know. Bob's client
// refuses every variant; the genuine row opens.
func TestSubstitutedKeyRow(t *testing.T) {
	alice, bob, mallory := gen(t), gen(t), gen(t)
	f := newFixture(t, alice, bob, mallory)
	room, key := f.signedRoom(alice, "r", bob)
	got, err := f.openKey(bob, room.ID)
	if err != nil || string(got) != string(key) {
		t.Fatalf("genuine key: %v", err)
	}
	var rows api.Room
	if _, b := f.call(bob, "c1", "GET", "/v1/rooms/"+room.ID, nil, ""); json.Unmarshal(b, &rows) != nil || len(rows.MemberRows) != 2 {
		t.Fatalf("member rows: %s", b)
	}
	for _, m := range rows.MemberRows {
		if m.AddedBy != alice.SignPub() || m.KeySig == "" || m.WrappedKey == "" {
			t.Fatalf("member row %+v", m)
		}
	}

	ctx := context.Background()
	keys, err := f.js.KeyValue(ctx, kv.RoomKeysBucket)
	if err != nil {
		t.Fatal(err)
	}
	rooms, err := f.js.KeyValue(ctx, kv.RoomsBucket)
	if err != nil {
		t.Fatal(err)
	}
	evil, _ := e2e.NewRoomKey()
	evilWrap, _ := e2e.WrapRoomKey(evil, room.ID, bob.SignPub())
	malloryGrant, _ := e2e.SignGrant(mallory, room.ID, bob.SignPub(), evilWrap)
	row := func(v any) []byte { b, _ := json.Marshal(v); return b }
	for _, tc := range []struct {
		name, errHas string
		val          []byte
	}{
		{"bare wrapped key", "unsigned", []byte(evilWrap)},
		{"unsigned, claims alice", "unsigned", row(map[string]string{"wrapped_key": evilWrap, "added_by": alice.SignPub()})},
		{"signed by mallory, claims alice", "not signed by its adder", row(map[string]string{"wrapped_key": evilWrap, "added_by": alice.SignPub(), "key_sig": malloryGrant.Sig})},
		{"signed by mallory as herself", "not the creator", row(map[string]string{"wrapped_key": evilWrap, "added_by": mallory.SignPub(), "key_sig": malloryGrant.Sig})},
	} {
		if _, err := keys.Put(ctx, room.ID+"."+bob.SignPub(), tc.val); err != nil {
			t.Fatal(err)
		}
		_, err := f.openKey(bob, room.ID)
		if !errors.Is(err, e2e.ErrUntrustedKey) || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.errHas)
		} else {
			t.Logf("%s: refused: %v", tc.name, err)
		}
	}

	// Mallory also rewrites the room's commitment to her key: the room id
	// does not follow from her (she cannot pick the creator of a known id).
	mc, _ := e2e.SignCommit(mallory, evil, room.IDSalt)
	e, err := rooms.Get(ctx, room.ID)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	_ = json.Unmarshal(e.Value(), &rec)
	rec["creator"], rec["key_fingerprint"], rec["commit_sig"] = mallory.SignPub(), mc.Fingerprint, mc.Sig
	if _, err := rooms.Put(ctx, room.ID, row(rec)); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Put(ctx, room.ID+"."+bob.SignPub(), row(map[string]string{"wrapped_key": evilWrap, "added_by": mallory.SignPub(), "key_sig": malloryGrant.Sig})); err != nil {
		t.Fatal(err)
	}
	if _, err := f.openKey(bob, room.ID); !errors.Is(err, e2e.ErrUntrustedKey) || !strings.Contains(err.Error(), "was not made by creator") {
		t.Errorf("rewritten creator: err = %v", err)
	}
}

// TestSignedWritesChecked: the server refuses a bad signature up front.
func TestSignedWritesChecked(t *testing.T) {
	alice, bob := gen(t), gen(t)
	f := newFixture(t, alice, bob)
	key, _ := e2e.NewRoomKey()
	idem := identity.NewIdempotencyKey()
	c, _ := e2e.SignCommit(alice, key, "not-the-idempotency-key")
	w, _ := e2e.WrapRoomKey(key, c.Room, alice.SignPub())
	if code, b := f.call(alice, "c1", "POST", api.PathRooms, api.CreateRoomRequest{Name: "r", WrappedKey: w, KeyFingerprint: c.Fingerprint, CommitSig: c.Sig}, idem); code != 400 || !strings.Contains(string(b), "room commitment") {
		t.Fatalf("commit for another id: %d %s", code, b)
	}
	room, _ := f.signedRoom(alice, "r2")
	wb, _ := e2e.WrapRoomKey(key, room.ID, bob.SignPub())
	g, _ := e2e.SignGrant(bob, room.ID, bob.SignPub(), wb) // signed by bob, sent by alice
	if code, b := f.call(alice, "c1", "POST", "/v1/rooms/"+room.ID+"/members", api.AddMemberRequest{SignPub: bob.SignPub(), WrappedKey: wb, KeySig: g.Sig}, identity.NewIdempotencyKey()); code != 400 || !strings.Contains(string(b), "not signed by its adder") {
		t.Fatalf("grant signed by someone else: %d %s", code, b)
	}
}
