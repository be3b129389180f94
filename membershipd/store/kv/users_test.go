package kv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos/natstest"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/storetest"
)

// startJS starts a single-node JetStream server in a temp dir and creates
// the users bucket the way the daemon does (AllowDirect off).
func startJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, _, js := natstest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, StreamConfig(Buckets[0], 1)); err != nil {
		t.Fatal(err)
	}
	return js
}

func bucket(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), usersBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestUsersBucketIsAControlPlaneBucket(t *testing.T) {
	if Buckets[0].Name != usersBucket {
		t.Fatalf("Buckets[0] is %q, users bucket is %q", Buckets[0].Name, usersBucket)
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Users {
		return NewUsers(startJS(t))
	})
}

func TestStoredValueIsUserJSON(t *testing.T) {
	js := startJS(t)
	u := NewUsers(js)
	id, _ := identity.Generate()
	added, err := u.AddUser(context.Background(), store.User{SignPub: id.SignPub(), Handle: "alice", Role: identity.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	e, err := bucket(t, js).Get(context.Background(), id.SignPub())
	if err != nil {
		t.Fatal(err)
	}
	var got store.User
	if err := json.Unmarshal(e.Value(), &got); err != nil {
		t.Fatal(err)
	}
	if got.SignPub != added.SignPub || got.Handle != "alice" || got.Role != identity.RoleAdmin || got.Status != store.StatusActive || !got.AddedAt.Equal(added.AddedAt) {
		t.Fatalf("stored %s", e.Value())
	}
}

// A Create whose ack is lost is retried; the retry finds "key exists" for
// our own write and must report success, not "already registered".
func TestAddAfterLostAck(t *testing.T) {
	js := startJS(t)
	u := NewUsers(js)
	calls := 0
	u.create = func(ctx context.Context, kv jetstream.KeyValue, key string, value []byte) (uint64, error) {
		calls++
		rev, err := kv.Create(ctx, key, value)
		if calls == 1 && err == nil {
			return 0, context.DeadlineExceeded // applied, but the reply "was lost"
		}
		return rev, err
	}
	id, _ := identity.Generate()
	got, err := u.AddUser(context.Background(), store.User{SignPub: id.SignPub(), Handle: "bob", Role: identity.RoleMember})
	if err != nil {
		t.Fatalf("AddUser after lost ack: %v", err)
	}
	if calls != 2 {
		t.Fatalf("create called %d times, want 2", calls)
	}
	stored, err := u.GetUser(context.Background(), id.SignPub())
	if err != nil || stored.Handle != "bob" || !stored.AddedAt.Equal(got.AddedAt) {
		t.Fatalf("stored %+v, %v", stored, err)
	}
}

// If the write that timed out was not ours — someone else registered the key
// meanwhile — the retry's "key exists" is a real conflict.
func TestAddAfterTimeoutWithForeignWrite(t *testing.T) {
	js := startJS(t)
	u := NewUsers(js)
	other := NewUsers(js)
	id, _ := identity.Generate()
	calls := 0
	var foreign store.User
	u.create = func(ctx context.Context, kv jetstream.KeyValue, key string, value []byte) (uint64, error) {
		calls++
		if calls == 1 {
			var err error
			// Same handle and role, different AddedAt: still not our write.
			foreign, err = other.AddUser(ctx, store.User{SignPub: key, Handle: "bob", Role: identity.RoleMember, AddedAt: time.Now().Add(-time.Hour)})
			if err != nil {
				t.Error(err)
			}
			return 0, context.DeadlineExceeded
		}
		return kv.Create(ctx, key, value)
	}
	_, err := u.AddUser(context.Background(), store.User{SignPub: id.SignPub(), Handle: "bob", Role: identity.RoleMember})
	if !errors.Is(err, store.ErrAlreadyRegistered) {
		t.Fatalf("err = %v, want ErrAlreadyRegistered", err)
	}
	stored, _ := u.GetUser(context.Background(), id.SignPub())
	if !stored.AddedAt.Equal(foreign.AddedAt) {
		t.Fatal("foreign write was replaced")
	}
}

func TestGiveUpRespectsContext(t *testing.T) {
	js := startJS(t)
	u := NewUsers(js)
	u.create = func(ctx context.Context, kv jetstream.KeyValue, key string, value []byte) (uint64, error) {
		return 0, nats.ErrTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	id, _ := identity.Generate()
	start := time.Now()
	_, err := u.AddUser(ctx, store.User{SignPub: id.SignPub(), Handle: "x", Role: identity.RoleMember})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("gave up after %v", time.Since(start))
	}
}

type watchLog struct {
	mu    sync.Mutex
	users []store.User
	ready int
}

func (w *watchLog) add(u store.User) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.users = append(w.users, u)
}

func (w *watchLog) snapshot() ([]store.User, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.users), w.ready
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatch(t *testing.T) {
	js := startJS(t)
	u := NewUsers(js)
	ctx := context.Background()
	a, _ := identity.Generate()
	b, _ := identity.Generate()
	if _, err := u.AddUser(ctx, store.User{SignPub: a.SignPub(), Handle: "alice", Role: identity.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddUser(ctx, store.User{SignPub: b.SignPub(), Handle: "bob", Role: identity.RoleMember}); err != nil {
		t.Fatal(err)
	}

	var log watchLog
	var readyAt int // users seen when ready fired
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- u.Watch(wctx, log.add, func() {
			log.mu.Lock()
			log.ready++
			readyAt = len(log.users)
			log.mu.Unlock()
		})
	}()
	waitFor(t, "ready", func() bool { _, r := log.snapshot(); return r == 1 })
	if users, _ := log.snapshot(); len(users) != 2 || readyAt != 2 {
		t.Fatalf("initial values: %d users, ready after %d", len(users), readyAt)
	}

	// An update arrives.
	if _, err := u.RevokeUser(ctx, b.SignPub()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "revocation", func() bool {
		users, _ := log.snapshot()
		last := users[len(users)-1]
		return len(users) == 3 && last.SignPub == b.SignPub() && last.Status == store.StatusRevoked && last.RevokedAt != nil
	})
	// A new user arrives.
	c, _ := identity.Generate()
	if _, err := u.AddUser(ctx, store.User{SignPub: c.SignPub(), Handle: "carol", Role: identity.RoleMember}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new user", func() bool {
		users, _ := log.snapshot()
		return len(users) == 4 && users[3].SignPub == c.SignPub() && users[3].Status == store.StatusActive
	})
	// A deleted record fails closed: reported as revoked.
	if err := bucket(t, js).Delete(ctx, a.SignPub()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delete as revoked", func() bool {
		users, _ := log.snapshot()
		return len(users) == 5 && users[4].SignPub == a.SignPub() && users[4].Status == store.StatusRevoked
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch returned %v after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
	if _, r := log.snapshot(); r != 1 {
		t.Fatalf("ready fired %d times", r)
	}
}

func TestWatchEmptyBucketIsReady(t *testing.T) {
	u := NewUsers(startJS(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readyc := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- u.Watch(ctx, func(store.User) { t.Error("user in an empty bucket") }, func() { close(readyc) })
	}()
	select {
	case <-readyc:
	case err := <-done:
		t.Fatalf("Watch returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("ready never fired")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWatchMissingBucket(t *testing.T) {
	js := startJS(t)
	if err := js.DeleteStream(context.Background(), StreamName(usersBucket)); err != nil {
		t.Fatal(err)
	}
	err := NewUsers(js).Watch(context.Background(), func(store.User) {}, nil)
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("err = %v, want ErrBucketNotFound", err)
	}
	_, err = NewUsers(js).ListUsers(context.Background())
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("list err = %v, want ErrBucketNotFound", err)
	}
}

// The allowlist's freshness check compares applied revisions with the
// leader's last sequence: they must meet once the watch caught up.
func TestWatchRevisionsMeetLeaderLastSeq(t *testing.T) {
	js := startJS(t)
	u := NewUsers(js)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, h := range []string{"a", "b", "c"} {
		id, _ := identity.Generate()
		if _, err := u.AddUser(ctx, store.User{SignPub: id.SignPub(), Handle: h, Role: identity.RoleMember}); err != nil {
			t.Fatal(err)
		}
		if h == "b" {
			if _, err := u.RevokeUser(ctx, id.SignPub()); err != nil {
				t.Fatal(err)
			}
		}
	}
	var mu sync.Mutex
	var applied uint64
	go func() {
		_ = u.WatchRevisions(ctx, func(_ store.User, rev uint64, _ bool) {
			mu.Lock()
			applied = max(applied, rev)
			mu.Unlock()
		}, nil)
	}()
	last, _, err := LeaderLastSeq(ctx, js)
	if err != nil || last != 4 {
		t.Fatalf("LeaderLastSeq = %d, %v; want 4", last, err)
	}
	waitFor(t, "applied reaches the last sequence", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return applied == last
	})
}

func TestEnsureHeartbeats(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	o, err := EnsureHeartbeats(ctx, js, 1)
	if err != nil || !o.Created || o.Replicas != 1 {
		t.Fatalf("first ensure = %+v, %v", o, err)
	}
	if o, err = EnsureHeartbeats(ctx, js, 1); err != nil || o.Created {
		t.Fatalf("second ensure = %+v, %v", o, err)
	}
	if _, err := js.Publish(ctx, HeartbeatSubject("n1"), []byte("x")); err != nil {
		t.Fatalf("heartbeat put: %v", err)
	}
	// A cluster of 3 cannot be proven by this R1 bucket; raising it needs
	// peers a standalone server does not have, so the ensure fails.
	if _, err := EnsureHeartbeats(ctx, js, 3); err == nil {
		t.Fatal("R1 heartbeat bucket accepted for a cluster of 3")
	}
}

// LeaderNext walks the users stream from the leader, deletes included (as
// revoked users), and says when there is nothing further.
func TestLeaderNext(t *testing.T) {
	js := startJS(t)
	u := NewUsers(js)
	ctx := context.Background()
	a, _ := identity.Generate()
	b, _ := identity.Generate()
	for _, id := range []*identity.Identity{a, b} {
		if _, err := u.AddUser(ctx, store.User{SignPub: id.SignPub(), Handle: "h", Role: identity.RoleMember}); err != nil {
			t.Fatal(err)
		}
	}
	if err := bucket(t, js).Delete(ctx, a.SignPub()); err != nil {
		t.Fatal(err)
	}
	var got []string
	seq := uint64(1)
	for {
		usr, rev, found, err := LeaderNext(ctx, js.Conn(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			break
		}
		got = append(got, fmt.Sprintf("%d:%s:%s", rev, usr.SignPub[:6], usr.Status))
		seq = rev + 1
	}
	want := []string{
		"1:" + a.SignPub()[:6] + ":" + string(store.StatusActive),
		"2:" + b.SignPub()[:6] + ":" + string(store.StatusActive),
		"3:" + a.SignPub()[:6] + ":" + string(store.StatusRevoked),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("walk = %v, want %v", got, want)
	}
}
