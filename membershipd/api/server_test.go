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

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/api"
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
}

func newFixture(t *testing.T, users ...*identity.Identity) *fixture {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kv.EnsureAll(ctx, js, 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	known := map[string]store.User{}
	for _, u := range users {
		known[u.SignPub()] = store.User{SignPub: u.SignPub(), Handle: "h", Role: identity.RoleMember, Status: store.StatusActive}
	}
	f := &fixture{t: t, js: js}
	s := api.New(api.Deps{
		Node: "n1", Cluster: "c1", JS: js, Replicas: 1,
		Gate:   func() (bool, string) { return true, "" },
		Lookup: func(p string) (store.User, bool) { u, ok := known[p]; return u, ok },
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
