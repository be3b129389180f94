// Package storetest is the conformance suite every store.Users
// implementation runs, so SQLite and KV behave the same for the CLI.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
)

// Run runs the suite. open must return an empty store; Run closes it.
func Run(t *testing.T, open func(t *testing.T) store.Users) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Users)
	}{
		{"AddGetList", testAddGetList},
		{"ReAddActiveKeepsRole", testReAddActive},
		{"RevokeKeepsRow", testRevokeKeepsRow},
		{"RevokeThenAddReplaces", testRevokeThenAdd},
		{"Unknown", testUnknown},
		{"InvalidInputs", testInvalid},
		{"ConcurrentAdd", testConcurrentAdd},
		{"ConcurrentReAddOfRevoked", testConcurrentReAddRevoked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newKey(t *testing.T) string {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id.SignPub()
}

func mustAdd(t *testing.T, s store.Users, u store.User) store.User {
	t.Helper()
	got, err := s.AddUser(ctxT(t), u)
	if err != nil {
		t.Fatalf("AddUser(%s): %v", u.Handle, err)
	}
	return got
}

func mustGet(t *testing.T, s store.Users, key string) store.User {
	t.Helper()
	got, err := s.GetUser(ctxT(t), key)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	return got
}

func mustList(t *testing.T, s store.Users) []store.User {
	t.Helper()
	got, err := s.ListUsers(ctxT(t))
	if err != nil {
		t.Fatalf("ListUsers: %v", err)
	}
	return got
}

// equalUser compares with time.Equal: stores may hand back another location.
func equalUser(a, b store.User) bool {
	if a.SignPub != b.SignPub || a.Handle != b.Handle || a.Role != b.Role || a.Status != b.Status || !a.AddedAt.Equal(b.AddedAt) {
		return false
	}
	if (a.RevokedAt == nil) != (b.RevokedAt == nil) {
		return false
	}
	return a.RevokedAt == nil || a.RevokedAt.Equal(*b.RevokedAt)
}

func fmtUser(u store.User) string {
	r := "nil"
	if u.RevokedAt != nil {
		r = u.RevokedAt.String()
	}
	return fmt.Sprintf("{%s %s %s %s added=%s revoked=%s}", u.SignPub, u.Handle, u.Role, u.Status, u.AddedAt, r)
}

func wantEqual(t *testing.T, what string, got, want store.User) {
	t.Helper()
	if !equalUser(got, want) {
		t.Fatalf("%s:\n got %s\nwant %s", what, fmtUser(got), fmtUser(want))
	}
}

func testAddGetList(t *testing.T, s store.Users) {
	if got := mustList(t, s); len(got) != 0 {
		t.Fatalf("new store lists %d users", len(got))
	}
	before := time.Now()
	bobKey := newKey(t)
	// Upper-case input is stored canonical (lower-case); Status and
	// RevokedAt from the caller are ignored.
	revoked := time.Now()
	bob := mustAdd(t, s, store.User{SignPub: strings.ToUpper(bobKey), Handle: "bob", Role: identity.RoleMember, Status: store.StatusRevoked, RevokedAt: &revoked})
	if bob.SignPub != bobKey || bob.Status != store.StatusActive || bob.RevokedAt != nil || bob.Role != identity.RoleMember {
		t.Fatalf("AddUser returned %s", fmtUser(bob))
	}
	if bob.AddedAt.Before(before.Add(-time.Second)) || bob.AddedAt.After(time.Now().Add(time.Second)) {
		t.Fatalf("AddedAt %s not set to now", bob.AddedAt)
	}
	added := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	alice := mustAdd(t, s, store.User{SignPub: newKey(t), Handle: "alice", Role: identity.RoleAdmin, AddedAt: added})
	if !alice.AddedAt.Equal(added) {
		t.Fatalf("explicit AddedAt %s became %s", added, alice.AddedAt)
	}
	// Same handle, different key: handles are labels, keys are identity.
	bob2 := mustAdd(t, s, store.User{SignPub: newKey(t), Handle: "bob", Role: identity.RoleMember})

	wantEqual(t, "get bob", mustGet(t, s, bobKey), bob)
	wantEqual(t, "get bob (upper-case key)", mustGet(t, s, strings.ToUpper(bobKey)), bob)
	wantEqual(t, "get alice", mustGet(t, s, alice.SignPub), alice)

	want := []store.User{alice, bob, bob2}
	store.SortUsers(want)
	got := mustList(t, s)
	if len(got) != len(want) {
		t.Fatalf("list has %d users, want %d", len(got), len(want))
	}
	for i := range want {
		wantEqual(t, fmt.Sprintf("list[%d]", i), got[i], want[i])
	}
}

func testReAddActive(t *testing.T, s store.Users) {
	key := newKey(t)
	orig := mustAdd(t, s, store.User{SignPub: key, Handle: "carol", Role: identity.RoleMember})
	_, err := s.AddUser(ctxT(t), store.User{SignPub: key, Handle: "mallory", Role: identity.RoleAdmin})
	if !errors.Is(err, store.ErrAlreadyRegistered) {
		t.Fatalf("re-add err = %v, want ErrAlreadyRegistered", err)
	}
	if !strings.Contains(err.Error(), key) {
		t.Fatalf("error %q does not name the key", err)
	}
	// Even an identical re-add is refused: AddUser is not an upsert.
	if _, err := s.AddUser(ctxT(t), store.User{SignPub: key, Handle: "carol", Role: identity.RoleMember}); !errors.Is(err, store.ErrAlreadyRegistered) {
		t.Fatalf("identical re-add err = %v", err)
	}
	wantEqual(t, "after re-add", mustGet(t, s, key), orig)
	if got := mustList(t, s); len(got) != 1 {
		t.Fatalf("list has %d users", len(got))
	}
}

func testRevokeKeepsRow(t *testing.T, s store.Users) {
	key := newKey(t)
	u := mustAdd(t, s, store.User{SignPub: key, Handle: "dave", Role: identity.RoleAdmin})
	before := time.Now()
	r, err := s.RevokeUser(ctxT(t), strings.ToUpper(key))
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != store.StatusRevoked || r.RevokedAt == nil || r.RevokedAt.Before(before.Add(-time.Second)) {
		t.Fatalf("revoked user %s", fmtUser(r))
	}
	if r.Handle != u.Handle || r.Role != u.Role || !r.AddedAt.Equal(u.AddedAt) || r.SignPub != key {
		t.Fatalf("revoke changed more than status: %s", fmtUser(r))
	}
	wantEqual(t, "get after revoke", mustGet(t, s, key), r)
	list := mustList(t, s)
	if len(list) != 1 {
		t.Fatalf("list has %d users after revoke", len(list))
	}
	wantEqual(t, "list after revoke", list[0], r)

	// Revoking again changes nothing, RevokedAt included.
	r2, err := s.RevokeUser(ctxT(t), key)
	if err != nil {
		t.Fatal(err)
	}
	wantEqual(t, "second revoke", r2, r)
	wantEqual(t, "get after second revoke", mustGet(t, s, key), r)
}

func testRevokeThenAdd(t *testing.T, s store.Users) {
	key := newKey(t)
	mustAdd(t, s, store.User{SignPub: key, Handle: "erin", Role: identity.RoleMember})
	if _, err := s.RevokeUser(ctxT(t), key); err != nil {
		t.Fatal(err)
	}
	n := mustAdd(t, s, store.User{SignPub: key, Handle: "erin2", Role: identity.RoleAdmin})
	if n.Status != store.StatusActive || n.RevokedAt != nil || n.Role != identity.RoleAdmin || n.Handle != "erin2" {
		t.Fatalf("replacement %s", fmtUser(n))
	}
	wantEqual(t, "get replacement", mustGet(t, s, key), n)
	list := mustList(t, s)
	if len(list) != 1 {
		t.Fatalf("list has %d users", len(list))
	}
	wantEqual(t, "list replacement", list[0], n)
	// And the replacement is as protected as any active user.
	if _, err := s.AddUser(ctxT(t), store.User{SignPub: key, Handle: "erin3", Role: identity.RoleMember}); !errors.Is(err, store.ErrAlreadyRegistered) {
		t.Fatalf("re-add of replacement err = %v", err)
	}
}

func testUnknown(t *testing.T, s store.Users) {
	key := newKey(t)
	if _, err := s.RevokeUser(ctxT(t), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke unknown err = %v", err)
	}
	if _, err := s.GetUser(ctxT(t), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get unknown err = %v", err)
	}
	if got := mustList(t, s); len(got) != 0 {
		t.Fatalf("revoke of unknown key wrote %d users", len(got))
	}
}

func testInvalid(t *testing.T, s store.Users) {
	good := newKey(t)
	offCurve := "02" + strings.Repeat("0", 62)
	bad := []store.User{
		{SignPub: good[:63], Handle: "x", Role: identity.RoleMember},
		{SignPub: good + "0", Handle: "x", Role: identity.RoleMember},
		{SignPub: "zz" + good[2:], Handle: "x", Role: identity.RoleMember},
		{SignPub: offCurve, Handle: "x", Role: identity.RoleMember},
		{SignPub: good, Handle: "", Role: identity.RoleMember},
		{SignPub: good, Handle: "Upper", Role: identity.RoleMember},
		{SignPub: good, Handle: strings.Repeat("h", 33), Role: identity.RoleMember},
		{SignPub: good, Handle: "x", Role: "root"},
		{SignPub: good, Handle: "x", Role: ""},
	}
	for i, u := range bad {
		if _, err := s.AddUser(ctxT(t), u); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("bad[%d] %s: err = %v, want ErrInvalid", i, fmtUser(u), err)
		}
	}
	for _, k := range []string{"", good[:10], offCurve} {
		if _, err := s.GetUser(ctxT(t), k); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("GetUser(%q) err = %v, want ErrInvalid", k, err)
		}
		if _, err := s.RevokeUser(ctxT(t), k); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("RevokeUser(%q) err = %v, want ErrInvalid", k, err)
		}
	}
	if got := mustList(t, s); len(got) != 0 {
		t.Fatalf("invalid input wrote %d users", len(got))
	}
}

