package probe

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// tlsServer starts an HTTPS test server.
func tlsServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// caFile writes the servers' (self-signed) certificates as a CA file.
func caFile(t *testing.T, srvs ...*httptest.Server) string {
	t.Helper()
	var data []byte
	for _, s := range srvs {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})...)
	}
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// deadURL is an https URL nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "https://" + addr
}

func newID(t *testing.T) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type seen struct {
	mu    sync.Mutex
	reqs  []string
	nonce map[string]bool
}

func TestAPIFailoverAndSigning(t *testing.T) {
	id := newID(t)
	s := &seen{nonce: map[string]bool{}}
	var fail503 bool
	var idemKeys []string // of POSTs, as received by either node
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == api.PathCluster {
			_ = json.NewEncoder(w).Encode(api.ClusterInfo{Cluster: "c1"})
			return
		}
		body, _ := io.ReadAll(r.Body)
		sr, err := identity.VerifyRequest(r, body)
		if err == nil && sr.Cluster != "c1" {
			err = errors.New("wrong cluster")
		}
		if r.Method == http.MethodPost {
			s.mu.Lock()
			idemKeys = append(idemKeys, sr.IdempotencyKey)
			s.mu.Unlock()
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Method+" "+r.URL.Path)
		dupNonce := s.nonce[sr.Nonce]
		s.nonce[sr.Nonce] = true
		fail := fail503
		s.mu.Unlock()
		switch {
		case err != nil || sr.SignPub != id.SignPub() || dupNonce:
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(api.Error{Error: "bad signature"})
		case fail:
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(api.Error{Error: "no quorum"})
		case r.Method == http.MethodPost && r.URL.Path == api.PathRooms:
			var req api.CreateRoomRequest
			if json.Unmarshal(body, &req) != nil || req.Name == "" {
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(api.Error{Error: "bad room"})
				return
			}
			if req.Name == "taken" {
				w.WriteHeader(http.StatusConflict)
				_ = json.NewEncoder(w).Encode(api.Error{Error: "room exists"})
				return
			}
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(api.Room{ID: "0123456789abcdef", Name: req.Name, Creator: sr.SignPub})
		case r.Method == http.MethodGet && r.URL.Path == api.PathRooms:
			_, _ = w.Write([]byte(`{"rooms":[{"id":"0123456789abcdef","name":"a"}]}`))
		case r.Method == http.MethodGet && r.URL.Path == "/v1/rooms/0123456789abcdef/key":
			_ = json.NewEncoder(w).Encode(api.RoomKey{Room: "0123456789abcdef", WrappedKey: "w"})
		case r.Method == http.MethodPost && r.URL.Path == "/v1/rooms/0123456789abcdef/members":
			var req api.AddMemberRequest
			_ = json.Unmarshal(body, &req)
			if req.SignPub == "" || req.WrappedKey == "" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == api.PathMe:
			_ = json.NewEncoder(w).Encode(api.Me{SignPub: sr.SignPub, Handle: "h"})
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte("not here"))
		}
	})
	srv := tlsServer(t, h)
	// A dead node and a node answering 503 come first.
	srv503 := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			s.mu.Lock()
			idemKeys = append(idemKeys, r.Header.Get(identity.HeaderIdempotencyKey))
			s.mu.Unlock()
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(api.Error{Error: "no quorum"})
	}))
	a, err := NewAPI([]string{deadURL(t), srv503.URL, srv.URL + "/"}, caFile(t, srv, srv503), id)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	room, err := a.CreateRoom(ctx, identity.NewIdempotencyKey(), api.CreateRoomRequest{Name: "r1", WrappedKey: "wrapped"})
	if err != nil {
		t.Fatal(err)
	}
	if room.ID != "0123456789abcdef" || room.Name != "r1" || room.Creator != id.SignPub() {
		t.Fatalf("room %+v", room)
	}
	// The next call starts at the URL that answered.
	rooms, err := a.Rooms(ctx)
	if err != nil || len(rooms) != 1 || rooms[0].Name != "a" {
		t.Fatalf("rooms %+v %v", rooms, err)
	}
	rk, err := a.RoomKey(ctx, "0123456789abcdef")
	if err != nil || rk.WrappedKey != "w" {
		t.Fatalf("room key %+v %v", rk, err)
	}
	key, _ := e2e.NewRoomKey()
	if err := a.AddMember(ctx, "0123456789abcdef", newID(t).SignPub(), key); err != nil {
		t.Fatal(err)
	}
	me, err := a.Me(ctx)
	if err != nil || me.SignPub != id.SignPub() {
		t.Fatalf("me %+v %v", me, err)
	}
	s.mu.Lock()
	if len(s.reqs) != 5 {
		t.Errorf("the good server saw %v: want each call once (failover sticks to the URL that answered)", s.reqs)
	}
	// The create failed over from the 503 node: both attempts carry one
	// idempotency key, so the server returns the first result.
	if len(idemKeys) < 2 || idemKeys[0] == "" || idemKeys[0] != idemKeys[1] {
		t.Errorf("idempotency keys of the create's attempts: %q, want one key reused", idemKeys)
	}
	s.mu.Unlock()

	// 4xx: no failover, the code and the server's message.
	_, err = a.CreateRoom(ctx, identity.NewIdempotencyKey(), api.CreateRoomRequest{Name: "taken", WrappedKey: "w"})
	var he *HTTPError
	if !errors.As(err, &he) || he.Code != http.StatusConflict || he.Msg != "room exists" {
		t.Fatalf("err = %v, want *HTTPError 409 room exists", err)
	}
	_, err = a.Room(ctx, "nope")
	if !errors.As(err, &he) || he.Code != http.StatusNotFound || he.Msg != "not here" {
		t.Fatalf("err = %v, want *HTTPError 404 not here", err)
	}

	// Every node failing: the error names each, 5xx included.
	s.mu.Lock()
	fail503 = true
	s.mu.Unlock()
	_, err = a.Me(ctx)
	if err == nil || !strings.Contains(err.Error(), "no quorum") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
	if !errors.As(err, &he) || he.Code != http.StatusServiceUnavailable {
		t.Fatalf("err = %v: want an *HTTPError 503 inside", err)
	}
}

func TestAPIRefusesUnverifiedTLS(t *testing.T) {
	srv := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{}`))
	}))
	// A CA that did not sign the server's certificate.
	other, err := pki.NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wrongCA := filepath.Join(t.TempDir(), "wrong.crt")
	if err := os.WriteFile(wrongCA, other.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := NewAPI([]string{srv.URL}, wrongCA, newID(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Me(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err = %v, want a certificate error", err)
	}
}

func TestNewAPIBadInput(t *testing.T) {
	ca := caFile(t, tlsServer(t, http.NotFoundHandler()))
	id := newID(t)
	for _, c := range []struct {
		urls []string
		ca   string
		id   *identity.Identity
	}{
		{nil, ca, id},
		{[]string{"http://127.0.0.1:8470"}, ca, id},
		{[]string{"https://127.0.0.1:8470/v1"}, ca, id},
		{[]string{"https://"}, ca, id},
		{[]string{"https://127.0.0.1:8470"}, "", id},
		{[]string{"https://127.0.0.1:8470"}, filepath.Join(t.TempDir(), "missing"), id},
		{[]string{"https://127.0.0.1:8470"}, ca, nil},
	} {
		if _, err := NewAPI(c.urls, c.ca, c.id); err == nil {
			t.Errorf("NewAPI(%v, %q, %v) accepted", c.urls, c.ca, c.id)
		}
	}
}

func TestDecodeRooms(t *testing.T) {
	for _, in := range []string{`[{"id":"a","name":"x"}]`, ` {"rooms":[{"id":"a","name":"x"}]}`} {
		rooms, err := decodeRooms(json.RawMessage(in))
		if err != nil || len(rooms) != 1 || rooms[0].ID != "a" {
			t.Errorf("decodeRooms(%s) = %+v, %v", in, rooms, err)
		}
	}
	if _, err := decodeRooms(json.RawMessage(`"x"`)); err == nil {
		t.Error("a string decoded as rooms")
	}
}

// TestNewRoomRequest: the create request commits to the key for the
// room id that the server will derive, and grants it to the creator.
func TestNewRoomRequest(t *testing.T) {
	me := newID(t)
	idem, req, key, err := NewRoomRequest(me, "clientcheck-00112233")
	if err != nil {
		t.Fatal(err)
	}
	id := e2e.RoomID(me.SignPub(), idem)
	room := api.Room{ID: id, Creator: me.SignPub(), IDSalt: idem, KeyFingerprint: req.KeyFingerprint, CommitSig: req.CommitSig,
		MemberRows: []api.Member{{SignPub: me.SignPub(), AddedBy: me.SignPub(), WrappedKey: req.WrappedKey, KeySig: req.KeySig}}}
	mine := api.RoomKey{Room: id, WrappedKey: req.WrappedKey, AddedBy: me.SignPub(), KeySig: req.KeySig}
	got, err := e2e.OpenRoomKey(room.Commit(), room.Grants(), nil, mine.Grant(me.SignPub()), me)
	if err != nil || string(got) != string(key) {
		t.Fatalf("open: %v", err)
	}
	// Another identity cannot use it, and another salt is another room.
	if _, err := e2e.OpenRoomKey(room.Commit(), room.Grants(), nil, mine.Grant(me.SignPub()), newID(t)); err == nil {
		t.Fatal("opened by another identity")
	}
	room.IDSalt = identity.NewIdempotencyKey()
	if _, err := e2e.OpenRoomKey(room.Commit(), room.Grants(), nil, mine.Grant(me.SignPub()), me); err == nil {
		t.Fatal("opened with another salt")
	}
}

// TestConsumerViaStartsElsewhere: a reset attempt that skips the preferred
// node asks the next one first, so the reader's next attempt after one
// that timed out does not queue up behind the same hung node; and a node
// that hangs costs one try, then the next node is asked.
func TestConsumerViaStartsElsewhere(t *testing.T) {
	id := newID(t)
	release := make(chan struct{})
	var mu sync.Mutex
	asked := map[string]int{}
	node := func(name string, hang bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == api.PathCluster {
				_ = json.NewEncoder(w).Encode(api.ClusterInfo{Cluster: "c1"})
				return
			}
			mu.Lock()
			asked[name]++
			mu.Unlock()
			if hang {
				<-release // a request waiting out a bucket election
			}
			_ = json.NewEncoder(w).Encode(api.RoomConsumer{Room: "0123456789abcdef", Consumer: "u_x", DeliverFromSeq: 7})
		})
	}
	slow, fast := tlsServer(t, node("slow", true)), tlsServer(t, node("fast", false))
	t.Cleanup(func() { close(release) })
	a, err := NewAPI([]string{slow.URL, fast.URL}, caFile(t, slow, fast), id)
	if err != nil {
		t.Fatal(err)
	}
	a.SetCluster("c1")
	rc, err := a.ConsumerVia(context.Background(), "0123456789abcdef", api.ConsumerRequest{DeliverFromSeq: 7}, 1, 0)
	if err != nil || rc.Consumer != "u_x" {
		t.Fatalf("ConsumerVia skip 1: %+v, %v", rc, err)
	}
	mu.Lock()
	if asked["slow"] != 0 || asked["fast"] != 1 {
		t.Errorf("asked %v; want only the node after the preferred one", asked)
	}
	mu.Unlock()
	// Starting at the node that hangs: its try runs out and the next one
	// answers.
	a.prefer(0)
	rc, err = a.ConsumerVia(context.Background(), "0123456789abcdef", api.ConsumerRequest{DeliverFromSeq: 7}, 0, 50*time.Millisecond)
	if err != nil || rc.Consumer != "u_x" {
		t.Fatalf("ConsumerVia past a hung node: %+v, %v", rc, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked["slow"] != 1 || asked["fast"] != 2 {
		t.Errorf("asked %v; want the hung node once, then the next one", asked)
	}
}