// raceAdd adds key from 8 goroutines at once, each with its own handle and
// role, and checks exactly one wins and the stored row is the winner's.
func raceAdd(t *testing.T, s store.Users, key string) {
	t.Helper()
	const n = 8
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]store.User, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			role := identity.RoleMember
			if i%2 == 1 {
				role = identity.RoleAdmin
			}
			<-start
			results[i], errs[i] = s.AddUser(ctxT(t), store.User{SignPub: key, Handle: fmt.Sprintf("racer%d", i), Role: role})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("goroutines %d and %d both added the key", winner, i)
			}
			winner = i
		case errors.Is(err, store.ErrAlreadyRegistered):
		default:
			t.Fatalf("goroutine %d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no goroutine added the key")
	}
	wantEqual(t, "stored row is the winner's", mustGet(t, s, key), results[winner])
}

func testConcurrentAdd(t *testing.T, s store.Users) {
	raceAdd(t, s, newKey(t))
}

func testConcurrentReAddRevoked(t *testing.T, s store.Users) {
	key := newKey(t)
	mustAdd(t, s, store.User{SignPub: key, Handle: "old", Role: identity.RoleMember})
	if _, err := s.RevokeUser(ctxT(t), key); err != nil {
		t.Fatal(err)
	}
	raceAdd(t, s, key)
	if got := mustList(t, s); len(got) != 1 {
		t.Fatalf("list has %d users", len(got))
	}
}
